"""
A raw HTTP/2 client for the tests, wired to a L{DrainHarness} with L{iosim}.
Import it only after C{pytest.importorskip("h2")}.
"""

from __future__ import annotations

from typing import Any

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from ._http import DrainHarness, RawClient

REFUSED_STREAM = 7
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384


def connectH2(case: SynchronousTestCase, h: DrainHarness) -> H2Client:
    """
    Connect an L{H2Client} to C{h}'s factory, as if ALPN on TLS had chosen
    HTTP/2, with the server's L{H2Connection} on C{h}'s clock.
    """
    from twisted.web import _http2, http

    case.patch(http, "H2Connection", lambda: _http2.H2Connection(h.clock))
    server = h.factory.buildProtocol(iosim.FakeAddress())
    assert server is not None
    raw = RawClient()
    serverTransport = iosim.makeFakeServer(server)
    serverTransport.negotiatedProtocol = b"h2"  # what ALPN on TLS sets
    pump = iosim.connect(server, serverTransport, raw, iosim.makeFakeClient(raw), clock=h.clock)
    h.pumps.append(pump)
    return H2Client(raw, pump, h.clock)


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
        self.decoder = hpack.Decoder()
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

    def post(
        self, streamID: int, path: str = "/", body: int = 0, end: bool = True, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """
        Open a stream with the headers of a POST (and C{headers}), and
        C{body} bytes of DATA in the same write; the stream ends if C{end}.
        """
        frame = HeadersFrame(streamID)
        frame.data = self.encoder.encode(
            [(":method", "POST"), (":scheme", "https"), (":authority", "test"), (":path", path)] + (headers or [])
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


def dataOf(frames: list[Any], streamID: int) -> bytes:
    """
    The bytes the DATA frames of one stream carry.
    """
    return b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == streamID)
