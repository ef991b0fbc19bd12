# -*- test-case-name: tests.test_status -*-
"""
The status file beside the pid file (C{app.pid.status}): what the serving
process is doing, written atomically at each change, read by the control
command (C{twisted-graceful status|reload|stop}).

It holds one JSON object: C{pid}, C{startTime} (the process's start time
from C{/proc/PID/stat}, which the control command checks before it signals
C{pid}), C{generation}, C{started} (epoch seconds),
C{endpoints}, C{state} (a L{twisted_graceful._states.ServerState}: C{serving}, C{upgrading},
C{handed-over}, C{draining}, C{stopped}), C{restartAttempts}, C{lastRestart}
(C{attempt}, C{outcome}: an L{twisted_graceful._states.UpgradeOutcome}, C{pending}, C{ok}, C{failed}
or C{refused}; C{reason}; C{pid} of the successor) and, once stopped, C{drain}
(C{completed}, C{aborted}, C{clean}); C{pidFileError} is the reason the pid
file could not be written (it does not name this process), else L{None}.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable

from attrs import define, field
from twisted.logger import Logger

from ._atomic import writeAtomically

_log = Logger()


def statusPathFor(pidFile: str) -> str:
    """
    The status file that goes with C{pidFile}.
    """
    return pidFile + ".status"


@define
class StatusFile:
    """
    A process's status, kept in a file.

    One descriptor is kept in reserve (on C{/dev/null}): when the process
    has run out of descriptors (C{EMFILE}, as when it cannot start its
    successor), it is released for the write, so the outcome still reaches
    the control command.
    """

    path: str
    status: dict[str, Any] = field(factory=dict)
    _write: Callable[[str, bytes], None] = writeAtomically
    _openReserve: Callable[[], int] = lambda: os.open(os.devnull, os.O_RDONLY)
    _closeReserve: Callable[[int], None] = os.close
    _reserve: int | None = field(default=None, init=False)

    def update(self, **changes: Any) -> None:
        """
        Change some fields and write the whole status atomically.  A failure
        to write is logged and otherwise ignored: the status is a report,
        not the service.
        """
        self.status.update(changes)
        data = json.dumps(self.status, sort_keys=True).encode()
        try:
            self._write(self.path, data)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE) and self._reserve is not None:
                self._closeReserve(self._reserve)
                self._reserve = None
                try:
                    self._write(self.path, data)
                except OSError as again:
                    self._failed(again)
            else:
                self._failed(e)
        if self._reserve is None:
            try:
                self._reserve = self._openReserve()
            except OSError:
                pass

    def _failed(self, error: OSError) -> None:
        _log.warn(
            "Cannot write the status file {path}: {error}",
            path=self.path,
            error=error.strerror or str(error),
            phase="status-not-written",
        )


def readStatus(path: str) -> dict[str, Any] | None:
    """
    The status in C{path}, or L{None} if it is missing or unreadable.
    """
    try:
        with open(path, "rb") as f:
            status = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
