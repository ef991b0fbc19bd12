"""
Tests for L{twisted_graceful._drain.DrainingFactory.resume}: a drain taken
back when a restart rolls back.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ._http import AT_LEAST_IDLE_GRACE, DrainHarness, request

DRAIN_TIMEOUT = 30.0
AT_LEAST_DRAIN_TIMEOUT = DRAIN_TIMEOUT + 1


class ResumeTests(SynchronousTestCase):
    """
    After L{DrainingFactory.resume} the factory serves as before the drain;
    only connections already told to close stay so.
    """

    def setUp(self) -> None:
        self.h = DrainHarness()

    def test_acceptsAgain(self) -> None:
        """
        A resumed factory builds protocols again and no longer says it
        drains.
        """
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.assertIsNone(self.h.factory.buildProtocol(None))
        self.h.factory.resume()
        self.assertFalse(self.h.factory.draining)
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        self.assertNotIn(b"Connection: close", client.received)
        self.assertIn(b"fast", client.received)

    def test_idleConnectionKeptAlive(self) -> None:
        """
        A kept-alive connection waiting out its idle grace when the drain is
        taken back stays open past the grace, and its next response keeps
        it alive.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.factory.resume()
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNone(client.closed)
        self.h.send(pump, request("/second"))
        self.assertEqual(len(client.responses()), 2)
        self.assertNotIn(b"Connection: close", client.received)
        self.assertIsNone(client.closed)

    def test_requestInFlightKeptAlive(self) -> None:
        """
        A request in flight whose response had not begun is answered as if
        no drain had happened: kept alive.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.factory.resume()
        self.h.resource.finishAll()
        self.h.flush()
        self.assertIn(b"done", client.received)
        self.assertNotIn(b"Connection: close", client.received)
        self.assertIsNone(client.closed)

    def test_toldToCloseStaysClosing(self) -> None:
        """
        A response that went out with C{Connection: close} during the drain
        still closes its connection after the drain is taken back.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.h.factory.drain(DRAIN_TIMEOUT)
        held = self.h.resource.held[0]
        held.write(b"first chunk")
        self.h.flush()
        self.h.factory.resume()
        held.finish()
        self.h.flush()
        self.assertIn(b"Connection: close", client.received)
        self.assertIsNotNone(client.closed)

    def test_deadlineCancelled(self) -> None:
        """
        The drain's deadline no longer aborts anything once it is taken
        back.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.factory.resume()
        self.h.clock.advance(AT_LEAST_DRAIN_TIMEOUT)
        self.h.flush()
        self.assertIsNone(client.closed)
        self.assertEqual(self.h.factory.inFlightCount(), 1)

    def test_laterDrainAfresh(self) -> None:
        """
        The waiters of the drain taken back never fire; a later drain
        begins anew (its waiters fire when it begins and ends) and counts
        only its own requests.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        first = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.send(pump, b"")
        self.h.factory.resume()
        began = self.h.factory.whenDraining()
        self.assertNoResult(began)
        self.h.resource.finishAll()
        self.h.flush()
        second = self.h.factory.drain(DRAIN_TIMEOUT)
        self.successResultOf(began)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        result = self.successResultOf(second)
        self.assertEqual((result.connections, result.inFlight, result.completed), (1, 0, 0))
        self.assertNoResult(first)

    def test_event(self) -> None:
        """
        The resumption is logged with the endpoint's name.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.factory.resume()
        [event] = [e for e in events if e.get("phase") == "drain-resumed"]
        self.assertEqual(event["endpoint"], "test")
