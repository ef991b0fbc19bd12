"""
Run C{twistd graceful} as a real process and follow its JSON log events.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

TWISTD = str(Path(sys.executable).parent / "twistd")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WAIT = 20.0
SUITE_PROBATION = "0.2"
"""
The probation of every server the suite starts, unless a test gives its
own: short, so that restarts not about the probation stay quick.
"""

Event = dict[str, Any]


class ServerProcess(ProcessProtocol):
    """
    One C{twistd} process: its events as they arrive, its stderr in a file,
    and its exit.
    """

    def __init__(self, logPath: Path) -> None:
        self.events: list[Event] = []
        self._buffer = b""
        self._waiters: list[tuple[Callable[[Event], bool], Deferred[Event]]] = []
        self.ended: Deferred[int | None] = Deferred()
        self.exitCode: int | None = None
        self.exitSignal: int | None = None
        self.finished = False
        self.stderr = open(logPath, "wb")
        self.logPath = logPath
        self.pid: int | None = None
        self.directExit: Exception | None = None
        self._directExited: Deferred[Exception] = Deferred()

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.stderr.write(line + b"\n")
            text = line.strip(b"\x1e \r")
            if not text.startswith(b"{"):
                continue
            try:
                event = json.loads(text)
            except ValueError:
                continue
            self.events.append(event)
            for waiter in list(self._waiters):
                predicate, d = waiter
                if predicate(event):
                    self._waiters.remove(waiter)
                    d.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr.write(data)

    def processExited(self, reason: Failure) -> None:
        """
        The process the test started exited (its successors may run on).
        """
        self.directExit = reason.value
        self._directExited.callback(reason.value)

    def waitForDirectExit(self, timeout: float = DEFAULT_WAIT) -> Deferred[Exception]:
        """
        Fire with how the process the test started exited.
        """
        d: Deferred[Exception] = Deferred()
        self._directExited.addCallback(lambda value: (d.callback(value), value)[1])
        return withDeadline(d, timeout, f"twistd {self.pid} did not exit within {timeout} s; log: {self.logPath}")

    def processEnded(self, reason: Failure) -> None:
        self.finished = True
        self.stderr.close()
        if reason.check(ProcessDone, ProcessTerminated):
            self.exitCode = reason.value.exitCode
            self.exitSignal = reason.value.signal
        for _, d in self._waiters:
            d.errback(AssertionError(f"twistd exited ({self.describeExit()}) first; log: {self.logPath}"))
        self._waiters = []
        self.ended.callback(self.exitCode)

    def describeExit(self) -> str:
        if self.exitSignal is not None:
            return f"signal {self.exitSignal}"
        return f"status {self.exitCode}"

    def waitFor(self, what: str, predicate: Callable[[Event], bool], timeout: float = DEFAULT_WAIT) -> Deferred[Event]:
        """
        Fire with the first event (past or future) that matches.
        """
        for event in self.events:
            if predicate(event):
                d: Deferred[Event] = Deferred()
                d.callback(event)
                return d
        if self.finished:
            raise AssertionError(f"twistd exited ({self.describeExit()}) before {what}; log: {self.logPath}")
        d = Deferred()
        self._waiters.append((predicate, d))
        return withDeadline(d, timeout, f"{what} did not happen within {timeout} s; log: {self.logPath}")

    def waitForPhase(self, phase: str, timeout: float = DEFAULT_WAIT, **fields: Any) -> Deferred[Event]:
        return self.waitFor(
            f"event phase={phase} {fields}",
            lambda e: e.get("phase") == phase and all(e.get(k) == v for k, v in fields.items()),
            timeout,
        )

    def waitForExit(self, timeout: float = DEFAULT_WAIT) -> Deferred[int | None]:
        if self.finished:
            d: Deferred[int | None] = Deferred()
            d.callback(self.exitCode)
            return d
        d = Deferred()
        self.ended.addCallback(lambda code: (d.callback(code), code)[1])
        return withDeadline(d, timeout, f"twistd {self.pid} did not exit within {timeout} s; log: {self.logPath}")

    def signal(self, signum: int) -> None:
        if not self.finished and self.pid is not None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass  # It handed over and exited; its successors run on.

    def phases(self) -> list[str]:
        return [e["phase"] for e in self.events if "phase" in e]


def withDeadline(d: Deferred[Any], timeout: float, message: str) -> Deferred[Any]:
    """
    Fail C{d} with C{AssertionError(message)} if it has not fired in time.
    """
    result: Deferred[Any] = Deferred()
    timer = reactor.callLater(timeout, lambda: result.called or result.errback(AssertionError(message)))  # type: ignore[attr-defined]

    def done(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(value)
        return None

    def failed(f: Failure) -> None:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.errback(f)

    d.addCallbacks(done, failed)
    return result


def startServer(
    tmpPath: Path,
    *args: str,
    name: str = "twistd",
    twistdArgs: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    childFDs: dict[int, int | str] | None = None,
) -> ServerProcess:
    """
    Start C{twistd -n graceful ARGS} in C{tmpPath}, logging JSON events to
    stdout, with C{env} added to the environment and C{childFDs} (for
    C{spawnProcess}) if given.
    """
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    process = ServerProcess(tmpPath / f"{name}.log")
    argv = [
        TWISTD, "-n", "--logger=twisted_graceful.jsonlog.observer", *twistdArgs, "graceful",
        "--probation", SUITE_PROBATION, *args,
    ]
    reactor.spawnProcess(process, TWISTD, argv, env=env, path=str(tmpPath), childFDs=childFDs)  # type: ignore[attr-defined]
    return process


def stopServer(process: ServerProcess) -> None:
    """
    Kill a server a test left running (by its pid, which the test started).
    """
    if not process.finished:
        process.signal(signal.SIGKILL)
