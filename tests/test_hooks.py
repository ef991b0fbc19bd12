"""
Tests for L{twisted_graceful._hooks}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._hooks import ShutdownHooks


class ShutdownHooksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hooks = ShutdownHooks(self.clock)
        self.calls: list[str] = []

    def test_order(self) -> None:
        """
        Hooks run in the order added, each after the previous one's
        Deferred fires.
        """
        waiting: Deferred[None] = Deferred()
        self.hooks.add(lambda: (self.calls.append("a"), waiting)[1])
        self.hooks.add(self.calls.append, "b")
        d = self.hooks.run()
        self.assertEqual(self.calls, ["a"])
        waiting.callback(None)
        self.assertEqual([o.outcome for o in self.successResultOf(d)], ["ok", "ok"])
        self.assertEqual(self.calls, ["a", "b"])

    def test_coroutine(self) -> None:
        async def hook() -> None:
            self.calls.append("coroutine")

        self.hooks.add(hook)
        self.successResultOf(self.hooks.run())
        self.assertEqual(self.calls, ["coroutine"])

    def test_failureDoesNotStopOthers(self) -> None:
        """
        A hook that raises is logged as failed and the next one runs.
        """
        self.hooks.add(lambda: 1 / 0, name="divide")
        self.hooks.add(self.calls.append, "after")
        outcomes = self.successResultOf(self.hooks.run())
        self.assertEqual([(o.name, o.outcome) for o in outcomes], [("divide", "failed"), ("list.append", "ok")])
        self.assertEqual(self.calls, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_timeout(self) -> None:
        """
        A hook that outlasts its timeout is cancelled and the next one runs.
        """
        self.hooks.add(Deferred, timeout=2.0, name="stuck")
        self.hooks.add(self.calls.append, "after")
        d = self.hooks.run()
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual([o.outcome for o in self.successResultOf(d)], ["timeout", "ok"])

    def test_cutShort(self) -> None:
        """
        Cutting short cancels the running hook and skips the rest.
        """
        self.hooks.add(Deferred, timeout=None)
        self.hooks.add(self.calls.append, "after")
        d = self.hooks.run()
        self.hooks.cutShort()
        self.assertEqual([o.outcome for o in self.successResultOf(d)], ["skipped", "skipped"])
        self.assertEqual(self.calls, [])

    def test_badArguments(self) -> None:
        with self.assertRaises(TypeError):
            self.hooks.add(42)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            self.hooks.add(print, timeout=0)
