"""
Tests for L{twisted_graceful._movable}: which connection may move to the
successor, in which state, and how it leaves without a byte on the wire.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

from attrs import evolve
from twisted.internet import abstract, error, tcp, unix
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols import basic
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.server import Site
from zope.interface import directlyProvides

from twisted_graceful import _movable
from twisted_graceful._drain import DrainingFactory
from twisted_graceful._movable import (
    CLOSING,
    ENCRYPTED,
    HTTP2,
    HTTP11,
    IN_FLIGHT,
    IS_UPGRADED,
    NOT_A_SOCKET,
    NOT_HTTP11,
    OTHER,
    TCP,
    TLS,
    UNIX,
    UNPARSED,
    UNSENT,
    ConnectionMoved,
    ConnectionState,
    EndpointMover,
    stateOf,
    whyNotMovable,
)

from ._http import HeldResource, request

IDLE = ConnectionState(TCP, HTTP11)


class SelectionRuleTests(SynchronousTestCase):
    """
    L{whyNotMovable} lets only an idle plain HTTP/1.1 connection move, and
    names why any other may not.
    """

    def test_idleMoves(self) -> None:
        """
        An idle HTTP/1.1 connection on a TCP or UNIX socket may move.
        """
        self.assertIsNone(whyNotMovable(IDLE))
        self.assertIsNone(whyNotMovable(evolve(IDLE, transport=UNIX)))

    def test_everyState(self) -> None:
        """
        Each state that keeps a connection here has its own reason, whatever
        else holds.
        """
        cases = [
            (evolve(IDLE, transport=TLS), ENCRYPTED),
            (evolve(IDLE, transport=OTHER), NOT_A_SOCKET),
            (evolve(IDLE, channel=HTTP2), NOT_HTTP11),
            (evolve(IDLE, channel=UPGRADED_), IS_UPGRADED),
            (evolve(IDLE, closing=True), CLOSING),
            (evolve(IDLE, requests=1), IN_FLIGHT),
            (evolve(IDLE, requests=2), IN_FLIGHT),
            (evolve(IDLE, unparsed=1), UNPARSED),
            (evolve(IDLE, unsent=1), UNSENT),
            # The reasons for good come first: waiting changes nothing.
            (evolve(IDLE, transport=TLS, requests=1, unsent=5), ENCRYPTED),
            (evolve(IDLE, channel=UPGRADED_, closing=True), IS_UPGRADED),
            (evolve(IDLE, closing=True, requests=1), CLOSING),
            (evolve(IDLE, requests=1, unparsed=3, unsent=3), IN_FLIGHT),
            (evolve(IDLE, unparsed=3, unsent=3), UNPARSED),
        ]
        for state, reason in cases:
            self.assertEqual(whyNotMovable(state), reason, state)


UPGRADED_ = _movable.UPGRADED


def socketPair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


class LiveConnection:
    """
    A connection of a drained site served over a real UNIX socket pair by
    Twisted's own L{unix.Server}, on a memory reactor: the server's
    descriptor is watched by no real reactor, and the test plays the
    client on C{peer}.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.clock = MemoryReactorClock()
        self.resource = HeldResource()
        self.factory = DrainingFactory(Site(self.resource, reactor=self.clock), self.clock, name="test")
        self.factory.doStart()
        server, self.peer = socketPair()
        self.peer.setblocking(False)
        server.setblocking(False)
        self.transport = unix.Server._fromConnectedSocket(server.fileno(), self.factory, self.clock)
        server.close()
        self.protocol: Any = self.transport.protocol
        self.channel: Any = self.protocol.currentChannel
        test.addCleanup(self.close)

    def close(self) -> None:
        self.peer.close()
        if not self.transport.disconnected:
            self.transport.connectionLost(Failure(error.ConnectionDone()))

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def peerReceived(self) -> bytes | None:
        """
        What the peer can read now, C{b""} at end of file, or L{None} if
        nothing is there.
        """
        try:
            return self.peer.recv(65536)
        except BlockingIOError:
            return None


