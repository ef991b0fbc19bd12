"""
Tests for L{twisted_graceful._signals}.
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._signals import SignalRouter, signalNumber

from .test_service import FakeSignals


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
