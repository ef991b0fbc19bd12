"""
Tests for L{twisted_graceful._limits} over HTTP/2.
"""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request, Site

from twisted_graceful._limits import limitBodies

from ._http import DrainHarness, EchoResource

pytest.importorskip("h2", reason="twisted[http2] is not installed")

from ._h2 import connectH2, dataOf, summary  # noqa: E402

LIMIT = 1000


class Spy(Request):
    """
    Records the length each request was given, before any limit.
    """

    lengths: list[int | None] = []

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        Spy.lengths.append(length)


class HTTP2BodyLimitTests(SynchronousTestCase):
    """
    Over HTTP/2, a body over the limit is answered 413 on its stream; the
    connection and its other streams go on.
    """

    def setUp(self) -> None:
        self.h = DrainHarness(resource=EchoResource())
        limitBodies(self.h.site, LIMIT)
        self.client = connectH2(self, self.h)

    def answer(self, streamID: int) -> tuple[list[tuple[str, int]], dict[bytes, bytes], bytes]:
        frames = self.client.received()
        headers = {}
        for frame in frames:
            if frame.type == 0x01 and frame.stream_id == streamID:
                headers = dict(self.client.decoder.decode(frame.data, raw=True))
        return summary(frames), headers, dataOf(frames, streamID)

    def test_underLimit(self) -> None:
        """
        A body up to the limit, with or without C{content-length}, reaches
        the resource.
        """
        self.client.post(1, body=LIMIT, headers=[("content-length", str(LIMIT))])
        self.client.post(3, body=LIMIT)
        frames = self.client.received()
        self.assertEqual(dataOf(frames, 1), b"read %d" % (LIMIT,))
        self.assertEqual(dataOf(frames, 3), b"read %d" % (LIMIT,))

    def test_contentLengthOverLimit(self) -> None:
        """
        A C{content-length} over the limit is answered 413 once the stream
        ends; the body is discarded, and the connection serves the next
        stream.
        """
        size = 10 * LIMIT
        self.client.post(1, body=size, headers=[("content-length", str(size))])
        frames, headers, body = self.answer(1)
        self.assertEqual(frames, [("HEADERS", 1), ("DATA END", 1)])
        self.assertEqual(headers[b":status"], b"413")
        self.assertNotIn(b"connection", headers)  # forbidden in HTTP/2
        self.assertEqual(body, b"The request body is larger than this server accepts.\n")
        self.client.post(3, body=LIMIT)
        self.assertEqual(self.answer(3)[2], b"read %d" % (LIMIT,))
        self.assertIsNone(self.client.raw.closed)

    def test_streamedOverLimit(self) -> None:
        """
        A body without C{content-length} is answered 413 once the DATA
        received goes over the limit and the stream ends.
        """
        self.client.post(1, body=LIMIT, end=False)
        self.client.body(1, 1)
        frames, headers, body = self.answer(1)
        self.assertEqual(headers[b":status"], b"413")
        self.assertEqual(body, b"The request body is larger than this server accepts.\n")
        self.client.post(3, body=LIMIT)
        self.assertEqual(self.answer(3)[2], b"read %d" % (LIMIT,))
        self.assertIsNone(self.client.raw.closed)

    def test_contentLengthNothingStored(self) -> None:
        """
        A C{content-length} over the limit is refused from the headers:
        no content file is made for it, and none of the body is stored.
        """
        site = Site(EchoResource())
        site.requestFactory = Spy
        limitBodies(site, LIMIT)
        h = DrainHarness(site=site)
        client = connectH2(self, h)
        Spy.lengths = []
        client.post(1, body=LIMIT, headers=[("content-length", str(LIMIT))])
        client.post(3, body=50 * LIMIT, end=False, headers=[("content-length", str(10**10))])
        self.assertEqual(Spy.lengths, [LIMIT])
