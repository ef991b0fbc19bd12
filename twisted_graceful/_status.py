# -*- test-case-name: tests.test_status -*-
"""
The status file beside the pid file (C{app.pid.status}): what the serving
process is doing, written atomically at each change, read by the control
command (C{twisted-graceful status|reload|stop}).

It holds one JSON object: C{pid}, C{startTime} (the process's start time
from C{/proc/PID/stat}, which the control command checks before it signals
C{pid}), C{generation}, C{started} (epoch seconds),
C{endpoints}, C{state} (C{starting}, C{serving}, C{upgrading},
C{handed-over}, C{draining}, C{stopped}), C{restartAttempts}, C{lastRestart}
(C{attempt}, C{outcome}: C{pending}, C{ok}, C{failed} or C{refused};
C{reason}; C{pid} of the successor) and, once stopped, C{drain}
(C{completed}, C{aborted}, C{clean}); C{pidFileError} is the reason the pid
file could not be written (it does not name this process), else L{None}.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field

from ._atomic import writeAtomically


def statusPathFor(pidFile: str) -> str:
    """
    The status file that goes with C{pidFile}.
    """
    return pidFile + ".status"


@define
class StatusFile:
    """
    A process's status, kept in a file.
    """

    path: str
    status: dict[str, Any] = field(factory=dict)

    def update(self, **changes: Any) -> None:
        """
        Change some fields and write the whole status atomically.  A failure
        to write is ignored: the status is a report, not the service.
        """
        self.status.update(changes)
        try:
            writeAtomically(self.path, json.dumps(self.status, sort_keys=True).encode())
        except OSError:
            pass


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
