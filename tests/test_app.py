"""
Tests for L{twisted_graceful._app}.
"""

from __future__ import annotations

import sys
import types

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twisted_graceful import AppLoadError
from twisted_graceful._app import loadResource, loadWSGI


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        module = types.ModuleType("tg_fake_app")
        module.root = Resource()  # type: ignore[attr-defined]
        module.makeRoot = Resource  # type: ignore[attr-defined]
        module.notResource = 42  # type: ignore[attr-defined]
        module.returnsInt = lambda: 1  # type: ignore[attr-defined]
        module.needsArgs = lambda x: Resource()  # type: ignore[attr-defined]
        module.wsgi = lambda environ, start_response: []  # type: ignore[attr-defined]
        self.patch(sys, "modules", dict(sys.modules, tg_fake_app=module))

    def test_resource(self) -> None:
        self.assertIsInstance(loadResource("tg_fake_app.root"), Resource)

    def test_callable(self) -> None:
        """
        A zero-argument callable returning a resource is called.
        """
        self.assertIsInstance(loadResource("tg_fake_app.makeRoot"), Resource)

    def test_demo(self) -> None:
        self.assertIsInstance(loadResource("twisted_graceful.demo.resource"), Resource)

    def assertLoadError(self, dotted: str, *fragments: str, wsgi: bool = False) -> None:
        with self.assertRaises(AppLoadError) as caught:
            (loadWSGI if wsgi else loadResource)(dotted)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_missingModule(self) -> None:
        self.assertLoadError("no_such_module_xyz.root", "--app", "no module named 'no_such_module_xyz'")

    def test_missingAttribute(self) -> None:
        self.assertLoadError("tg_fake_app.nope", "has no attribute 'nope'")

    def test_notDotted(self) -> None:
        self.assertLoadError("root", "expected a dotted path")

    def test_notResource(self) -> None:
        self.assertLoadError("tg_fake_app.notResource", "not a twisted.web IResource", "--wsgi")

    def test_callableReturnsOther(self) -> None:
        self.assertLoadError("tg_fake_app.returnsInt", "returned 1")

    def test_callableNeedsArguments(self) -> None:
        self.assertLoadError("tg_fake_app.needsArgs", "no arguments")

    def test_importFailureInsideModule(self) -> None:
        """
        An exception raised while importing the module is reported with its
        type, message and location, not a traceback.
        """
        self.assertLoadError("tests.broken_app.root", "ZeroDivisionError", "broken_app.py, line")

    def test_wsgi(self) -> None:
        self.assertTrue(callable(loadWSGI("tg_fake_app.wsgi")))

    def test_wsgiGivenResource(self) -> None:
        self.assertLoadError("tg_fake_app.root", "use --app instead", wsgi=True)

    def test_wsgiNotCallable(self) -> None:
        self.assertLoadError("tg_fake_app.notResource", "not callable", wsgi=True)
