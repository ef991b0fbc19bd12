# -*- test-case-name: tests.test_report -*-
"""
L{Reporter}: tells operators what the process is doing: the pid file names
the process that serves, the status file beside it says what it does, and
systemd's notify socket hears the same.
"""

from __future__ import annotations

import os
import time
from typing import Any

from attrs import define, field
from twisted.logger import Logger

from ._drain import DrainResult
from ._errors import PidFileError
from ._notify import Notifier
from ._pidfile import PidFile, processStartTime
from ._states import ServerState, UpgradeOutcome
from ._status import StatusFile


@define
class Reporter:
    """
    One report per lifecycle fact.

    @ivar statusFile: The status file, or L{None} without a pid file.
    @ivar notifier: systemd's notify socket (inert when not under systemd).
    @ivar pidFile: The pid file, or L{None}.
    """

    statusFile: StatusFile | None
    notifier: Notifier
    pidFile: PidFile | None = None
    _log = Logger()
    _attempts: int = field(default=0, init=False)
    _ofRecord: bool = field(default=False, init=False)

    def _update(self, **changes: Any) -> None:
        # Only the server of record writes the status file: a successor
        # that never served alone (stopped while starting, or terminated at
        # its ready deadline) must not overwrite the file of the process
        # that serves.
        if self.statusFile is not None and self._ofRecord:
            self.statusFile.update(**changes)

    def workers(self, **fields: Any) -> None:
        """
        The supervisor's workers changed (C{workers}, C{crashLoop},
        C{rollout}).  Kept until this process is of record, then written.
        """
        if self.statusFile is None:
            return
        if self._ofRecord:
            self.statusFile.update(**fields)
        else:
            self.statusFile.status.update(fields)

    def serving(self, generation: int, endpoints: dict[str, str | None], started: float) -> None:
        """
        This process serves alone: at first start, or once its predecessor
        stopped accepting.
        """
        pid = os.getpid()
        self._ofRecord = True
        self._update(
            pid=pid,
            startTime=processStartTime(pid),
            generation=generation,
            started=started,
            endpoints=endpoints,
            state=ServerState.SERVING,
            restartAttempts=0,
            lastRestart=None,
            pidFileError=None,
        )
        # The status first: whenever the pid file names this process, the
        # status file does too.
        self._writePidFile(pid)
        self.notifier.ready(f"Serving as pid {pid}, generation {generation}")

    def _writePidFile(self, pid: int) -> None:
        if self.pidFile is not None:
            try:
                self.pidFile.write(pid)
            except PidFileError as e:
                # Serve on: the pid file is how operators find the server,
                # not what it serves with.
                self._log.error(
                    "{error} Serving on as pid {pid}, but the pid file does not name it: fix the "
                    "directory, then restart",
                    error=str(e),
                    pid=pid,
                    pidFile=self.pidFile.path,
                    phase="pidfile-failed",
                )
                self._update(pidFileError=str(e))

    def checkStart(self, predecessor: int | None) -> None:
        """
        Refuse to start beside a live server the pid file names, unless it
        is this process's C{predecessor}.

        @raise PidFileError: Another server runs.
        """
        if self.pidFile is not None:
            self.pidFile.checkStart(allowed=predecessor)

    def restartRequested(self) -> int:
        """
        @return: The number of this restart request.
        """
        self._attempts += 1
        return self._attempts

    def upgrading(self, attempt: int) -> None:
        self._update(
            state=ServerState.UPGRADING,
            restartAttempts=attempt,
            lastRestart={"attempt": attempt, "outcome": UpgradeOutcome.PENDING, "requested": time.time()},
        )
        self.notifier.reloading(f"Upgrading: starting a successor of pid {os.getpid()}")

    def queued(self, attempt: int) -> None:
        self._update(
            restartAttempts=attempt,
            lastRestart={"attempt": attempt, "outcome": UpgradeOutcome.QUEUED, "requested": time.time()},
        )

    def refused(self, attempt: int, reason: str) -> None:
        self._update(restartAttempts=attempt, lastRestart={"attempt": attempt, "outcome": UpgradeOutcome.REFUSED, "reason": reason})

    def upgradeFailed(self, attempt: int, reason: str) -> None:
        self._update(
            state=ServerState.SERVING,
            restartAttempts=attempt,
            lastRestart={"attempt": attempt, "outcome": UpgradeOutcome.FAILED, "reason": reason},
        )
        self.notifier.ready(f"Upgrade failed, still serving as pid {os.getpid()}: {reason}")

    def handedOver(self, attempt: int, childPID: int) -> None:
        self._update(
            state=ServerState.HANDED_OVER,
            restartAttempts=attempt,
            lastRestart={"attempt": attempt, "outcome": UpgradeOutcome.OK, "pid": childPID},
        )
        self.notifier.mainPID(childPID, f"Handed over to pid {childPID}; pid {os.getpid()} drains")
        # The successor writes the status file now; a request refused
        # during the probation must not overwrite it.  A rollback takes it
        # back.
        self._ofRecord = False

    def rolledBack(self, attempt: int, childPID: int | None, exitStatus: str, served: float) -> None:
        """
        The successor died before it was confirmed: this process serves
        again, the pid file names it, and systemd hears that it is the main
        process once more.
        """
        pid = os.getpid()
        self._ofRecord = True
        reason = f"successor pid {childPID} died {served:.1f} s after it was ready ({exitStatus})"
        self._update(
            pid=pid,
            startTime=processStartTime(pid),
            state=ServerState.SERVING,
            restartAttempts=attempt,
            lastRestart={
                "attempt": attempt,
                "outcome": UpgradeOutcome.ROLLED_BACK,
                "pid": childPID,
                "exitStatus": exitStatus,
                "served": round(served, 3),
                "reason": reason,
            },
        )
        self._writePidFile(pid)
        self.notifier.notify(f"MAINPID={pid}", "READY=1", f"STATUS=Rolled back: {reason}; serving as pid {pid}")

    def draining(self, delay: float) -> None:
        if not self._ofRecord:
            return  # Not serving: systemd must not hear that the service stops.
        self._update(state=ServerState.DRAINING, drainDelay=delay)
        self.notifier.stopping(f"Draining pid {os.getpid()}")

    def stopped(self, results: list[DrainResult], failed: int = 0) -> None:
        """
        The drain is over: C{results} of the endpoints whose drain ended,
        C{failed} the count of those whose drain failed (never clean).
        The pid file is removed then, if it still names this process.
        """
        if self._ofRecord:
            self._reportStopped(results, failed)
        if self.pidFile is not None:
            self.pidFile.removeIfNames(os.getpid())

    def _reportStopped(self, results: list[DrainResult], failed: int) -> None:
        completed = sum(r.completed for r in results)
        aborted = sum(r.abortedRequests for r in results)
        connections = sum(r.abortedConnections for r in results)
        self._update(
            state=ServerState.STOPPED,
            drain={
                "completed": completed,
                "aborted": aborted,
                "abortedConnections": connections,
                "clean": not failed and all(r.clean for r in results),
            },
        )
        self.notifier.status(
            f"Stopped: {completed} requests completed, {aborted} cut, {connections} connections aborted"
        )
