"""
Tests for L{twisted_graceful._h2drain}: the two-step GOAWAY, driven by a raw
HTTP/2 client over L{iosim}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._drain import isDraining
from twisted_graceful._h2drain import BUSY_BOUND, LINGER, MAX_STREAM_ID, PING_BOUND

from ._http import DrainHarness, EchoResource

pytest.importorskip("h2", reason="twisted[http2] is not installed")

from ._h2 import DEFAULT_WINDOW, REFUSED_STREAM, H2Client, connectH2, dataOf, summary  # noqa: E402, F401

DRAIN_TIMEOUT = 30.0


class TwoStepGoAwayTests(SynchronousTestCase):
    """
    An HTTP/2 connection drains with a PING and a GOAWAY naming 2^31-1, then,
    after the PING's acknowledgement, a GOAWAY naming the last stream
    received; every stream up to it completes.
    """

    def setUp(self) -> None:
        self.h = DrainHarness(idleGrace=0.5, resource=EchoResource())
        self.client = connectH2(self, self.h)
        self.raw = self.client.raw
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
        self.assertEqual(dataOf(frames, 3), b"read %d" % (DEFAULT_WINDOW,))
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

