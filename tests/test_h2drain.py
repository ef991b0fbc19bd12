"""
Tests for L{twisted_graceful._h2drain}: the two-step GOAWAY, driven by a raw
HTTP/2 client over L{iosim}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._drain import isDraining
from twisted_graceful._h2drain import BUSY_BOUND, LINGER, MAX_STREAM_ID, PING_BOUND

from ._http import DrainHarness, EchoResource, RawClient

pytest.importorskip("h2", reason="twisted[http2] is not installed")

import hpack  # noqa: E402
from hyperframe.frame import (  # noqa: E402
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

DRAIN_TIMEOUT = 30.0
REFUSED_STREAM = 7
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384


class H2Client:
    """
    Writes HTTP/2 frames by hand and parses what the server sends, with no
    state machine of its own: it can do what a client does in a race.
    """

    def __init__(self, raw: RawClient, pump: iosim.IOPump, clock: Any) -> None:
        self.raw = raw
        self.pump = pump
        self.clock = clock
        self.encoder = hpack.Encoder()
        self.offset = 0
        self.frames: list[Any] = []
        self.connectionWindow = DEFAULT_WINDOW
        self.windowUpdates: list[int] = []
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> None:
        self.pump.client.transport.write(data)
        self.flush()

    def flush(self) -> None:
        # H2Connection sends stream data from a call on its reactor.
        for _ in range(5):
            self.pump.flush()
            self.clock.advance(0)

    def get(self, streamID: int, path: str = "/") -> None:
        frame = HeadersFrame(streamID)
        frame.data = self.encoder.encode(
            [(":method", "GET"), (":scheme", "https"), (":authority", "test"), (":path", path)]
        )
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        self.send(frame.serialize())

    def post(self, streamID: int, path: str = "/", body: int = 0, end: bool = True) -> None:
        """
        Open a stream with the headers of a POST, and C{body} bytes of DATA
        in the same write; the stream ends if C{end}.
        """
        frame = HeadersFrame(streamID)
        frame.data = self.encoder.encode(
            [(":method", "POST"), (":scheme", "https"), (":authority", "test"), (":path", path)]
        )
        frame.flags.add("END_HEADERS")
        self.send(frame.serialize() + self.data(streamID, body, end))

    def body(self, streamID: int, size: int, end: bool = True) -> None:
        """
        Send C{size} bytes of DATA on a stream, in one write.
        """
        self.received()
        self.send(self.data(streamID, size, end))

    def data(self, streamID: int, size: int, end: bool) -> bytes:
        """
        DATA frames carrying C{size} bytes, as far as the connection's
        flow-control window allows.
        """
        if size > self.connectionWindow:
            raise AssertionError(f"{size} bytes do not fit the connection window of {self.connectionWindow}")
        self.connectionWindow -= size
        data = b""
        for start in range(0, size, MAX_FRAME):
            frame = DataFrame(streamID, b"x" * min(MAX_FRAME, size - start))
            if end and start + MAX_FRAME >= size:
                frame.flags.add("END_STREAM")
            data += frame.serialize()
        return data

    def received(self) -> list[Any]:
        """
        The frames received since the last call, but SETTINGS and
        WINDOW_UPDATE.
        """
        self.flush()
        data = self.raw.received
        new = []
        while len(data) - self.offset >= 9:
            frame, length = Frame.parse_frame_header(memoryview(data[self.offset : self.offset + 9]))
            if len(data) - self.offset - 9 < length:
                break
            frame.parse_body(memoryview(data[self.offset + 9 : self.offset + 9 + length]))
            self.offset += 9 + length
            if isinstance(frame, WindowUpdateFrame) and frame.stream_id == 0:
                self.connectionWindow += frame.window_increment
                self.windowUpdates.append(frame.window_increment)
            if frame.type not in (SettingsFrame.type, WindowUpdateFrame.type):
                new.append(frame)
        self.frames += new
        return new

    def ackPing(self, ping: Any) -> None:
        self.send(PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]).serialize())


def summary(frames: list[Any]) -> list[tuple[str, int]]:
    """
    Each frame as (type, stream or last stream id), with END_STREAM noted
    and the DATA frames of one body as one.
    """
    out = []
    for frame in frames:
        if isinstance(frame, GoAwayFrame):
            out.append(("GOAWAY", frame.last_stream_id))
        elif isinstance(frame, PingFrame):
            out.append(("PING ACK" if "ACK" in frame.flags else "PING", 0))
        elif isinstance(frame, RstStreamFrame):
            out.append((f"RST_STREAM {frame.error_code}", frame.stream_id))
        elif isinstance(frame, HeadersFrame):
            out.append(("HEADERS", frame.stream_id))
        elif isinstance(frame, DataFrame):
            # One body, however many frames carry it.
            if out and out[-1] == ("DATA", frame.stream_id):
                out.pop()
            out.append(("DATA END" if "END_STREAM" in frame.flags else "DATA", frame.stream_id))
    return out


class TwoStepGoAwayTests(SynchronousTestCase):
    """
    An HTTP/2 connection drains with a PING and a GOAWAY naming 2^31-1, then,
    after the PING's acknowledgement, a GOAWAY naming the last stream
    received; every stream up to it completes.
    """

    def setUp(self) -> None:
        self.h = DrainHarness(idleGrace=0.5, resource=EchoResource())
        from twisted.web import _http2, http

        self.patch(http, "H2Connection", lambda: _http2.H2Connection(self.h.clock))
        server = self.h.factory.buildProtocol(iosim.FakeAddress())
        assert server is not None
        raw = RawClient()
        serverTransport = iosim.makeFakeServer(server)
        serverTransport.negotiatedProtocol = b"h2"  # what ALPN on TLS sets
        pump = iosim.connect(server, serverTransport, raw, iosim.makeFakeClient(raw), clock=self.h.clock)
        self.h.pumps.append(pump)
        self.raw = raw
        self.client = H2Client(raw, pump, self.h.clock)
        self.client.get(1)
        self.assertEqual(summary(self.client.received()), [("HEADERS", 1), ("DATA END", 1)])

    def drain(self) -> Any:
        d = self.h.factory.drain(DRAIN_TIMEOUT)
        self.h.flush()
        return d

    def test_quietConnection(self) -> None:
        """
        A connection quiet for longer than the idle grace gets the first
        GOAWAY as soon as the drain begins.
        """
        self.h.clock.advance(0.5)
        self.drain()
        self.assertEqual(summary(self.client.received()), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])

    def test_goAwayKeptAfterResume(self) -> None:
        """
        A connection sent its first GOAWAY by a drain that is then taken
        back goes on draining as it was: a later drain does not start a
        second one on it.
        """
        self.h.clock.advance(0.5)
        self.drain()
        [protocol] = self.h.factory._connections
        first = protocol._http2Drain
        self.h.factory.resume()
        self.drain()
        self.assertIs(protocol._http2Drain, first)
        self.assertEqual(summary(self.client.received()), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])

    def test_idleConnection(self) -> None:
        """
        A connection with no stream open gets the first GOAWAY once it has
        been quiet for the idle grace.  A stream the client opened before it
        read that GOAWAY is served; the final GOAWAY names it and the
        connection closes.
        """
        d = self.drain()
        self.h.clock.advance(0.49)
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.01)
        frames = self.client.received()
        self.assertEqual(summary(frames), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])
        self.client.get(3)  # already on its way
        self.assertEqual(summary(self.client.received()), [("HEADERS", 3), ("DATA END", 3)])
        self.assertIsNone(self.raw.closed)
        self.client.ackPing(frames[0])
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 3)])
        # The client may close first; if it does not, the server does.
        self.h.clock.advance(LINGER - 0.01)
        self.assertIsNone(self.raw.closed)
        self.h.clock.advance(0.01)
        self.client.flush()
        self.assertIsNotNone(self.raw.closed)
        result = self.successResultOf(d)
        self.assertEqual((result.completed, result.abortedConnections), (1, 0))

    def test_clientClosesFirst(self) -> None:
        """
        A client that closes the connection once it has read the final
        GOAWAY ends the drain at once.
        """
        d = self.drain()
        self.h.clock.advance(0.5)
        self.client.ackPing(self.client.received()[0])
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 1)])
        self.assertNoResult(d)
        self.client.pump.client.transport.loseConnection()
        self.client.flush()
        self.assertTrue(self.successResultOf(d).clean)

    def test_waitsForOpenStreams(self) -> None:
        """
        While a stream is open, no GOAWAY is sent (a client built on C{h2}
        would fail that stream); once the connection has been idle for the
        idle grace, the two steps follow.
        """
        self.client.get(3, "/held")
        (request,) = self.h.resource.held
        d = self.drain()
        self.assertTrue(isDraining(request))
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.4)
        self.h.resource.finishAll()
        self.assertEqual(summary(self.client.received()), [("HEADERS", 3), ("DATA END", 3)])
        # A client reads the end of the response before it is told.
        self.h.clock.advance(0.49)
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.01)
        frames = self.client.received()
        self.assertEqual(summary(frames), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])
        self.client.ackPing(frames[0])
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 3)])
        self.h.clock.advance(LINGER)
        self.client.flush()
        self.assertEqual(self.successResultOf(d).completed, 1)

    def test_busyConnectionAnnouncedAfterBound(self) -> None:
        """
        A connection that is never idle gets the first GOAWAY after
        L{BUSY_BOUND}, its open stream still completes after the last one.
        """
        self.client.get(3, "/held")
        d = self.drain()
        self.h.clock.advance(BUSY_BOUND - 0.01)
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.01)
        frames = self.client.received()
        self.assertEqual(summary(frames), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])
        self.client.ackPing(frames[0])
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 3)])
        self.assertIsNone(self.raw.closed)
        self.h.resource.finishAll()
        self.assertEqual(summary(self.client.received()), [("HEADERS", 3), ("DATA END", 3)])
        self.h.clock.advance(LINGER)
        self.client.flush()
        self.assertIsNotNone(self.raw.closed)
        self.assertTrue(self.successResultOf(d).clean)

    def test_busyBoundWithinDeadline(self) -> None:
        """
        With a short deadline, a busy connection is told to stop at half of
        it, so that its open streams can still complete.
        """
        self.client.get(3, "/held")
        self.h.factory.drain(4.0)
        self.h.flush()
        self.h.clock.advance(1.99)
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.01)
        self.assertEqual(summary(self.client.received()), [("PING", 0), ("GOAWAY", MAX_STREAM_ID)])

    def test_pingBound(self) -> None:
        """
        Without an acknowledgement, the final GOAWAY follows after
        L{PING_BOUND}.
        """
        d = self.drain()
        self.h.clock.advance(0.5)
        self.client.received()
        self.h.clock.advance(PING_BOUND - 0.01)
        self.assertEqual(self.client.received(), [])
        self.h.clock.advance(0.01)
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 1)])
        self.h.clock.advance(LINGER)
        self.client.flush()
        self.assertTrue(self.successResultOf(d).clean)

    def test_streamAfterFinalRefused(self) -> None:
        """
        A stream opened after the final GOAWAY is refused with
        C{REFUSED_STREAM} and never reaches the application.
        """
        self.client.get(3, "/held")
        self.drain()
        self.h.clock.advance(BUSY_BOUND)
        self.client.ackPing(self.client.received()[0])
        self.client.received()
        self.client.get(5, "/held")
        self.assertEqual(summary(self.client.received()), [(f"RST_STREAM {REFUSED_STREAM}", 5)])
        self.assertEqual(len(self.h.resource.held), 1)

    def test_refusedStreamDataAcknowledged(self) -> None:
        """
        The bodies of refused streams, sent with their headers or after the
        refusal, are handed back to the connection's flow-control window:
        once they have filled it, an earlier stream still open can send a
        body as large as the whole window and is answered.
        """
        self.client.post(3, end=False)
        d = self.drain()
        self.h.clock.advance(BUSY_BOUND)
        self.client.ackPing(self.client.received()[0])
        self.assertEqual(summary(self.client.received()), [("GOAWAY", 3)])
        # Headers and a body in one read; the rest of it after the refusal
        # (it was on its way); then a second refused stream: together they
        # fill the connection's window.
        self.client.post(5, body=40000, end=False)
        self.assertEqual(summary(self.client.received()), [(f"RST_STREAM {REFUSED_STREAM}", 5)])
        self.client.body(5, 5000)
        self.client.post(7, body=DEFAULT_WINDOW - 45000)
        self.assertIn((f"RST_STREAM {REFUSED_STREAM}", 7), summary(self.client.received()))
        # The refused bodies are handed back (h2 sends a WINDOW_UPDATE once
        # half the window is there to give).
        self.assertGreaterEqual(sum(self.client.windowUpdates), 40000)
        # Stream 3 sends a whole window's worth, as the window allows.
        remaining = DEFAULT_WINDOW
        for _ in range(10):
            self.client.received()
            size = min(remaining, self.client.connectionWindow)
            self.assertGreater(size, 0, "the connection's flow-control window stayed shut")
            remaining -= size
            self.client.body(3, size, end=not remaining)
            if not remaining:
                break
        frames = self.client.received()
        self.assertEqual(summary(frames), [("HEADERS", 3), ("DATA END", 3)])
        self.assertEqual(b"".join(f.data for f in frames if isinstance(f, DataFrame)), b"read %d" % (DEFAULT_WINDOW,))
        self.h.clock.advance(LINGER)
        self.client.flush()
        self.assertTrue(self.successResultOf(d).clean)


class PrivateTwistedNamesTests(SynchronousTestCase):
    """
    The private names of L{twisted.web._http2} the HTTP/2 drain relies on.
    """

    def test_h2Connection(self) -> None:
        from twisted.web._http2 import H2Connection

        connection = H2Connection()
        self.assertEqual(connection.streams, {})
        self.assertTrue(hasattr(connection.conn, "highest_inbound_stream_id"))
        self.assertTrue(callable(connection.conn.receive_data))
        self.assertTrue(callable(connection._requestDone))
        self.assertTrue(callable(connection._tryToWriteControlData))

