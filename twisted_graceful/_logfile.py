# -*- test-case-name: tests.test_logfile -*-
"""
The C{twistd} log across restarts.

C{twistd}'s own log file opens the file for update and seeks to its end, so
two processes writing it during a hand-over overwrite each other's lines,
and each would rotate it on its own.  C{twistd graceful} replaces that
observer (through C{twistd --logger}) with one that opens the file in append
mode, where every line lands at the end whichever process writes it, and
marks every line with the pid of the process that wrote it.

SIGUSR1 reopens the file (L{reopen}), as C{logrotate} without
C{copytruncate} expects: rename the file, then signal the serving process;
it goes on writing to a new file of the old name.  C{copytruncate} works
too, since the file is written in append mode.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEventAsClassicLogText
from zope.interface import implementer

_target: str | None = None
_opened: list[PidTextObserver] = []

OBSERVER = "twisted_graceful._logfile.observer"


def configure(path: str | None) -> None:
    """
    Send the log to C{path} (standard output for C{None} or C{-}).
    """
    global _target
    _target = path


@implementer(ILogObserver)
class PidTextObserver:
    """
    Write events as C{twistd}'s classic text lines, each with the writer's
    pid: C{2026-11-21T13:40:14+0000 [pid 6665] [system#info] message}.
    """

    def __init__(self, outFile: IO[str], path: str | None = None) -> None:
        """
        @param path: The file C{outFile} was opened from, to reopen it by
            name; L{None} for a stream that is not reopened.
        """
        self._outFile = outFile
        self.path = path

    def reopen(self) -> None:
        """
        Open the file by its name again and write there from now on.  The
        new file is opened before the old one is closed, so a failure leaves
        the observer writing where it did.

        @raise OSError: The file cannot be opened.
        """
        if self.path is None:
            return
        old, self._outFile = self._outFile, _openAppending(self.path)
        old.close()

    def __call__(self, event: LogEvent) -> None:
        text = formatEventAsClassicLogText(event)
        if not text:
            return
        when, _, rest = text.partition(" ")
        self._outFile.write(f"{when} [pid {os.getpid()}] {rest}")
        self._outFile.flush()


def observer() -> ILogObserver:
    """
    The observer C{twistd --logger} makes: text lines with pids, appended to
    the configured file.
    """
    if _target in (None, "-"):
        return PidTextObserver(sys.stdout)
    made = PidTextObserver(_openAppending(_target), _target)
    _opened.append(made)
    return made


def _openAppending(path: str) -> IO[str]:
    return open(path, "a", buffering=1, encoding="utf-8")


def reopen() -> list[str]:
    """
    Reopen every log file L{observer} opened (after C{logrotate} renamed
    it).

    @return: The paths reopened.
    @raise OSError: A file cannot be opened; the others are reopened first.
    """
    failed: OSError | None = None
    paths = []
    for made in _opened:
        try:
            made.reopen()
        except OSError as e:
            failed = e
        else:
            paths.append(made.path or "")
    if failed is not None:
        raise failed
    return paths


def reopenAccessLog(site: Any) -> bool:
    """
    Reopen the access log of a L{twisted.web.server.Site} that writes one
    to its C{logPath} (C{--access-log}), the way the site opened it.

    @return: Whether there was a file to reopen.
    @raise OSError: The file cannot be opened; the old one is kept.
    """
    path = getattr(site, "logPath", None)
    if not path:
        return False
    try:
        old = site.logFile
    except AttributeError:
        return False  # Not started: it opens the file by name when it starts.
    site.logFile = open(path, "a", 1, newline="\n")
    old.close()
    return True
