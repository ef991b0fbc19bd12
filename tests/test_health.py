"""
Tests for L{twisted_graceful._health}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_graceful._health import HealthResource, HealthSite


class HealthTests(SynchronousTestCase):
    def test_servingThenDraining(self) -> None:
        """
        200 while serving, 503 once stopping, never cached.
        """
        stopping = [False]
        health = HealthResource(lambda: stopping[0])
        request = DummyRequest([b""])
        self.assertEqual(health.render_GET(request), b"serving\n")
        self.assertEqual(request.responseCode, None)
        stopping[0] = True
        request = DummyRequest([b""])
        self.assertEqual(health.render_GET(request), b"draining\n")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_siteRoutesHealthPath(self) -> None:
        """
        The health path is answered before the application's tree; other
        paths reach the application.
        """
        app = HealthResource(lambda: True)
        health = HealthResource(lambda: False)
        site = HealthSite(app, b"/healthz", health)
        request = DummyRequest([b"healthz"])
        request.path = b"/healthz"
        self.assertIs(site.getResourceFor(request), health)
        other = DummyRequest([b"other"])
        other.path = b"/other"
        self.assertIsNot(site.getResourceFor(other), health)
