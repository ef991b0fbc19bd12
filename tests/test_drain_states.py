"""
Connection states the drain meets mid-way: a TLS connection that turns
HTTP/2 after the drain began, a WebSocket upgraded during the drain, timers
left after a WebSocket closes, and what an idle HTTP/2 connection counts.
"""
from __future__ import annotations

from typing import Any


from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from ._http import DrainHarness, RawClient, EchoResource, request
from .test_h2drain import H2Client
from .test_drain import _EchoFactory


class H2SwitchAfterDrain(SynchronousTestCase):
    """A TLS connection that negotiated h2 but sent nothing before the drain."""

    def drainingBeforeFirstBytes(self) -> tuple[DrainHarness, Any, RawClient, iosim.IOPump]:
        """
        A connection whose ALPN chose h2, draining for 0.2 s before its
        first bytes.
        """
        h = DrainHarness(idleGrace=0.5)
        from twisted.web import _http2, http

        self.patch(http, "H2Connection", lambda: _http2.H2Connection(h.clock))
        server = h.factory.buildProtocol(iosim.FakeAddress())
        raw = RawClient()
        transport = iosim.makeFakeServer(server)
        transport.negotiatedProtocol = b"h2"
        pump = iosim.connect(server, transport, raw, iosim.makeFakeClient(raw), clock=h.clock)
        h.pumps.append(pump)
        h.factory.drain(30.0)
        h.flush()
        h.clock.advance(0.2)
        return h, server, raw, pump

    def test_h2FirstBytesAfterDrain(self) -> None:
        h, server, raw, pump = self.drainingBeforeFirstBytes()
        client = H2Client(raw, pump, h.clock)  # preface now, after the drain began
        client.get(1, "/held")
        h.clock.advance(0.31)  # the old HTTP/1.1 channel's idle timer fires
        client.flush()
        h.resource.finishAll()
        client.flush()
        self.assertIsNone(raw.closed, "h2 connection with a stream in flight closed by the H1 idle timer")

    def test_h2FirstBytesAfterDrainNoGoaway(self) -> None:
        h, server, raw, pump = self.drainingBeforeFirstBytes()
        client = H2Client(raw, pump, h.clock)
        client.get(1, "/")  # fast request, answered
        h.clock.advance(0.29)
        client.flush()
        h.clock.advance(0.02)
        client.flush()


class WebSocketDuringDrain(SynchronousTestCase):
    def setUp(self) -> None:
        from twisted.web.websocket import WebSocketResource

        held = EchoResource()
        root = Resource()
        root.putChild(b"held", held)
        root.putChild(b"", held)
        root.putChild(b"ws", WebSocketResource(_EchoFactory()))
        self.h = DrainHarness(site=Site(root), idleGrace=0.1)
        self.h.site.reactor = self.h.clock

    def test_upgradeDuringDrainNeverClosed(self) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        ws = WSConnection(ConnectionType.CLIENT)
        client, pump = self.h.connect()
        self.h.send(pump, request("/held/x"))  # keep-alive answered
        self.h.resource.finishAll()
        self.h.flush()
        client.received = b""
        d = self.h.factory.drain(30.0)
        self.h.flush()
        self.h.clock.advance(0.05)  # within the grace
        self.h.send(pump, ws.send(Request(host="test", target="/ws")))
        ws.receive_data(client.received)
        client.received = b""
        list(ws.events())
        self.h.clock.advance(29.9)
        self.h.flush()
        ws.receive_data(client.received)
        self.h.clock.advance(0.2)
        self.h.flush()
        r = self.successResultOf(d)
        self.assertEqual(r.abortedConnections, 0)

    def test_stuckTimerLeaksAfterCleanClose(self) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request, CloseConnection

        ws = WSConnection(ConnectionType.CLIENT)
        client, pump = self.h.connect()
        self.h.send(pump, ws.send(Request(host="test", target="/ws")))
        ws.receive_data(client.received)
        client.received = b""
        list(ws.events())
        self.h.factory.drain(30.0)
        self.h.flush()
        ws.receive_data(client.received)
        for ev in ws.events():
            if isinstance(ev, CloseConnection):
                self.h.send(pump, ws.send(ev.response()))
        self.h.flush()
        calls = self.h.clock.getDelayedCalls()
        self.assertEqual([c for c in calls if "closeStuck" in repr(c.func)], [])


class H2Counts(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = DrainHarness(idleGrace=0.5)
        from twisted.web import _http2, http

        self.patch(http, "H2Connection", lambda: _http2.H2Connection(self.h.clock))
        server = self.h.factory.buildProtocol(iosim.FakeAddress())
        raw = RawClient()
        st = iosim.makeFakeServer(server)
        st.negotiatedProtocol = b"h2"
        pump = iosim.connect(server, st, raw, iosim.makeFakeClient(raw), clock=self.h.clock)
        self.h.pumps.append(pump)
        self.raw = raw
        self.client = H2Client(raw, pump, self.h.clock)
        self.client.get(1)
        self.client.received()

    def test_idleH2CountsAsRequest(self) -> None:
        d = self.h.factory.drain(0.4)  # deadline before the idle grace
        self.h.clock.advance(0.4)
        self.client.flush()
        r = self.successResultOf(d)
        self.assertEqual((r.inFlight, r.abortedRequests), (0, 0))
