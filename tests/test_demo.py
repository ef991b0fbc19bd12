"""
Tests for L{twisted_graceful.demo}.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twisted_graceful.demo import DemoResource


def get(path: bytes, **args: bytes) -> DummyRequest:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.path = path
    request.args = {k.encode(): [v] for k, v in args.items()}
    return request


class DemoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.demo = DemoResource(self.clock)

    def test_index(self) -> None:
        body = self.demo.render_GET(get(b"/"))
        assert isinstance(body, bytes)
        self.assertIn(f"pid: {os.getpid()}".encode(), body)

    def test_slow(self) -> None:
        """
        C{/slow?seconds=2} answers after two seconds of the clock.
        """
        request = get(b"/slow", seconds=b"2")
        self.assertEqual(self.demo.render_GET(request), NOT_DONE_YET)
        self.clock.advance(1.9)
        self.assertEqual(request.finished, 0)
        self.clock.advance(0.1)
        self.assertEqual(request.finished, 1)
        self.assertIn(b"after 2 s", b"".join(request.written))

    def test_slowBadSeconds(self) -> None:
        for value in (b"soon", b"-1", b"1000"):
            request = get(b"/slow", seconds=value)
            self.demo.render_GET(request)
            self.assertEqual(request.responseCode, 400)

    def test_slowCancelledWhenClientGoes(self) -> None:
        request = get(b"/slow", seconds=b"5")
        self.demo.render_GET(request)
        request.processingFailed(Failure(Exception("the client went away")))
        self.assertEqual(self.clock.getDelayedCalls(), [])
