"""
Tests for L{twisted_graceful.demo}.
"""

from __future__ import annotations

import json
import os

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest

from twisted_graceful.demo import EVENT_INTERVAL, DemoResource

from ._http import AT_LEAST_IDLE_GRACE, DrainHarness, request


def get(path: bytes, accept: bytes | None = None, **args: bytes) -> DummyRequest:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.path = path
    request.args = {k.encode(): [v] for k, v in args.items()}
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    return request


class FakeService:
    """
    What the demo asks of the L{GracefulService} serving it.
    """

    def __init__(self, generation: int, stopping: bool) -> None:
        self.generation = generation
        self.stopping = stopping


BROWSER_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class DemoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.demo = DemoResource(self.clock)

    def test_index(self) -> None:
        body = self.demo.render_GET(get(b"/"))
        assert isinstance(body, bytes)
        self.assertIn(f"pid: {os.getpid()}".encode(), body)

    def test_indexText(self) -> None:
        """
        A client that does not ask for HTML (curl) gets the status as text:
        pid, generation, start time and state.
        """
        self.demo.service = FakeService(generation=3, stopping=False)
        body = self.demo.render_GET(get(b"/", accept=b"*/*"))
        assert isinstance(body, bytes)
        text = body.decode()
        for line in [f"pid: {os.getpid()}", "generation: 3", "state: serving", "started: 20"]:
            self.assertIn(line, text)

    def test_indexDraining(self) -> None:
        """
        Once the service stops, the state is C{draining}.
        """
        self.demo.service = FakeService(generation=1, stopping=True)
        body = self.demo.render_GET(get(b"/"))
        assert isinstance(body, bytes)
        self.assertIn(b"state: draining", body)

    def test_indexHTML(self) -> None:
        """
        A browser gets a page showing the status, with the reload
        instructions, following C{/events}; the Host header is escaped.
        """
        self.demo.service = FakeService(generation=2, stopping=False)
        request = get(b"/", accept=BROWSER_ACCEPT)
        request.requestHeaders.setRawHeaders(b"host", [b"<b>evil</b>:80"])
        body = self.demo.render_GET(request)
        assert isinstance(body, bytes)
        page = body.decode()
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertIn(f'<dd id="pid">{os.getpid()}</dd>', page)
        self.assertIn('<dd id="generation">2</dd>', page)
        self.assertIn('<span id="state">serving</span>', page)
        self.assertIn('new EventSource("/events")', page)
        self.assertIn("twisted-graceful reload --pidfile app.pid", page)
        self.assertIn("&lt;b&gt;evil&lt;/b&gt;:80/slow?seconds=5", page)
        self.assertNotIn("<b>evil", page)
        self.assertNotIn("{pid}", page)

    def test_unknownPaths(self) -> None:
        """
        Paths the demo does not serve answer 404, C{/healthz} (without
        C{--health}) and C{/favicon.ico} included.
        """
        for path in [b"/favicon.ico", b"/healthz", b"/nope", b"/slow/extra"]:
            request = get(path)
            self.demo.render_GET(request)
            self.assertEqual(request.responseCode, 404, path)

    def test_events(self) -> None:
        """
        C{/events} sends the status at once and every second after.
        """
        request = get(b"/events")
        self.assertEqual(self.demo.render_GET(request), NOT_DONE_YET)
        self.clock.advance(EVENT_INTERVAL)
        events = [json.loads(line[6:]) for line in b"".join(request.written).decode().splitlines()
                  if line.startswith("data: ")]
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0], {"pid": os.getpid(), "generation": 1, "started": events[0]["started"],
                                     "state": "serving"})
        self.assertTrue(b"".join(request.written).startswith(b"retry: "))
        request.processingFailed(Failure(Exception("the browser went away")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_eventsEndAtDrain(self) -> None:
        """
        When the endpoint starts to drain, C{/events} sends a last status
        (C{draining}) and ends, so the browser reconnects (to the successor,
        at a restart); the drain does not wait for it.
        """
        harness = DrainHarness(site=Site(DemoResource(), reactor=None))
        harness.site.resource._clock = harness.clock
        client, pump = harness.connect()
        harness.send(pump, request("/events"))
        self.assertIn(b'"state": "serving"', client.received)
        drained = harness.factory.drain(30.0)
        harness.flush()
        self.assertIn(b'"state": "draining"', client.received)
        self.assertTrue(client.received.endswith(b"0\r\n\r\n"), client.received[-40:])
        harness.clock.advance(AT_LEAST_IDLE_GRACE)
        harness.flush()
        self.assertEqual(self.successResultOf(drained).abortedRequests, 0)

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
