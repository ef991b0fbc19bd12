"""
Tests for L{twisted_graceful._signals}.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_graceful import GracefulService, _logfile
from twisted_graceful._signals import SignalRouter, signalNumber

from .test_service import FakeSignals, Harness


class Scheduler:
    def __init__(self) -> None:
        self.scheduled: list[tuple[object, tuple[object, ...]]] = []

    def callFromThread(self, f: object, *args: object) -> None:
        self.scheduled.append((f, args))


class SignalRouterTests(SynchronousTestCase):
    def test_handlerOnlySchedules(self) -> None:
        """
        The installed handler calls nothing itself: it schedules the work on
        the reactor thread.
        """
        signals, reactor, calls = FakeSignals(), Scheduler(), []
        SignalRouter(reactor, signals).onSignal(signal.SIGUSR2, calls.append)
        signals.handlers[signal.SIGUSR2](signal.SIGUSR2, None)
        self.assertEqual(calls, [])
        [(f, args)] = reactor.scheduled
        f(*args)  # type: ignore[operator]
        self.assertEqual(calls, [signal.SIGUSR2])


class SignalNumberTests(SynchronousTestCase):
    def test_names(self) -> None:
        for text in ["USR2", "sigusr2", "SIGUSR2", str(int(signal.SIGUSR2))]:
            self.assertEqual(signalNumber(text), signal.SIGUSR2)

    def test_bad(self) -> None:
        for text in ["NOPE", "999", ""]:
            with self.assertRaises(ValueError) as caught:
                signalNumber(text)
            self.assertIn("is not a signal", str(caught.exception))


class OperatorSignalTests(SynchronousTestCase):
    """
    SIGHUP and SIGUSR1, whose default action kills the process, are always
    handled: SIGHUP restarts (or is ignored), SIGUSR1 reopens the logs.
    """

    def start(self, **kw: Any) -> None:
        self.h = Harness(self)
        self.signals = FakeSignals()
        self.patch(GracefulService, "_signalModule", self.signals)
        self.reopened: list[int] = []
        self.h.service = GracefulService(
            reactor=self.h.reactor, environ={}, reopenLogs=lambda: self.reopened.append(1), **kw
        )
        self.h.addEndpoint("8080")
        self.restarts: list[int] = []
        self.patch(self.h.service, "restart", lambda: self.restarts.append(1) or succeed(None))
        self.h.service.startService()
        self.h.reactor.callFromThread = lambda f, *a: f(*a)  # type: ignore[method-assign]
        self.h.service._reactorRunning()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def send(self, signum: int) -> None:
        self.signals.handlers[signum](signum, None)

    def phases(self) -> list[tuple[str, str]]:
        return [(e["phase"], e.get("signal", "")) for e in self.events if "phase" in e]

    def test_hangupRestarts(self) -> None:
        """
        By default SIGHUP starts the same restart as SIGUSR2.
        """
        self.start()
        self.send(signal.SIGHUP)
        self.assertEqual(self.restarts, [1])
        self.assertEqual(self.phases(), [("restart-signal", "SIGHUP")])
        self.send(signal.SIGUSR2)
        self.assertEqual(self.restarts, [1, 1])

    def test_hangupIgnored(self) -> None:
        """
        With C{hangup="ignore"}, SIGHUP is logged and does nothing else.
        """
        self.start(hangup="ignore")
        self.send(signal.SIGHUP)
        self.assertEqual(self.restarts, [])
        self.assertEqual(self.phases(), [("signal-ignored", "SIGHUP")])
        self.assertFalse(self.h.service.stopping)

    def test_hangupAsRestartSignal(self) -> None:
        """
        With SIGHUP as the restart signal, one SIGHUP is one restart.
        """
        self.start(restartSignal=signal.SIGHUP)
        self.send(signal.SIGHUP)
        self.assertEqual(self.restarts, [1])

    def test_badHangup(self) -> None:
        with self.assertRaises(ValueError) as caught:
            GracefulService(environ={}, hangup="stop")
        self.assertIn("restart, ignore", str(caught.exception))

    def test_usr1ReopensLogs(self) -> None:
        """
        SIGUSR1 reopens the log files and says so; nothing restarts or
        stops.
        """
        self.start()
        self.send(signal.SIGUSR1)
        self.assertEqual(self.reopened, [1])
        self.assertEqual(self.phases(), [("logs-reopened", "SIGUSR1")])
        self.assertEqual(self.restarts, [])
        self.assertFalse(self.h.service.stopping)

    def test_usr1ReopenFails(self) -> None:
        """
        A log file that cannot be reopened is a warning; the server serves
        on.
        """
        self.start()

        def failing() -> None:
            raise PermissionError(13, "Permission denied")

        self.h.service._reopenLogs = failing
        self.send(signal.SIGUSR1)
        [event] = [e for e in self.events if e.get("phase") == "logs-not-reopened"]
        self.assertEqual((event["log_level"].name, event["error"]), ("warn", "[Errno 13] Permission denied"))
        self.assertFalse(self.h.service.stopping)

    def test_successorIgnoresThemWhileStarting(self) -> None:
        """
        The successor starts with the restart signal, SIGHUP and SIGUSR1
        ignored, until it installs its handlers.
        """
        self.start()
        command = self.h.service._launcher.command()
        self.assertEqual(command[:2], ["/bin/sh", "-c"])
        self.assertTrue(command[2].startswith(
            f'trap "" {int(signal.SIGHUP)} {int(signal.SIGUSR1)} {int(signal.SIGUSR2)}; exec'
        ), command[2])


class FirstStartTests(SynchronousTestCase):
    """
    A first start ignores the restart signal, SIGHUP and SIGUSR1 from the
    moment its sockets are bound until its handlers are installed.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.signals = FakeSignals()
        self.patch(GracefulService, "_signalModule", self.signals)

    def service(self, **kw: Any) -> GracefulService:
        self.h.service = GracefulService(reactor=self.h.reactor, environ={}, **kw)
        self.h.addEndpoint("8080")
        return self.h.service

    def test_ignoredFromBind(self) -> None:
        """
        Once bound (before twistd daemonizes), they are ignored; SIGTERM
        and SIGINT keep their action.
        """
        self.service().bind()
        for signum in (signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1):
            self.assertIs(self.signals.handlers[signum], signal.SIG_IGN, signal.Signals(signum).name)
        self.assertNotIn(signal.SIGTERM, self.signals.handlers)
        self.assertNotIn(signal.SIGINT, self.signals.handlers)

    def test_ownHandlerKept(self) -> None:
        """
        A handler the application installed is not replaced by SIG_IGN.
        """
        mine = lambda s, f: None  # noqa: E731
        self.signals.handlers[signal.SIGUSR1] = mine
        service = self.service(restartSignal=None)
        service.startService()
        self.assertIs(self.signals.handlers[signal.SIGUSR1], mine)
        self.assertIs(self.signals.handlers[signal.SIGHUP], signal.SIG_IGN)
        self.assertNotIn(signal.SIGUSR2, self.signals.handlers)

    def test_notWithoutSignalHandling(self) -> None:
        """
        A service that handles no signals leaves them alone.
        """
        self.service(handleSignals=False).bind()
        self.assertEqual(self.signals.handlers, {})


