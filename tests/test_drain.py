"""
Tests for L{twisted_graceful._drain}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_graceful._drain import (
    DrainingFactory,
    DrainResult,
    _DrainingHTTPChannel,
    _TrackedChannelProtocol,
    isDraining,
    whenDraining,
)
from twisted_graceful._errors import UnsupportedSite

from ._http import (
    AT_LEAST_IDLE_GRACE,
    DrainHarness,
    EchoResource,
    HeldResource,
    chunked,
    rawRequest,
    request,
)

DRAIN_TIMEOUT = 30.0
AT_LEAST_DRAIN_TIMEOUT = DRAIN_TIMEOUT + 1


class DrainTests(SynchronousTestCase):
    """
    L{DrainingFactory.drain} lets requests in flight finish and loses no
    request that arrives on a kept-alive connection.
    """

    def setUp(self) -> None:
        self.h = DrainHarness()

    def test_noConnections(self) -> None:
        """
        With no connection open, the drain ends at once.
        """
        result = self.successResultOf(self.h.factory.drain(DRAIN_TIMEOUT))
        self.assertEqual(result.connections, 0)
        self.assertTrue(result.clean)

    def test_stopsAccepting(self) -> None:
        """
        Once draining, the factory refuses connections the port still hands
        to it.
        """
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.assertIsNone(self.h.factory.buildProtocol(None))

    def test_inFlightRequestCompletes(self) -> None:
        """
        A request in flight when the drain begins completes with its whole
        body and C{Connection: close}; the drain ends only after the
        connection closes.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        self.assertEqual(len(self.h.resource.held), 1)
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.assertNoResult(d)
        self.h.resource.finishAll(b"slow body")
        self.h.flush()
        self.assertIn(b"HTTP/1.1 200 OK", client.received)
        self.assertIn(b"Connection: close", client.received)
        self.assertIn(b"slow body", client.received)
        self.assertIsNotNone(client.closed)
        result = self.successResultOf(d)
        self.assertEqual(
            (result.connections, result.inFlight, result.completed, result.abortedRequests),
            (1, 1, 1, 0),
        )

    def test_drainEndsOnLastResponse(self) -> None:
        """
        The drain ends when the last connection closes, with no time passing:
        it waits on the event, not on a timer.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        started = self.h.clock.seconds()
        self.h.resource.finishAll()
        self.h.flush()
        self.assertEqual(self.successResultOf(d).elapsed, self.h.clock.seconds() - started)
        self.assertEqual(self.h.clock.seconds(), started)

    def test_idleConnectionClosed(self) -> None:
        """
        A kept-alive connection that has been idle longer than the grace is
        closed as soon as the drain begins.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        self.assertEqual(self.successResultOf(d).completed, 0)

    def test_recentlyActiveConnectionClosedAfterGrace(self) -> None:
        """
        A kept-alive connection that answered a request just before the drain
        stays open for the rest of the grace, then closes.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        self.assertIsNone(client.closed)
        self.assertNoResult(d)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        self.successResultOf(d)

    def test_requestOnKeptAliveConnectionAnswered(self) -> None:
        """
        A request that arrives on a kept-alive connection during the drain is
        answered with C{Connection: close}, not reset.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.send(pump, request("/second"))
        responses = client.responses()
        self.assertEqual(len(responses), 2)
        self.assertNotIn(b"Connection: close", responses[0])
        self.assertIn(b"Connection: close", responses[1])
        self.assertIsNotNone(client.closed)
        self.assertEqual(self.successResultOf(d).completed, 1)

    def test_pipelinedRequestsAnswered(self) -> None:
        """
        Requests pipelined behind one in flight are all answered; only the
        last response carries C{Connection: close}.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held") + request("/a") + request("/b"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.resource.finishAll()
        self.h.flush()
        responses = client.responses()
        self.assertEqual(len(responses), 3)
        self.assertEqual([b"Connection: close" in r for r in responses], [False, False, True])
        self.assertEqual(self.successResultOf(d).completed, 3)

    def test_partialRequestGetsGrace(self) -> None:
        """
        A connection that has sent part of a request is not closed while
        bytes keep coming; the completed request is answered.
        """
        client, pump = self.h.connect()
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.send(pump, b"GET / HT")
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        self.assertIsNone(client.closed)
        self.h.send(pump, b"TP/1.1\r\nHost: test\r\n\r\n")
        self.assertIn(b"Connection: close", client.received)
        self.successResultOf(d)

    def test_responseStartedBeforeDrain(self) -> None:
        """
        A response whose headers went out before the drain cannot say
        C{Connection: close}; its connection is closed once idle for the
        grace after the response ends.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        held = self.h.resource.held[0]
        held.write(b"first chunk")
        self.h.flush()
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        held.finish()
        self.h.flush()
        self.assertIsNone(client.closed)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        self.assertTrue(self.successResultOf(d).clean)

    def test_deadlineAborts(self) -> None:
        """
        At the deadline, connections left are aborted and a warning names the
        endpoint and counts the requests cut.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.clock.advance(DRAIN_TIMEOUT - 0.001)
        self.assertNoResult(d)
        self.h.clock.advance(0.002)
        self.h.flush()
        self.assertIsNotNone(client.closed)
        result = self.successResultOf(d)
        self.assertEqual((result.abortedConnections, result.abortedRequests), (1, 1))
        self.assertFalse(result.clean)
        aborted = [e for e in events if e.get("phase") == "drain-aborted"]
        self.assertEqual(len(aborted), 1)
        self.assertEqual(
            (aborted[0]["endpoint"], aborted[0]["requests"], aborted[0]["log_level"].name),
            ("test", 1, "warn"),
        )

    def test_deadlineBetweenRequests(self) -> None:
        """
        A kept-alive connection reset at the deadline between two requests
        is counted as aborted, and the drain is not clean, though no request
        was cut; the log says so.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = DrainHarness(idleGrace=10.0)
        client, pump = h.connect()
        h.send(pump, request("/"))
        d = h.factory.drain(1.0)
        h.clock.advance(1.0)
        h.flush()
        self.assertIsNotNone(client.closed)
        result = self.successResultOf(d)
        self.assertEqual((result.abortedConnections, result.abortedRequests), (1, 0))
        self.assertFalse(result.clean)
        (finished,) = [e for e in events if e.get("phase") == "drain-finished"]
        self.assertIn("1 connections aborted", formatEvent(finished))

    def test_abortAllCutsShort(self) -> None:
        """
        L{DrainingFactory.abortAll} ends a drain at once and counts the cut.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.factory.abortAll()
        self.h.flush()
        self.assertEqual(self.successResultOf(d).abortedRequests, 1)

    def test_drainTwice(self) -> None:
        """
        A second call to L{DrainingFactory.drain} gets the same result.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        first = self.h.factory.drain(DRAIN_TIMEOUT)
        second = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.resource.finishAll()
        self.h.flush()
        result = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), result)
        self.assertIs(self.successResultOf(self.h.factory.drain(1)), result)

    def test_phaseEvents(self) -> None:
        """
        The drain emits one event when it starts and one when it ends, with
        its figures as fields.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.resource.finishAll()
        self.h.flush()
        self.successResultOf(d)
        started = [e for e in events if e.get("phase") == "drain-started"]
        finished = [e for e in events if e.get("phase") == "drain-finished"]
        self.assertEqual(
            (started[0]["connections"], started[0]["inFlight"], started[0]["timeout"]),
            (1, 1, DRAIN_TIMEOUT),
        )
        self.assertEqual((finished[0]["completed"], finished[0]["abortedRequests"]), (1, 0))
        self.assertIn("elapsed", finished[0])

    def test_whenDraining(self) -> None:
        """
        L{DrainingFactory.whenDraining} fires when the drain begins, or at once
        after; a cancelled waiter is forgotten.
        """
        before = self.h.factory.whenDraining()
        cancelled = self.h.factory.whenDraining()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        self.assertNoResult(before)
        self.h.factory.drain(DRAIN_TIMEOUT)
        self.assertIsNone(self.successResultOf(before))
        self.assertIsNone(self.successResultOf(self.h.factory.whenDraining()))

    def test_unreadResponseCounts(self) -> None:
        """
        A response stuck in a full transport buffer counts as in flight, so
        cutting it at the deadline is counted.
        """
        client, pump = self.h.connect()
        self.h.send(pump, request("/"))
        protocol = next(iter(self.h.factory._connections))
        protocol.currentChannel.pauseProducing()  # What a full transport does.
        self.assertEqual(self.h.factory.inFlightCount(), 1)
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        # The client reads nothing (no pump): the response stays unsent.
        self.h.clock.advance(AT_LEAST_DRAIN_TIMEOUT)
        self.h.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.abortedConnections, result.abortedRequests), (1, 1))
        self.assertFalse(result.clean)

    def test_counts(self) -> None:
        """
        The factory counts open connections and requests in flight.
        """
        client, pump = self.h.connect()
        self.h.connect()
        self.h.send(pump, request("/held"))
        self.assertEqual((self.h.factory.connectionCount(), self.h.factory.inFlightCount()), (2, 1))


_BODY = bytes(range(256)) * 256  # 64 KiB


class RequestShapeTests(SynchronousTestCase):
    """
    Whatever the shape of a request that arrives on a kept-alive connection
    during the drain, it is answered in full with C{Connection: close}, the
    connection closes after it, and the drain ends then, not at the deadline.
    """

    def setUp(self) -> None:
        self.h = DrainHarness(resource=EchoResource())
        self.client, self.pump = self.h.connect()
        # The connection is kept alive by an answered request.
        self.h.send(self.pump, request("/"))
        self.assertEqual(len(self.client.responses()), 1)
        self.drainStarted = self.h.clock.seconds()
        self.drained = self.h.factory.drain(DRAIN_TIMEOUT)

    def assertAnsweredAndClosed(self, expected: bytes, responses: int = 2) -> None:
        """
        The last response carries C{Connection: close} and C{expected} as its
        body, the connection is closed, and the drain ended with no time
        passing since the last request.
        """
        received = self.client.responses()
        self.assertEqual(len(received), responses, received)
        self.assertIn(b"Connection: close", received[-1])
        for earlier in received[:-1]:
            self.assertNotIn(b"Connection: close", earlier)
        self.assertTrue(received[-1].endswith(b"\r\n\r\n" + expected), received[-1])
        self.assertIsNotNone(self.client.closed, "the connection is still open")
        result = self.successResultOf(self.drained)
        self.assertEqual(
            (result.abortedConnections, result.elapsed),
            (0, self.h.clock.seconds() - self.drainStarted),
        )

    def test_get(self) -> None:
        self.h.send(self.pump, request("/second"))
        self.assertAnsweredAndClosed(b"fast")

    def test_head(self) -> None:
        self.h.send(self.pump, rawRequest("HEAD"))
        self.assertAnsweredAndClosed(b"")

    def test_postEmpty(self) -> None:
        self.h.send(self.pump, rawRequest("POST", headers="Content-Length: 0\r\n"))
        self.assertAnsweredAndClosed(b"read 0")

    def test_postContentLength(self) -> None:
        self.h.send(self.pump, rawRequest("POST", body=b"x" * 10))
        self.assertAnsweredAndClosed(b"read 10")

    def test_postChunked(self) -> None:
        self.h.send(
            self.pump,
            rawRequest("POST", headers="Transfer-Encoding: chunked\r\n") + chunked(_BODY[:3000]),
        )
        self.assertAnsweredAndClosed(b"read 3000")

    def test_put64KiB(self) -> None:
        self.h.send(self.pump, rawRequest("PUT", body=_BODY))
        self.assertAnsweredAndClosed(b"read 65536")

    def test_expectContinue(self) -> None:
        head = rawRequest("POST", headers=f"Content-Length: {len(_BODY)}\r\nExpect: 100-continue\r\n")
        self.h.send(self.pump, head)
        self.assertIn(b"HTTP/1.1 100 Continue", self.client.received)
        self.h.send(self.pump, _BODY)
        # The interim 100 response splits as a response of its own.
        self.assertAnsweredAndClosed(b"read 65536", responses=3)

    def test_pipelined(self) -> None:
        self.h.send(
            self.pump,
            rawRequest("POST", body=b"abc") + request("/third") + rawRequest("PUT", body=b"de"),
        )
        self.assertAnsweredAndClosed(b"read 2", responses=4)

    def test_uploadInProgress(self) -> None:
        """
        A body still arriving when the drain begins is read to its end and
        answered.
        """
        h = DrainHarness(resource=EchoResource())
        client, pump = h.connect()
        h.send(pump, rawRequest("PUT", body=_BODY)[: -len(_BODY) // 2])
        drained = h.factory.drain(DRAIN_TIMEOUT)
        h.clock.advance(AT_LEAST_IDLE_GRACE)  # a slow client
        h.send(pump, _BODY[-len(_BODY) // 2 :])
        (response,) = client.responses()
        self.assertIn(b"Connection: close", response)
        self.assertTrue(response.endswith(b"read 65536"))
        self.assertIsNotNone(client.closed)
        self.assertTrue(self.successResultOf(drained).clean)

    def test_keptBusy(self) -> None:
        """
        A client that sends a request with a body every 0.3 s does not keep
        the connection open: its first request after the drain began closes
        it.
        """
        for _ in range(3):
            if self.client.closed is not None:
                break
            self.h.clock.advance(0.3 * self.h.factory._idleGrace)
            self.h.send(self.pump, rawRequest("POST", body=b"tick"))
        self.assertAnsweredAndClosed(b"read 4")


class _Echo:
    """
    A WebSocket that echoes text, for L{twisted.web.websocket}.
    """

    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.transport.sendTextMessage(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        pass


class _EchoFactory:
    def buildProtocol(self, request: object) -> _Echo:
        return _Echo()


class ConnectionStateTests(SynchronousTestCase):
    """
    One connection's state or error never stops the drain of the others: it
    is logged and counted, and the drain goes on.
    """

    def setUp(self) -> None:
        try:
            from twisted.web.websocket import WebSocketResource
            from wsproto import ConnectionType, WSConnection
        except ImportError:
            raise unittest.SkipTest("twisted[websocket] is not installed")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        held = EchoResource()
        root = Resource()
        root.putChild(b"held", held)
        root.putChild(b"ws", WebSocketResource(_EchoFactory()))  # type: ignore[arg-type]
        self.h = DrainHarness(site=Site(root))
        self.h.resource = held
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.wsClient, self.wsPump = self.h.connect()

    def openWebSocket(self) -> None:
        from wsproto.events import AcceptConnection, Request

        self.h.send(self.wsPump, self.ws.send(Request(host="test", target="/ws")))
        self.ws.receive_data(self.wsClient.received)
        self.wsClient.received = b""
        self.assertIsInstance(next(self.ws.events()), AcceptConnection)

    def test_closedWebSocketWithOpenSocket(self) -> None:
        """
        A WebSocket whose close handshake is done but whose socket is still
        open (TLS waits for its own close) is left to close: no close frame
        is sent in the closed state, and the drain of a request in flight on
        another connection goes on to its end.
        """
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection

        self.openWebSocket()
        (wsServer,) = self.h.factory._connections
        transport = wsServer.currentChannel.transport
        # What a TLS transport does until the peer answers its close_notify.
        transport.loseConnection = lambda: None
        self.h.send(self.wsPump, self.ws.send(CloseConnection(code=1000)))
        self.ws.receive_data(self.wsClient.received)
        list(self.ws.events())
        self.assertEqual(self.ws.state, ConnectionState.CLOSED)
        self.wsClient.received = b""

        other, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        drained = self.h.factory.drain(DRAIN_TIMEOUT)
        self.assertEqual(self.wsClient.received, b"")
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])
        self.h.resource.finishAll(b"slow body")
        self.h.flush()
        self.assertIn(b"slow body", other.received)
        self.assertNoResult(drained)
        # The peer never closes its socket: after the idle grace the
        # connection is aborted; the WebSocket was closed, nothing is lost.
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(self.wsClient.closed)
        result = self.successResultOf(drained)
        self.assertEqual((result.completed, result.abortedConnections), (1, 0))

    def test_closeFrameUnanswered(self) -> None:
        """
        A WebSocket client that never answers the drain's close frame, on a
        socket that stays open, is aborted after the idle grace and counted.
        """
        self.openWebSocket()
        (wsServer,) = self.h.factory._connections
        wsServer.currentChannel.transport.loseConnection = lambda: None
        drained = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        self.assertNoResult(drained)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertEqual(self.successResultOf(drained).abortedConnections, 1)

    def test_openWebSocketClosedWithRestartCode(self) -> None:
        """
        An open WebSocket gets a close frame with 1012 (service restart) when
        the drain is part of a restart, and the drain ends when the client
        answers it.
        """
        from wsproto.events import CloseConnection

        self.openWebSocket()
        drained = self.h.factory.drain(DRAIN_TIMEOUT, restarting=True)
        self.h.flush()
        self.ws.receive_data(self.wsClient.received)
        (event,) = self.ws.events()
        self.assertIsInstance(event, CloseConnection)
        self.assertEqual(event.code, 1012)
        self.h.flush()
        self.assertTrue(self.successResultOf(drained).clean)

    def test_closingWebSocketStaysClosing(self) -> None:
        """
        A WebSocket sent its close frame by a drain that is then taken back
        stays closing: the drain of a later restart does not send another,
        and a peer that never answers is still cut after the idle grace.
        """
        from wsproto.events import CloseConnection

        self.openWebSocket()
        (wsServer,) = self.h.factory._connections
        wsServer.currentChannel.transport.loseConnection = lambda: None  # A socket that stays open.
        self.h.factory.drain(DRAIN_TIMEOUT, restarting=True)
        self.h.flush()
        self.h.factory.resume()
        self.h.factory.drain(DRAIN_TIMEOUT, restarting=True)
        self.h.flush()
        self.ws.receive_data(self.wsClient.received)
        self.assertEqual([type(e) for e in self.ws.events()], [CloseConnection])
        self.h.factory.resume()
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)
        self.h.flush()
        self.assertIsNotNone(self.wsClient.closed)

    def test_errorInOneConnection(self) -> None:
        """
        A connection that fails to start draining is logged, aborted and
        counted; the others drain as usual and the drain is not clean.
        """
        broken, brokenPump = self.h.connect()
        self.h.send(brokenPump, request("/held"))
        other, pump = self.h.connect()
        self.h.send(pump, request("/held"))
        brokenProtocol = [p for p in self.h.factory._connections if p.inFlight()][0]

        def explode() -> None:
            raise RuntimeError("a state nobody expected")

        brokenProtocol.startDraining = explode  # type: ignore[method-assign]
        drained = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        # The aborted connection's request learnt of its end.
        self.h.resource.held = [r for r in self.h.resource.held if not r._disconnected]
        self.h.resource.finishAll(b"slow body")
        self.h.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        (failed,) = [e for e in self.events if e.get("phase") == "drain-error"]
        self.assertEqual(failed["endpoint"], "test")
        self.assertIsNotNone(broken.closed)
        self.assertEqual(sum(b"slow body" in c.received for c in (broken, other)), 1)
        self.h.clock.advance(AT_LEAST_IDLE_GRACE)  # the idle one closes
        self.h.flush()
        result = self.successResultOf(drained)
        self.assertEqual((result.completed, result.abortedConnections, result.abortedRequests), (1, 1, 1))
        self.assertFalse(result.clean)

    def test_errorInOneAbort(self) -> None:
        """
        At the deadline, a connection whose abort fails does not keep the
        others from being aborted.
        """
        clients = []
        for _ in range(3):
            client, pump = self.h.connect()
            self.h.send(pump, request("/held"))
            clients.append(client)

        def explode() -> None:
            raise RuntimeError("abort failed")

        first = [p for p in self.h.factory._connections if p.inFlight()][0]
        first.abort = explode  # type: ignore[method-assign]
        drained = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.clock.advance(AT_LEAST_DRAIN_TIMEOUT)
        self.h.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(sum(c.closed is not None for c in clients), 2)
        self.assertNoResult(drained)
        self.assertEqual(self.h.factory.connectionCount(), 1)


class AccessLogTests(SynchronousTestCase):
    """
    The site stays started until the drain ends, so the access log records
    the responses completed while draining.
    """

    def test_siteStopsAfterDrain(self) -> None:
        clock = MemoryReactorClock()
        logged: list[bytes] = []
        stops: list[int] = []

        class RecordingSite(Site):
            def log(self, request: http.Request) -> None:
                logged.append(request.uri)

            def stopFactory(self) -> None:
                stops.append(len(logged))
                super().stopFactory()

        from ._http import HeldResource

        resource = HeldResource()
        h = DrainHarness(site=RecordingSite(resource, reactor=clock))
        h.resource = resource
        client, pump = h.connect()
        h.send(pump, request("/held"))
        h.factory.drain(DRAIN_TIMEOUT)
        h.factory.doStop()  # the listening port stopped
        self.assertEqual(stops, [])
        resource.finishAll()
        h.flush()
        self.assertEqual(logged, [b"/held"])
        self.assertEqual(stops, [1])

    def test_siteStopsAtOnceWithoutConnections(self) -> None:
        h = DrainHarness()
        h.factory.doStop()
        self.assertEqual(h.site.numPorts, 0)


class SiteCheckTests(SynchronousTestCase):
    """
    L{DrainingFactory} refuses a site whose protocol it cannot own, and
    leaves the site it serves as it found it.
    """

    def test_siteUntouched(self) -> None:
        """
        The factory does not change the site: one site can be served by two
        factories (two endpoints), each tracking and draining only its own
        connections.
        """
        clock = MemoryReactorClock()
        resource = HeldResource()
        site = Site(resource, reactor=clock)
        before = dict(vars(site))
        first = DrainHarness(site=site)
        second = DrainHarness(site=site)
        first.resource = second.resource = resource
        # Only what starting any site sets.
        self.assertEqual(set(vars(site)) - set(before), {"_logFile", "numPorts"})
        self.assertNotIn("protocol", vars(site))
        client1, pump1 = first.connect()
        client2, pump2 = second.connect()
        first.send(pump1, request("/held"))
        second.send(pump2, request("/held"))
        held1, held2 = resource.held
        self.assertEqual((first.factory.inFlightCount(), second.factory.inFlightCount()), (1, 1))
        self.assertIs(held1.channel.site, site)
        self.assertIs(held1.channel.requestFactory, site.requestFactory)

        draining = whenDraining(held2)
        first.factory.drain(DRAIN_TIMEOUT)
        self.assertTrue(isDraining(held1))
        self.assertFalse(isDraining(held2))
        self.assertNoResult(draining)
        resource.finishAll()
        first.flush()
        second.flush()
        self.assertIn(b"Connection: close", client1.received)
        self.assertNotIn(b"Connection: close", client2.received)
        self.assertIsNone(client2.closed)

    def test_protocolNegotiation(self) -> None:
        """
        The factory offers the site's protocols by ALPN, as the site would.
        """
        from twisted.internet.interfaces import IProtocolNegotiationFactory

        site = Site(Resource())
        factory = DrainingFactory(site, MemoryReactorClock())
        self.assertTrue(IProtocolNegotiationFactory.providedBy(factory))
        self.assertEqual(factory.acceptableProtocols(), site.acceptableProtocols())
        self.assertIn(b"http/1.1", factory.acceptableProtocols())

    def test_customBuildProtocol(self) -> None:
        class Custom(Site):
            def buildProtocol(self, addr: object) -> object:
                return super().buildProtocol(addr)

        with self.assertRaises(UnsupportedSite) as caught:
            DrainingFactory(Custom(Resource()), MemoryReactorClock())
        self.assertIn("custom 'buildProtocol'", str(caught.exception))

    def test_customProtocol(self) -> None:
        site = Site(Resource())
        site.protocol = http.HTTPChannel  # type: ignore[assignment]
        with self.assertRaises(UnsupportedSite) as caught:
            DrainingFactory(site, MemoryReactorClock())
        self.assertIn("custom 'protocol'", str(caught.exception))


class PrivateTwistedNamesTests(SynchronousTestCase):
    """
    The private Twisted names that L{twisted_graceful._drain} relies on still
    exist with the meaning it expects.  When one of these fails, Twisted has
    changed: update C{_drain.py}.
    """

    def test_genericChannelProtocol(self) -> None:
        site = Site(Resource())
        protocol = site.buildProtocol(None)
        self.assertIsInstance(protocol, http._GenericHTTPChannelProtocol)
        self.assertIsInstance(protocol._channel, http.HTTPChannel)
        self.assertIs(Site.protocol, http._genericHTTPChannelProtocolFactory)

    def test_siteBuildProtocol(self) -> None:
        """
        L{Site.buildProtocol} sets on the protocol exactly what
        L{DrainingFactory.buildProtocol} sets, to the same values.
        """
        clock = MemoryReactorClock()
        site = Site(Resource(), reactor=clock)
        built = site.buildProtocol(None)
        ours = DrainingFactory(site, clock).buildProtocol(None)
        names = ("_factory", "_callLater", "_timeOut", "_requestFactory", "_site")
        self.assertEqual({k for k in vars(built) if k != "_channel"}, set(names))
        for name in names:
            self.assertEqual(getattr(ours, name), getattr(built, name), name)
        self.assertEqual(
            {k: v for k, v in vars(ours._channel).items() if k != "_tracker"},
            vars(built._channel),
        )

    def test_waitingForTransport(self) -> None:
        channel = http.HTTPChannel()
        self.assertFalse(channel._waitingForTransport)

    def test_pipelineBuffers(self) -> None:
        channel = http.HTTPChannel()
        self.assertEqual(channel._dataBuffer, [])
        self.assertEqual(channel._buffer, b"")

    def test_trackedProtocolWrapsDrainingChannel(self) -> None:
        h = DrainHarness()
        protocol = h.factory.buildProtocol(None)
        self.assertIsInstance(protocol, _TrackedChannelProtocol)
        self.assertIsInstance(protocol.currentChannel, _DrainingHTTPChannel)


class DrainResultTests(SynchronousTestCase):
    def test_clean(self) -> None:
        """
        A drain is clean when nothing was aborted.
        """
        self.assertTrue(DrainResult("e", 1, 1, 1, 0, 0, 0.1).clean)
        self.assertFalse(DrainResult("e", 1, 1, 0, 1, 1, 0.1).clean)
