"""
Tests for L{twisted_graceful._stop.OrderedStop}: its phases, one after the
other, and what cutting it short does in each.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._stop import StopPhase

from ._http import request
from .test_service import Harness

DELAY = 5.0


class _SlowService(Service):
    def __init__(self) -> None:
        self.stopping: Deferred[None] = Deferred()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stopping


class PhaseTests(SynchronousTestCase):
    """
    Each phase in turn; L{OrderedStop.cutShort} in each.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.h.service._orderedStop._drainDelay = DELAY
        self.endpoint = self.h.addEndpoint("8080")
        self.hook: Deferred[None] = Deferred()
        self.calls: list[str] = []
        self.h.service.addShutdownHook(lambda: self.calls.append("first") or self.hook)
        self.h.service.addShutdownHook(self.calls.append, "second")
        self.other = _SlowService()
        self.other.setServiceParent(self.h.service)
        self.h.service.startService()
        self.client = self.h.connect(self.endpoint)
        self.h.send(self.client, request("/held"))
        self.stop = self.h.service._orderedStop

    def test_phasesInOrder(self) -> None:
        """
        Delay, drain, hooks, other services, stopped: each waits for the one
        before.
        """
        self.assertIs(self.stop.phase, StopPhase.NOT_STARTED)
        d = self.h.service.stopService()
        self.assertIs(self.stop.phase, StopPhase.DELAYING)
        self.assertIsNotNone(self.endpoint.port, "the delay serves on")
        self.h.reactor.advance(DELAY)
        self.assertIs(self.stop.phase, StopPhase.DRAINING)
        self.assertIsNone(self.endpoint.port)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.assertIs(self.stop.phase, StopPhase.HOOKS)
        self.assertEqual(self.calls, ["first"])
        self.hook.callback(None)
        self.assertIs(self.stop.phase, StopPhase.OTHERS)
        self.assertEqual(self.calls, ["first", "second"])
        self.assertNoResult(d)
        self.other.stopping.callback(None)
        self.assertIs(self.stop.phase, StopPhase.STOPPED)
        self.successResultOf(d)
        self.assertEqual(self.h.service.drainResults[0].completed, 1)

    def test_cutDuringDelay(self) -> None:
        """
        Cut short during the delay: the drain begins at once and its
        connections are aborted; the hooks are skipped.
        """
        d = self.h.service.stopService()
        self.h.service.cutShort()
        self.h.flush()
        self.assertIs(self.stop.phase, StopPhase.OTHERS)
        self.assertIsNotNone(self.client.closed)
        self.assertEqual(self.calls, [])
        self.other.stopping.callback(None)
        self.successResultOf(d)
        self.assertEqual([o.outcome for o in self.h.service.hookOutcomes], ["skipped", "skipped"])

    def test_cutDuringDrain(self) -> None:
        """
        Cut short during the drain: the request in flight is cut, the hooks
        are skipped, the other services still stop.
        """
        d = self.h.service.stopService()
        self.h.reactor.advance(DELAY)
        self.h.service.cutShort()
        self.h.flush()
        self.assertIsNotNone(self.client.closed)
        self.assertEqual(self.h.service.drainResults[0].abortedRequests, 1)
        self.assertEqual(self.calls, [])
        self.assertIs(self.stop.phase, StopPhase.OTHERS)
        self.other.stopping.callback(None)
        self.successResultOf(d)

    def test_cutDuringHooks(self) -> None:
        """
        Cut short while a hook runs: it is cancelled, the next is skipped.
        """
        d = self.h.service.stopService()
        self.h.reactor.advance(DELAY)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.h.service.cutShort()
        self.assertEqual(self.calls, ["first"])
        self.assertEqual([o.outcome for o in self.h.service.hookOutcomes][1:], ["skipped"])
        self.assertIs(self.stop.phase, StopPhase.OTHERS)
        self.other.stopping.callback(None)
        self.successResultOf(d)

    def test_cutDuringOthers(self) -> None:
        """
        Cut short while the other services stop: they are left to stop.
        """
        d = self.h.service.stopService()
        self.h.reactor.advance(DELAY)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.hook.callback(None)
        self.h.service.cutShort()
        self.assertIs(self.stop.phase, StopPhase.OTHERS)
        self.assertNoResult(d)
        self.other.stopping.callback(None)
        self.successResultOf(d)