class ReopenTests(SynchronousTestCase):
    """
    L{_logfile.reopen} and L{_logfile.reopenAccessLog} follow a file that
    C{logrotate} renamed.
    """

    def test_logFile(self) -> None:
        path = os.path.abspath("twistd.log")
        self.patch(_logfile, "_opened", [])
        self.addCleanup(_logfile.configure, None)
        _logfile.configure(path)
        observer = _logfile.observer()
        emit = Logger(namespace="t", observer=observer).info
        emit("before")
        os.rename(path, path + ".1")
        self.assertEqual(_logfile.reopen(), [path])
        emit("after")
        with open(path + ".1") as old, open(path) as new:
            self.assertIn("before", old.read())
            self.assertEqual([line.endswith("after") for line in new.read().splitlines()], [True])

    def test_logFileCannotReopen(self) -> None:
        """
        A file that cannot be opened again raises, and the observer keeps
        writing to the old one.
        """
        os.mkdir("logs")
        path = os.path.abspath("logs/twistd.log")
        self.patch(_logfile, "_opened", [])
        self.addCleanup(_logfile.configure, None)
        _logfile.configure(path)
        observer = _logfile.observer()
        os.rename("logs", "gone")
        self.assertRaises(FileNotFoundError, _logfile.reopen)
        Logger(namespace="t", observer=observer).info("still here")
        with open("gone/twistd.log") as f:
            self.assertIn("still here", f.read())

    def test_accessLog(self) -> None:
        site = Site(Resource())
        site.logPath = os.path.abspath("access.log")
        self.assertFalse(_logfile.reopenAccessLog(site))  # Not started.
        site.startFactory()
        self.addCleanup(site.stopFactory)
        site.logFile.write("one\n")
        os.rename("access.log", "access.log.1")
        self.assertTrue(_logfile.reopenAccessLog(site))
        site.logFile.write("two\n")
        with open("access.log") as f:
            self.assertEqual(f.read(), "two\n")
        with open("access.log.1") as f:
            self.assertEqual(f.read(), "one\n")

    def test_noAccessLog(self) -> None:
        self.assertFalse(_logfile.reopenAccessLog(Site(Resource())))


class SighupOptionTests(SynchronousTestCase):
    """
    C{twistd graceful --sighup restart|ignore}.
    """

    def parse(self, *argv: str) -> Any:
        from twisted_graceful.tap import Options

        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default(self) -> None:
        self.assertEqual(self.parse()["sighup"], "restart")

    def test_ignore(self) -> None:
        self.assertEqual(self.parse("--sighup", "IGNORE")["sighup"], "ignore")

    def test_bad(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            self.parse("--sighup", "stop")
        self.assertIn("--sighup takes restart or ignore, not 'stop'", str(caught.exception))

    def test_contradiction(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            self.parse("--restart-signal", "HUP", "--sighup", "ignore")
        self.assertIn("--restart-signal HUP and --sighup ignore", str(caught.exception))
