"""
Tests for L{twisted_graceful.tap}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.wsgi import WSGIResource

from twisted_graceful import GracefulSiteService
from twisted_graceful.demo import DemoResource
from twisted_graceful.tap import Options, makeService

from ._fakes import patchStatic
from .test_service import FakeBinder


def wsgiApp(environ: object, start_response: object) -> list[bytes]:
    return [b""]


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def assertUsageError(self, args: list[str], *fragments: str) -> None:
        """
        The options are refused with one message that starts with the
        command and contains C{fragments}, not twistd's whole usage text.
        """
        with self.assertRaises(SystemExit) as caught:
            self.parse(*args)
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("twistd graceful: "), message)
        self.assertEqual(len(message.splitlines()), 2)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_defaults(self) -> None:
        """
        With no options, the demo app is served on port 8080 with a 30 s
        deadline.
        """
        options = self.parse()
        self.assertEqual(options["ports"], ["8080"])
        self.assertIsInstance(options["resource"], DemoResource)
        self.assertEqual(options["shutdown-timeout"], 30.0)

    def test_severalPorts(self) -> None:
        options = self.parse("--port", "8080", "-p", "unix:/tmp/tg.sock")
        self.assertEqual(options["ports"], ["8080", "unix:/tmp/tg.sock"])

    def test_app(self) -> None:
        self.assertIsInstance(self.parse("--app", "twisted_graceful.demo.resource")["resource"], DemoResource)

    def test_wsgi(self) -> None:
        self.assertIsInstance(self.parse("--wsgi", "tests.test_tap.wsgiApp")["resource"], WSGIResource)

    def test_appAndWSGI(self) -> None:
        self.assertUsageError(
            ["--app", "twisted_graceful.demo.resource", "--wsgi", "tests.test_tap.wsgiApp"],
            "--app and --wsgi cannot be used together",
        )

    def test_badApp(self) -> None:
        self.assertUsageError(["--app", "nosuchmodule_tg.root"], "--app", "no module named")

    def test_badPort(self) -> None:
        self.assertUsageError(["--port", "tcp:notaport"], "--port", "Invalid endpoint description")

    def test_samePortTwice(self) -> None:
        self.assertUsageError(["--port", "8080", "--port", "tcp:8080"], "name the same address")

    def test_badTimeout(self) -> None:
        self.assertUsageError(["--shutdown-timeout", "soon"], "--shutdown-timeout takes a number")
        self.assertUsageError(["--shutdown-timeout", "-1"], "zero or more")

    def test_accessLogConflict(self) -> None:
        self.assertUsageError(["--access-log", "a.log", "--no-access-log"], "cannot be used together")


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.binder = FakeBinder()
        patchStatic(self, GracefulSiteService, "_bindSocket", self.binder)

    def test_endpointPerPort(self) -> None:
        """
        Each --port becomes its own endpoint service with the deadline, bound
        before twistd daemonizes.
        """
        options = Options()
        options.parseOptions(["--port", "8080", "--port", "8081", "--shutdown-timeout", "7"])
        service = makeService(options)
        endpoints = service.endpoints()
        self.assertEqual([e.address.description for e in endpoints], ["8080", "8081"])
        self.assertEqual([e.shutdownTimeout for e in endpoints], [7.0, 7.0])
        self.assertEqual(len(self.binder.bound), 2)

    def test_portInUse(self) -> None:
        """
        An address in use ends the command with one line naming it.
        """
        self.binder.failFor.add("tcp:8081:interface=0.0.0.0")
        options = Options()
        options.parseOptions(["--port", "8080", "--port", "8081"])
        with self.assertRaises(SystemExit) as caught:
            makeService(options)
        self.assertEqual(
            str(caught.exception.code),
            "twistd graceful: Cannot listen on 8081: address already in use.",
        )
        self.assertTrue(self.binder.bound[0].closed)
