# -*- test-case-name: tests.test_child -*-
"""
L{ChildProcess}: the old process's view of the successor it started.

The successor reports on its ready pipe, one JSON object per line:
C{{"state": "starting", "pid": N}} as soon as it has read its inheritance,
then C{{"state": "ready", "pid": N, ...}} once it serves.  The pid may differ
from the spawned process's (C{twistd} without C{-n} forks twice), so it is
taken from the messages.  The ready pipe closing before C{ready}, or the
spawned process failing, means the successor died; a deadline bounds the
wait.

Once ready, the successor's death is seen on the lifeline: its read end
closes when the serving process (even a daemon's grandchild) has gone, and
the exit status follows when it was the spawned process.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Callable

from attrs import frozen
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import ChildExitedEarly, ChildReadyTimeout, SuccessorDied

DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_KILL_GRACE = 5.0
EXIT_STATUS_WAIT = 1.0


@frozen
class ReadyMessage:
    """
    What a successor said when it became ready.

    @ivar pid: The serving pid.
    @ivar fields: Everything else it said (generation, endpoints).
    """

    pid: int
    fields: dict[str, Any]


def describeExit(reason: Failure | None) -> str:
    """
    Say how a process ended: C{exit status 1}, C{killed by SIGKILL}.
    """
    if reason is None:
        return "unknown exit"
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    code = getattr(value, "exitCode", None)
    # No code and no signal: a worker whose fork server could not report.
    return "exit status unknown" if code is None else f"exit status {code}"


class ChildProcess(ProcessProtocol):
    """
    A successor being started.

    @param clock: Times the ready deadline and the kill grace.
    @param readyFD: The successor's descriptor for the ready pipe.
    @param lifelineFD: The successor's descriptor for the lifeline.
    @param readyTimeout: Seconds to wait for C{ready}.
    @param onReady: Called once with the L{ReadyMessage}.
    @param onFailed: Called once with a L{Failure} of L{ChildExitedEarly} or
        L{ChildReadyTimeout}, the successor then being terminated; or, after
        C{onReady}, once with a L{Failure} of L{SuccessorDied} when it dies.
    @ivar readyAt: When it reported ready (the clock's time), else L{None}.
    @param kill: Sends a signal to a pid (C{os.kill}; a fake in tests).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        readyFD: int,
        lifelineFD: int,
        readyTimeout: float,
        onReady: Callable[[ReadyMessage], None],
        onFailed: Callable[[Failure], None],
        kill: Callable[[int, int], None] = os.kill,
        killGrace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self._clock = clock
        self._readyFD = readyFD
        self._lifelineFD = lifelineFD
        self._readyTimeout = readyTimeout
        self._onReady = onReady
        self._onFailed = onFailed
        self._kill = kill
        self._killGrace = killGrace
        self._buffer = b""
        self._deadline: IDelayedCall | None = None
        self._killCall: IDelayedCall | None = None
        self.spawnedPID: int | None = None
        self.servingPID: int | None = None
        self.ready: ReadyMessage | None = None
        self.exitReason: Failure | None = None
        self._settled = False
        self._exitWait: IDelayedCall | None = None
        self.stage = "spawned"
        self.readyAt: float | None = None
        self._dead = False

    def connectionMade(self) -> None:
        self.spawnedPID = self.transport.pid  # type: ignore[union-attr]
        self._deadline = self._clock.callLater(self._readyTimeout, self._timedOut)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self._readyFD:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._message(line)

    def _message(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            pid = int(message["pid"])
            state = message["state"]
        except (ValueError, KeyError, TypeError):
            self._log.warn("Ignoring a malformed message from the successor: {line!r}", line=line[:200])
            return
        self.servingPID = pid
        if state == "starting":
            self.stage = "starting"
        elif state == "ready" and not self._settled:
            self._settled = True
            self.stage = "ready"
            self._cancelDeadline()
            self.readyAt = self._clock.seconds()
            self.ready = ReadyMessage(pid, {k: v for k, v in message.items() if k not in ("pid", "state")})
            self._onReady(self.ready)

    @property
    def alive(self) -> bool:
        """
        C{False} once the successor is known to have died after it was
        ready.
        """
        return not self._dead

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == self._lifelineFD and self.ready is not None:
            # Every holder of the lifeline's read end is gone.
            if self.exitReason is None and self.spawnedPID == self.servingPID:
                self._exitWait = self._clock.callLater(EXIT_STATUS_WAIT, self._died)
            else:
                self._died()
            return
        if childFD != self._readyFD or self._settled:
            return
        if self.exitReason is None and self.spawnedPID == (self.servingPID or self.spawnedPID):
            # The process is about to be reaped: wait a moment for its exit
            # status, which says why.
            self._exitWait = self._clock.callLater(EXIT_STATUS_WAIT, self._channelClosed)
        else:
            self._channelClosed()

    def _channelClosed(self) -> None:
        self._exitWait = None
        if self._settled:
            return
        status = f" ({describeExit(self.exitReason)})" if self.exitReason is not None else ""
        self._fail(
            ChildExitedEarly(
                f"The successor (pid {self.servingPID or self.spawnedPID}) exited while "
                f"{self.stage}, before it was ready{status}. The old process keeps serving; "
                "see the successor's output."
            )
        )

    def processExited(self, reason: Failure) -> None:
        self.exitReason = reason
        if self._killCall is not None and self._killCall.active() and self.servingPID in (None, self.spawnedPID):
            self._killCall.cancel()
        if self._settled:
            if self.ready is not None and self.spawnedPID == self.servingPID:
                self._died()
            # Else a daemonizing twistd's first process exits: its
            # grandchild serves, and the lifeline tells of its death.
            return
        if reason.check(ProcessTerminated) is not None or self._exitWait is not None:
            # A failure exit, or the exit that closed the ready channel.
            if self._exitWait is not None and self._exitWait.active():
                self._exitWait.cancel()
            self._channelClosed()
        # An exit 0 before ready is a daemonizing twistd's first process:
        # the ready channel says whether the successor lives.

    def _died(self) -> None:
        """
        The successor, which was ready, is gone: say so, once.
        """
        if self._exitWait is not None and self._exitWait.active():
            self._exitWait.cancel()
        self._exitWait = None
        if self._dead:
            return
        self._dead = True
        assert self.readyAt is not None
        served = self._clock.seconds() - self.readyAt
        status = describeExit(self.exitReason)
        self._onFailed(
            Failure(
                SuccessorDied(
                    f"The successor (pid {self.servingPID}) exited {served:.3f} s after it was ready: {status}",
                    pid=self.servingPID,
                    exitStatus=status,
                    served=served,
                )
            )
        )

    def _timedOut(self) -> None:
        self._deadline = None
        if not self._settled:
            # A loop blocked past the deadline runs this timer before it
            # reads what the successor wrote meanwhile: judge only after one
            # more pass over the descriptors (a call made now runs after it).
            self._deadline = self._clock.callLater(0, self._judgeTimeout)

    def _judgeTimeout(self) -> None:
        self._deadline = None
        if not self._settled:
            self._fail(
                ChildReadyTimeout(
                    f"The successor (pid {self.servingPID or self.spawnedPID}) was not ready within "
                    f"{self._readyTimeout:g} s (it was {self.stage}); it is being terminated and "
                    "the old process keeps serving."
                )
            )

    def _fail(self, error: Exception) -> None:
        self._settled = True
        self._cancelDeadline()
        self.terminate()
        self._onFailed(Failure(error))

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def terminate(self) -> None:
        """
        Send SIGTERM to the successor, and SIGKILL after the kill grace if
        it is still there.
        """
        pids = {pid for pid in (self.servingPID, self.spawnedPID) if pid is not None}
        if self.exitReason is not None:
            pids.discard(self.spawnedPID)
        for pid in pids:
            self._signal(pid, signal.SIGTERM)
        if pids and self._killCall is None:
            self._killCall = self._clock.callLater(self._killGrace, self._killNow, pids)

    def _killNow(self, pids: set[int]) -> None:
        for pid in pids:
            if pid == self.spawnedPID and self.exitReason is not None:
                continue
            if self._signal(pid, signal.SIGKILL):
                self._log.warn(
                    "Successor {childPID} ignored SIGTERM for {grace} s: killed it",
                    childPID=pid,
                    grace=self._killGrace,
                    phase="child-killed",
                )

    def _signal(self, pid: int, signum: int) -> bool:
        try:
            self._kill(pid, signum)
        except ProcessLookupError:
            return False
        return True

    def handOver(self) -> None:
        """
        Tell the successor that this process no longer accepts connections,
        so it serves alone.
        """
        self.transport.writeToChild(self._lifelineFD, b'{"state": "handed-over"}\n')  # type: ignore[union-attr]
