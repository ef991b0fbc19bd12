# -*- test-case-name: tests.test_logfile -*-
"""
The C{twistd} log across restarts.

C{twistd}'s own log file opens the file for update and seeks to its end, so
two processes writing it during a hand-over overwrite each other's lines,
and each would rotate it on its own.  C{twistd graceful} replaces that
observer (through C{twistd --logger}) with one that opens the file in append
mode, where every line lands at the end whichever process writes it, and
marks every line with the pid of the process that wrote it.  Rotate the file
with C{logrotate}'s C{copytruncate}.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from twisted.logger import ILogObserver, LogEvent, formatEventAsClassicLogText
from zope.interface import implementer

_target: str | None = None

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

    def __init__(self, outFile: IO[str]) -> None:
        self._outFile = outFile

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
    return PidTextObserver(open(_target, "a", buffering=1, encoding="utf-8"))
