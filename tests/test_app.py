"""
Tests for L{twisted_graceful._app}.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twisted_graceful import AppLoadError
from twisted_graceful._app import loadResource, loadWSGI


def _raises() -> Resource:
    raise RuntimeError("no database at db.example:5432")


def _needsWsproto() -> Resource:
    raise ModuleNotFoundError("No module named 'wsproto'", name="wsproto")


def _innerTypeError() -> Resource:
    return len(1)  # type: ignore[arg-type,return-value]


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        module = types.ModuleType("tg_fake_app")
        module.root = Resource()  # type: ignore[attr-defined]
        module.makeRoot = Resource  # type: ignore[attr-defined]
        module.notResource = 42  # type: ignore[attr-defined]
        module.returnsInt = lambda: 1  # type: ignore[attr-defined]
        module.needsArgs = lambda x: Resource()  # type: ignore[attr-defined]
        module.wsgi = lambda environ, start_response: []  # type: ignore[attr-defined]
        module.raises = _raises  # type: ignore[attr-defined]
        module.needsWsproto = _needsWsproto  # type: ignore[attr-defined]
        module.innerTypeError = _innerTypeError  # type: ignore[attr-defined]
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

    def test_callableRaises(self) -> None:
        """
        A callable that raises gives one line naming the option, the
        exception and where it was raised; the exception is the cause.
        """
        with self.assertRaises(AppLoadError) as caught:
            loadResource("tg_fake_app.raises")
        message = str(caught.exception)
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertIn(
            "--app 'tg_fake_app.raises': calling it raised RuntimeError: no database at db.example:5432 (", message
        )
        self.assertIn("test_app.py, line", message)
        self.assertIsInstance(caught.exception.__cause__, RuntimeError)

    def test_callableRaisesTypeError(self) -> None:
        """
        A L{TypeError} raised inside a callable that takes no arguments is
        reported as what it is, not as a call with the wrong arguments.
        """
        self.assertLoadError("tg_fake_app.innerTypeError", "calling it raised TypeError")

    def test_callableNeedsExtra(self) -> None:
        """
        A callable that needs a package of an extra names the extra.
        """
        self.assertLoadError(
            "tg_fake_app.needsWsproto",
            "--app 'tg_fake_app.needsWsproto' needs WebSockets",
            "pip install 'twisted-graceful[websocket]'",
        )

    def test_importNeedsExtra(self) -> None:
        """
        A module whose import needs a package of an extra names the extra.
        """
        (Path.cwd() / "tg_needs_tls.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'OpenSSL'\", name='OpenSSL')\n"
        )
        self.patch(sys, "path", [str(Path.cwd()), *sys.path])
        self.addCleanup(sys.modules.pop, "tg_needs_tls", None)
        self.assertLoadError("tg_needs_tls.root", "--app: 'tg_needs_tls' needs TLS", "twisted-graceful[tls]")

    def test_wsgi(self) -> None:
        self.assertTrue(callable(loadWSGI("tg_fake_app.wsgi")))

    def test_wsgiGivenResource(self) -> None:
        self.assertLoadError("tg_fake_app.root", "use --app instead", wsgi=True)

    def test_wsgiNotCallable(self) -> None:
        self.assertLoadError("tg_fake_app.notResource", "not callable", wsgi=True)
