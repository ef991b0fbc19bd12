"""
Tests for L{twisted_graceful._limits}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request, Site

from twisted_graceful._limits import limitBodies

from ._http import DrainHarness, EchoResource, chunked, rawRequest

LIMIT = 1000


class Spy(Request):
    """
    Records the content file of every request, to see what was stored.
    """

    stored: list[object] = []

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        Spy.stored.append(self.content)


class BodyLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = DrainHarness(resource=EchoResource())
        limitBodies(self.h.site, LIMIT)

    def test_underLimit(self) -> None:
        """
        A body up to the limit, whole or chunked, reaches the resource.
        """
        client, pump = self.h.connect()
        self.h.send(pump, rawRequest("POST", body=b"x" * LIMIT))
        self.h.send(pump, rawRequest("POST", headers="Transfer-Encoding: chunked\r\n") + chunked(b"y" * LIMIT))
        self.assertEqual(client.received.count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(client.received.endswith(b"read %d" % LIMIT))
        self.assertIsNone(client.closed)

    def test_contentLengthOverLimit(self) -> None:
        """
        A C{Content-Length} over the limit is answered 413 at once, before
        any of the body is read, and the connection closes; nothing is
        stored.
        """
        client, pump = self.h.connect()
        self.h.send(pump, b"PUT / HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000000\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), client.received)
        self.assertIn(b"Connection: close\r\n", client.received)
        self.assertTrue(client.received.endswith(b"larger than this server accepts.\n"))
        self.assertIsNotNone(client.closed)

    def test_chunkedOverLimit(self) -> None:
        client, pump = self.h.connect()
        self.h.send(pump, rawRequest("POST", headers="Transfer-Encoding: chunked\r\n") + chunked(b"z" * (LIMIT + 1)))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 "))
        self.assertNotIn(b"200 OK", client.received)
        self.assertIsNotNone(client.closed)

    def test_nothingOverLimitStored(self) -> None:
        """
        A refused C{Content-Length} never gets a content file; a chunked
        body stops being stored at the limit.
        """
        site = Site(EchoResource())
        site.requestFactory = Spy
        limitBodies(site, LIMIT)
        h = DrainHarness(site=site)
        Spy.stored = []
        _, pump = h.connect()
        h.send(pump, b"PUT / HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000000\r\n\r\n")
        self.assertEqual(Spy.stored, [])
        _, pump = h.connect()
        h.send(pump, rawRequest("POST", headers="Transfer-Encoding: chunked\r\n") + chunked(b"z" * 5 * LIMIT))
        [content] = Spy.stored
        content.seek(0, 2)  # type: ignore[attr-defined]
        self.assertLessEqual(content.tell(), LIMIT)  # type: ignore[attr-defined]

    def test_bad(self) -> None:
        self.assertRaises(ValueError, limitBodies, Site(EchoResource()), -1)
        site = Site(EchoResource())
        site.requestFactory = lambda *a: None  # type: ignore[assignment]
        self.assertRaises(TypeError, limitBodies, site, 1)


class SizeTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        from twisted_graceful._limits import parseSize

        for text, expected in [("0", 0), ("1048576", 1 << 20), ("512k", 512 << 10), ("10M", 10 << 20),
                               ("1GiB", 1 << 30), (" 2MB ", 2 << 20)]:
            self.assertEqual(parseSize(text), expected, text)
        for text in ["", "M", "-1", "1.5M", "10T", "ten"]:
            self.assertRaises(ValueError, parseSize, text)

    def test_option(self) -> None:
        """
        C{--max-request-body 1K} makes the served site answer larger bodies
        with 413; a bad size names the option.
        """
        from twisted_graceful.tap import Options, _makeSite

        options = Options()
        options.parseOptions(["--max-request-body", "1K"])
        self.assertEqual(options["max-request-body"], 1024)
        site = _makeSite(options, None, None)  # type: ignore[arg-type]
        self.assertEqual(site.requestFactory.maxBody, 1024)  # type: ignore[attr-defined]
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--max-request-body", "lots"])
        self.assertIn("--max-request-body: expected a size such as", str(caught.exception))