class StateOfTests(SynchronousTestCase):
    """
    L{stateOf} reads the state of a live channel.
    """

    def test_fresh(self) -> None:
        """
        A connection that has received nothing may move.
        """
        c = LiveConnection(self)
        self.assertEqual(stateOf(c.channel), ConnectionState(UNIX, HTTP11))

    def test_partialRequest(self) -> None:
        """
        A request line received in part is unparsed bytes.
        """
        c = LiveConnection(self)
        c.receive(b"GET / HT")
        self.assertEqual(whyNotMovable(stateOf(c.channel)), UNPARSED)

    def test_requestLifecycle(self) -> None:
        """
        A request in flight keeps the connection; once answered, its
        response must leave this process first; once sent, it may move.
        """
        c = LiveConnection(self)
        c.receive(request("/held"))
        self.assertEqual(whyNotMovable(stateOf(c.channel)), IN_FLIGHT)
        c.receive(b"GET /next")
        self.assertEqual(stateOf(c.channel).unparsed, len(b"GET /next"))
        c.resource.finishAll()
        self.assertEqual(whyNotMovable(stateOf(c.channel)), UNPARSED)

    def test_unsentThenFlushed(self) -> None:
        """
        A response still in the transport's buffer is unsent; L{flush} hands
        it to the kernel, and the connection may move.
        """
        c = LiveConnection(self)
        c.receive(request("/held"))
        c.resource.finishAll()
        self.assertEqual(whyNotMovable(stateOf(c.channel)), UNSENT)
        self.assertTrue(_movable.flush(c.transport))
        self.assertIsNone(whyNotMovable(stateOf(c.channel)))
        self.assertIn(b"HTTP/1.1 200 OK", c.peerReceived() or b"")

    def test_connectionClose(self) -> None:
        """
        A connection whose client asked to close is closing.
        """
        c = LiveConnection(self)
        c.receive(request("/", "Connection: close\r\n"))
        self.assertEqual(whyNotMovable(stateOf(c.channel)), CLOSING)

    def test_aborting(self) -> None:
        """
        A connection being aborted is closing.
        """
        c = LiveConnection(self)
        c.transport.abortConnection()
        self.assertEqual(whyNotMovable(stateOf(c.channel)), CLOSING)

    def test_upgraded(self) -> None:
        """
        A channel whose C{dataReceived} belongs to another object (a
        WebSocket's wire protocol) is upgraded; the drain's own method on
        the channel is not.
        """
        c = LiveConnection(self)
        c.channel.dataReceived = c.channel.lineReceived
        self.assertIsNone(whyNotMovable(stateOf(c.channel)))
        c.channel.dataReceived = basic.LineReceiver().dataReceived
        self.assertEqual(whyNotMovable(stateOf(c.channel)), IS_UPGRADED)

    def test_http2(self) -> None:
        """
        A channel that is not an HTTP/1.1 channel is HTTP/2.
        """

        class H2Connection:
            transport = StringTransport()

        self.assertEqual(stateOf(H2Connection()).channel, HTTP2)

    def test_transportKinds(self) -> None:
        """
        Only Twisted's own TCP and UNIX server connections are sockets that
        may move; a TLS transport is TLS, whatever it wraps.
        """
        self.assertEqual(_movable.transportKind(object.__new__(tcp.Server)), TCP)
        self.assertEqual(_movable.transportKind(object.__new__(unix.Server)), UNIX)
        self.assertEqual(_movable.transportKind(StringTransport()), OTHER)
        self.assertEqual(_movable.transportKind(object.__new__(tcp.Client)), OTHER)
        tls = StringTransport()
        directlyProvides(tls, ISSLTransport)
        self.assertEqual(_movable.transportKind(tls), TLS)
        started = object.__new__(tcp.Server)
        started.TLS = True
        self.assertEqual(_movable.transportKind(started), TLS)


class DetachTests(SynchronousTestCase):
    """
    L{_movable.detach} closes this process's descriptor of a connection
    without a byte on the wire and tells the drain it moved.
    """

    def test_nothingSent(self) -> None:
        """
        While another descriptor of the socket is open (the successor's), the
        client sees neither data nor end of file; the drain counts the
        connection gone, not aborted.
        """
        c = LiveConnection(self)
        fileno = c.transport.fileno()
        successors = os.dup(fileno)
        self.addCleanup(os.close, successors)
        lost: list[Failure] = []
        c.channel.connectionLost = lost.append
        _movable.detach(c.transport)
        self.assertIsNone(c.peerReceived())
        self.assertEqual(len(lost), 1)
        self.assertIsInstance(lost[0].value, ConnectionMoved)
        self.assertIsInstance(lost[0].value, error.ConnectionDone)
        self.assertRaises(OSError, os.fstat, fileno)
        self.assertEqual(c.factory.connectionCount(), 0)
        self.assertNotIn(c.transport, c.clock.readers)
        # The successor's descriptor still serves the client.
        os.write(successors, b"still here")
        self.assertEqual(c.peerReceived(), b"still here")

    def test_plainCloseWouldEnd(self) -> None:
        """
        The control: Twisted's own close of the same connection ends it for
        the client though another descriptor of the socket is open
        (C{shutdown(2)}), which is why L{_movable.detach} is needed.
        """
        c = LiveConnection(self)
        successors = os.dup(c.transport.fileno())
        self.addCleanup(os.close, successors)
        c.transport.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(c.peerReceived(), b"")


class FakeSender:
    """
    A hand-off sender that records offers; the test answers them.
    """

    def __init__(self) -> None:
        self.open = True
        self.offers: list[tuple[str, int, int, Callable[[], None], Callable[[str], None]]] = []
        self.accept = True

    def offer(
        self, identity: str, family: int, fileno: int, taken: Callable[[], None], refused: Callable[[str], None]
    ) -> bool:
        if not self.accept:
            return False
        self.offers.append((identity, family, fileno, taken, refused))
        return True


