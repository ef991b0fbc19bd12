# -*- test-case-name: tests.test_signals -*-
"""
Signal handlers that only schedule work on the reactor thread.

The reactor installs its own SIGINT and SIGTERM handlers when it starts
running, so ours are installed after that, with C{callWhenRunning}, and keep
the reactor's as the handler of the first signal.  Handlers never log, spawn
or touch descriptors: they call C{reactor.callFromThread} and return.
"""

from __future__ import annotations

import signal as _signalModule
from typing import Any, Callable, Iterable, Protocol

from attrs import define
from twisted.logger import Logger

Handler = Callable[[int, Any], Any]

HANGUP_ACTIONS = ("restart", "ignore")
"""
What SIGHUP may do: start the same restart as the restart signal, or
nothing.
"""


class ISignalModule(Protocol):
    """
    The part of the C{signal} module used here, so tests can pass a fake.
    """

    def getsignal(self, signalnum: int, /) -> Any: ...

    def signal(self, signalnum: int, handler: Any, /) -> Any: ...


class _CallFromThread(Protocol):
    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None: ...


@define
class SignalRouter:
    """
    Route process signals to callables run on the reactor thread.

    @ivar reactor: Where the work is scheduled.
    @ivar signals: The C{signal} module, or a fake of it.
    """

    reactor: _CallFromThread
    signals: ISignalModule = _signalModule

    def onStop(self, signums: tuple[int, ...], stop: Callable[[int, Handler | None], None]) -> None:
        """
        Route each of C{signums} to C{stop(signum, previous)}, where
        C{previous} is the handler that was installed before (the reactor's),
        or L{None} when it was not a Python callable.
        """
        for signum in signums:
            previous = self.signals.getsignal(signum)
            self._route(signum, stop, previous if callable(previous) else None)

    def onSignal(self, signum: int, call: Callable[[int], None]) -> None:
        """
        Route C{signum} to C{call(signum)}.
        """
        self._route(signum, lambda s, _: call(s), None)

    def _route(self, signum: int, call: Callable[[int, Handler | None], None], previous: Handler | None) -> None:
        reactor = self.reactor

        def handler(received: int, frame: Any) -> None:
            reactor.callFromThread(call, received, previous)

        self.signals.signal(signum, handler)


def signalNumber(name: str) -> int:
    """
    Map C{USR2}, C{SIGUSR2} or C{12} to the signal number.

    @raise ValueError: No such signal; the message lists the usual choices.
    """
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        valid = {s.value for s in _signalModule.Signals}
        if number in valid:
            return number
    else:
        if not text.startswith("SIG"):
            text = "SIG" + text
        member = getattr(_signalModule.Signals, text, None)
        if member is not None:
            return int(member)
    raise ValueError(f"{name!r} is not a signal. Use a name such as USR2, HUP or USR1.")


def ignoreUntilHandled(signums: Iterable[int | None], signals: ISignalModule = _signalModule) -> None:
    """
    Ignore each of C{signums} whose action is still the default, which kills
    the process, until L{ServiceSignals.install} handles it: a SIGHUP or a
    restart signal that reaches a server still starting must not kill it.
    A handler someone installed is left alone.
    """
    for signum in signums:
        if signum is not None and signals.getsignal(signum) == _signalModule.SIG_DFL:
            signals.signal(signum, _signalModule.SIG_IGN)


@define
class ServiceSignals:
    """
    What each signal does to a running L{GracefulService}: SIGTERM and
    SIGINT stop it (the first through the reactor's own handler, a later
    one cuts the drain short), the restart signal restarts it, SIGHUP
    restarts it or is ignored, SIGUSR1 reopens the log files.  SIGHUP and
    SIGUSR1 are always handled: their default action kills the process.

    @ivar reactor: Where the work is done.
    @ivar stopping: Tells whether the ordered stop has begun.
    @ivar cutShort: Cuts the ordered stop short.
    @ivar restart: Restarts; logs its own failures.
    @ivar reopenLogs: Reopens the log files.
    @ivar restartSignal: The restart signal, or L{None}.
    @ivar hangup: One of L{HANGUP_ACTIONS}.
    """

    reactor: Any
    stopping: Callable[[], bool]
    cutShort: Callable[[], None]
    restart: Callable[[], object]
    reopenLogs: Callable[[], object]
    restartSignal: int | None = _signalModule.SIGUSR2
    hangup: str = "restart"
    _log = Logger()

    def install(self, signals: ISignalModule = _signalModule) -> None:
        """
        Install the handlers; call it once the reactor runs.
        """
        router = SignalRouter(self.reactor, signals)
        router.onStop((_signalModule.SIGTERM, _signalModule.SIGINT), self.stopReceived)
        if self.restartSignal is not None:
            router.onSignal(self.restartSignal, self.restartReceived)
        if self.restartSignal != _signalModule.SIGHUP:
            router.onSignal(_signalModule.SIGHUP, self.hangupReceived)
        if self.restartSignal != _signalModule.SIGUSR1:
            router.onSignal(_signalModule.SIGUSR1, self.reopenLogsReceived)

    def stopReceived(self, signum: int, previous: Handler | None) -> None:
        if self.stopping():
            self._log.warn(
                "Received signal {signal} during the drain: stopping now",
                signal=_signalModule.Signals(signum).name,
                phase="cut-short",
            )
            self.cutShort()
        elif previous is not None:
            previous(signum, None)
        else:
            self.reactor.stop()

    def restartReceived(self, signum: int) -> None:
        self._log.info(
            "Received {signal}: restarting", signal=_signalModule.Signals(signum).name, phase="restart-signal"
        )
        self.restart()

    def hangupReceived(self, signum: int) -> None:
        if self.hangup == "restart":
            self.restartReceived(signum)
        else:
            self._log.info("Received SIGHUP: ignored", signal="SIGHUP", phase="signal-ignored")

    def reopenLogsReceived(self, signum: int) -> None:
        name = _signalModule.Signals(signum).name
        try:
            self.reopenLogs()
        except Exception as e:
            self._log.warn(
                "Received {signal}: cannot reopen the log files ({error}); still writing to the old ones",
                signal=name,
                error=str(e),
                phase="logs-not-reopened",
            )
        else:
            self._log.info("Received {signal}: reopened the log files", signal=name, phase="logs-reopened")
