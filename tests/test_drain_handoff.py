"""
Tests for the drain of a restart that moves kept-alive connections to the
successor (L{DrainingFactory.drain} with a mover): which connections are
offered, when, what their responses say, and what happens to those the
successor takes, refuses, or never answers.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._movable import ConnectionMoved

from ._http import AT_LEAST_IDLE_GRACE, DrainHarness, RawClient, request

DRAIN_TIMEOUT = 30.0


class FakeMover:
    """
    A mover that records the offers it gets; the test answers them.

    @ivar movable: Whether connections may move (L{mayMove}, L{offer}).
    @ivar sent: Whether every byte of the last response was sent
        (L{offer} only).
    @ivar offers: Each offer's channel and refusal callback, in order.
    """

    def __init__(self) -> None:
        self.movable = True
        self.sent = True
        self.offers: list[tuple[Any, Callable[[], None]]] = []

    def mayMove(self, channel: Any) -> bool:
        return self.movable

    def offer(self, channel: Any, refused: Callable[[], None]) -> bool:
        if not (self.movable and self.sent) or channel.requests:
            return False
        self.offers.append((channel, refused))
        return True

    def take(self, index: int = 0) -> None:
        """
        The successor took the connection of offer C{index}.
        """
        self.abandon(self.offers[index][0])

    def abandon(self, channel: Any) -> None:
        """
        The connection leaves this process with nothing sent, as
        L{twisted_graceful._movable.detach} makes it leave a real socket.
        """
        transport = channel.transport
        transport.disconnected = True
        transport.protocol.connectionLost(Failure(ConnectionMoved()))

    def refuse(self, index: int = 0) -> None:
        self.offers[index][1]()


class MovingDrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = DrainHarness(idleGrace=0.5)
        self.mover = FakeMover()

    def drain(self) -> Any:
        d = self.h.factory.drain(DRAIN_TIMEOUT, restarting=True, mover=self.mover)
        self.h.flush()
        return d

    def idleClient(self) -> tuple[RawClient, Any]:
        """
        A client whose first request was answered, kept alive.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        self.assertIn(b"fast", client.received)
        return client, pump

    def test_idleOfferedAtStart(self) -> None:
        """
        A connection idle when the drain begins is offered to the successor
        at once; once taken, it has left this process with nothing sent on
        it and is counted as moved, and the drain is over.
        """
        client, _ = self.idleClient()
        client.received = b""
        d = self.drain()
        self.assertEqual(len(self.mover.offers), 1)
        self.assertNoResult(d)
        self.mover.take()
        self.h.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.moved, result.abortedConnections), (1, 0))
        self.assertEqual(client.received, b"")

    def test_notClosedWhileOffered(self) -> None:
        """
        A connection whose offer is unanswered is not closed by the idle
        grace.
        """
        client, _ = self.idleClient()
        self.drain()
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNone(client.closed)

    def test_inFlightKeptAliveThenOffered(self) -> None:
        """
        A request in flight when the drain begins is answered without
        C{Connection: close} when its connection may move, and the
        connection is offered once the response is done.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.drain()
        self.assertEqual(self.mover.offers, [])
        self.h.resource.finishAll()
        self.h.flush()
        self.assertNotIn(b"Connection: close", client.received)
        self.assertEqual(len(self.mover.offers), 1)
        self.assertIsNone(client.closed)

    def test_notMovableAnsweredWithClose(self) -> None:
        """
        When the connection may not move, its response says
        C{Connection: close}, as in a drain without a mover.
        """
        self.mover.movable = False
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.drain()
        self.h.resource.finishAll()
        self.h.flush()
        self.assertIn(b"Connection: close", client.received)
        self.assertEqual(self.mover.offers, [])

    def test_refusedDrainsHere(self) -> None:
        """
        A connection the successor refused drains here: it is closed once
        idle for the grace, and never offered again.
        """
        client, pump = self.idleClient()
        d = self.drain()
        self.mover.refuse()
        self.h.clock.advance(0.1)
        self.h.send(pump, request("/"))  # Served here, with Connection: close.
        self.assertIn(b"Connection: close", client.received)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        self.assertEqual(len(self.mover.offers), 1)
        result = self.successResultOf(d)
        self.assertEqual((result.moved, result.completed), (0, 1))

    def test_idleGraceOffersAgain(self) -> None:
        """
        A connection that could not move after its response (its bytes were
        still on their way, say) is offered when its idle grace ends,
        instead of being closed.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.drain()
        self.mover.sent = False
        self.h.resource.finishAll()
        self.h.flush()
        self.assertEqual(self.mover.offers, [])
        self.mover.sent = True
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertEqual(len(self.mover.offers), 1)
        self.assertIsNone(client.closed)

    def test_abortWhileOfferedSendsNothing(self) -> None:
        """
        At the deadline, a connection still offered leaves this process
        without a byte or a reset (the successor may hold it already).
        """
        client, _ = self.idleClient()
        client.received = b""
        d = self.drain()
        self.h.factory.abortAll()
        self.h.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.moved, result.abortedConnections), (1, 1))
        self.assertEqual(client.received, b"")

    def test_rollbackKeepsConnections(self) -> None:
        """
        When the drain is taken back (a rollback) while an offer is
        unanswered, the refusal that follows leaves the connection kept
        alive, and a later drain offers it again.
        """
        client, pump = self.idleClient()
        self.drain()
        self.h.factory.resume()
        self.mover.refuse()
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.send(pump, request("/"))
        self.assertIsNone(client.closed)
        self.assertNotIn(b"Connection: close", client.received)
        self.drain()
        self.assertEqual(len(self.mover.offers), 2)

    def test_refusedOfferedAtNextDrain(self) -> None:
        """
        A connection refused in a drain that was then taken back is offered
        again by the next drain.
        """
        self.idleClient()
        self.drain()
        self.mover.refuse()
        self.h.factory.resume()
        self.drain()
        self.assertEqual(len(self.mover.offers), 2)

    def test_withoutMoverCloses(self) -> None:
        """
        A drain without a mover closes an idle connection after the grace
        (as before), and counts nothing as moved.
        """
        client, _ = self.idleClient()
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        self.assertEqual(self.successResultOf(d).moved, 0)