class EndpointMoverTests(SynchronousTestCase):
    """
    L{EndpointMover} offers a movable connection, reading nothing from it
    until the successor answers.
    """

    def setUp(self) -> None:
        self.c = LiveConnection(self)
        self.sender = FakeSender()
        self.mover = EndpointMover(self.sender, "unix:/x", socket.AF_UNIX)
        self.refused: list[None] = []

    def test_offerTaken(self) -> None:
        """
        An idle connection is offered with its descriptor, stops being read,
        and once taken is gone from this process, nothing sent.
        """
        self.assertTrue(self.mover.offer(self.c.channel, lambda: self.refused.append(None)))
        [(identity, family, fileno, taken, refused)] = self.sender.offers
        self.assertEqual((identity, family, fileno), ("unix:/x", socket.AF_UNIX, self.c.transport.fileno()))
        self.assertNotIn(self.c.transport, self.c.clock.readers)
        successors = os.dup(fileno)
        self.addCleanup(os.close, successors)
        taken()
        self.assertTrue(self.c.transport.disconnected)
        self.assertIsNone(self.c.peerReceived())
        self.assertEqual(self.refused, [])

    def test_offerRefused(self) -> None:
        """
        A connection refused is read again, with its timeout back, and the
        drain hears of it.
        """
        timeout = self.c.channel.timeOut
        self.assertTrue(self.mover.offer(self.c.channel, lambda: self.refused.append(None)))
        self.assertIsNone(self.c.channel.timeOut)
        self.sender.offers[0][4]("limit")
        self.assertIn(self.c.transport, self.c.clock.readers)
        self.assertEqual(self.c.channel.timeOut, timeout)
        self.assertEqual(self.refused, [None])
        self.assertFalse(self.c.transport.disconnected)

    def test_flushesFirst(self) -> None:
        """
        A response still buffered is handed to the kernel before the offer.
        """
        self.c.receive(request("/held"))
        self.c.resource.finishAll()
        self.assertTrue(self.mover.offer(self.c.channel, lambda: None))
        self.assertIn(b"200 OK", self.c.peerReceived() or b"")

    def test_notMovable(self) -> None:
        """
        A connection that may not move is not offered and is left as it was.
        """
        self.c.receive(request("/held"))
        self.assertFalse(self.mover.offer(self.c.channel, lambda: None))
        self.assertEqual(self.sender.offers, [])
        self.assertIn(self.c.transport, self.c.clock.readers)

    def test_channelClosed(self) -> None:
        """
        Once the sender takes no more offers, nothing moves, and a response
        must say C{Connection: close} again.
        """
        self.assertTrue(self.mover.mayMove(self.c.channel))
        self.sender.open = False
        self.assertFalse(self.mover.mayMove(self.c.channel))
        self.assertFalse(self.mover.offer(self.c.channel, lambda: None))

    def test_offerFails(self) -> None:
        """
        An offer the sender cannot take leaves the connection read as before.
        """
        self.sender.accept = False
        self.assertFalse(self.mover.offer(self.c.channel, lambda: None))
        self.assertIn(self.c.transport, self.c.clock.readers)
        self.assertIsNotNone(self.c.channel.timeOut)

    def test_mayMoveInFlight(self) -> None:
        """
        A connection with a request in flight will move after its response:
        that response need not close it.
        """
        self.c.receive(request("/held"))
        self.assertTrue(self.mover.mayMove(self.c.channel))
        self.c.receive(b"")
        self.c.channel.persistent = False
        self.assertFalse(self.mover.mayMove(self.c.channel))


class PrivateTwistedNamesTests(SynchronousTestCase):
    """
    The private Twisted names that L{twisted_graceful._movable} relies on
    still exist with the meaning it expects.  When one of these fails,
    Twisted has changed: update C{_movable.py}.
    """

    def test_writeBuffers(self) -> None:
        descriptor = abstract.FileDescriptor(reactor=MemoryReactorClock())
        self.assertEqual((descriptor.dataBuffer, descriptor.offset, descriptor._tempDataLen), (b"", 0, 0))
        descriptor.connected = True
        descriptor.write(b"abc")
        self.assertEqual(_movable.unsentBytes(descriptor), 3)

    def test_shouldShutdown(self) -> None:
        self.assertIs(tcp._SocketCloser._shouldShutdown, True)
        self.assertTrue(issubclass(unix.Server, tcp.Server))
        self.assertTrue(issubclass(tcp.Server, tcp._SocketCloser))

    def test_aborting(self) -> None:
        self.assertIs(tcp._AbortingMixin._aborting, False)

    def test_channelBuffers(self) -> None:
        channel = http.HTTPChannel()
        self.assertEqual((channel._buffer, channel._dataBuffer, channel._waitingForTransport), (b"", [], False))
