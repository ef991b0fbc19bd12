"""
Tests for L{twisted_graceful.tap}.
"""

from __future__ import annotations

import os
import re
import sys
from io import StringIO
from pathlib import Path

import twisted.test as twistedTests
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.wsgi import WSGIResource

from twisted_graceful import _logfile
from twisted_graceful._listener import Listener
from twisted_graceful.demo import DemoResource
from twisted_graceful.tap import Options, _importFromWorkingDirectory, makeService

from ._fakes import patchStatic
from .test_service import FakeBinder


def wsgiApp(environ: object, start_response: object) -> list[bytes]:
    return [b""]


def raisingApp() -> object:
    raise RuntimeError("settings.toml not found")


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(sys, "path", list(sys.path))

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
        # Twisted's own preamble to a coercer's message is not repeated.
        self.assertNotIn("enforcement", message)
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

    def test_workingDirectoryFirst(self) -> None:
        """
        A module in the working directory is found by C{--wsgi} (and
        C{--app}), from a command whose import path does not have it: the
        directory comes first on the path.
        """
        Path("tg_here_app.py").write_text("def app(environ, start_response):\n    return []\n")
        self.addCleanup(sys.modules.pop, "tg_here_app", None)
        sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
        self.assertIsInstance(self.parse("--wsgi", "tg_here_app.app")["resource"], WSGIResource)
        self.assertEqual(sys.path[0], os.getcwd())

    def test_workingDirectoryOnce(self) -> None:
        """
        The working directory is not added again when it is on the path,
        by name or as C{""}.
        """
        here = os.getcwd()
        for path in [["", "/lib"], ["/lib", here], ["/lib", here + "/"]]:
            copy = list(path)
            _importFromWorkingDirectory(copy)
            self.assertEqual(copy, path)
        path = ["/lib"]
        _importFromWorkingDirectory(path)
        self.assertEqual(path, [here, "/lib"])

    def test_appAndWSGI(self) -> None:
        self.assertUsageError(
            ["--app", "twisted_graceful.demo.resource", "--wsgi", "tests.test_tap.wsgiApp"],
            "--app and --wsgi cannot be used together",
        )

    def assertAppError(self, args: list[str], *fragments: str) -> str:
        """
        The application named is refused with one line that starts with the
        command and contains C{fragments}.
        """
        with self.assertRaises(SystemExit) as caught:
            self.parse(*args)
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("twistd graceful: "), message)
        self.assertEqual(len(message.splitlines()), 1, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_badApp(self) -> None:
        self.assertAppError(["--app", "nosuchmodule_tg.root"], "--app", "no module named")

    def test_appRaises(self) -> None:
        """
        An C{--app} callable that raises ends the command with one line that
        names the option and the cause.
        """
        self.assertAppError(
            ["--app", "tests.test_tap.raisingApp"],
            "--app 'tests.test_tap.raisingApp': calling it raised RuntimeError: settings.toml not found",
        )

    def test_appTracebackInLog(self) -> None:
        """
        With a log file, the traceback of an C{--app} that raised is written
        to it as a debug event.
        """
        self.patch(_logfile, "_target", None)
        options = Options()
        options.parent = {"logfile": "app.log", "nodaemon": True}  # type: ignore[attr-defined]
        with self.assertRaises(SystemExit):
            options.parseOptions(["--app", "tests.test_tap.raisingApp"])
        log = Path("app.log").read_text()
        self.assertIn("#debug] --app 'tests.test_tap.raisingApp': calling it raised RuntimeError", log)
        self.assertIn("Traceback", log)
        self.assertIn('raise RuntimeError("settings.toml not found")', log)

    def test_appNoTracebackOnTerminal(self) -> None:
        """
        With the log on the terminal (C{-n}), nothing but the one line is
        written.
        """
        self.patch(_logfile, "_target", None)
        self.patch(sys, "stdout", StringIO())
        options = Options()
        options.parent = {"nodaemon": True}  # type: ignore[attr-defined]
        with self.assertRaises(SystemExit):
            options.parseOptions(["--app", "tests.test_tap.raisingApp"])
        self.assertEqual(sys.stdout.getvalue(), "")

    def test_badPort(self) -> None:
        self.assertUsageError(["--port", "tcp:notaport"], "--port", "Invalid endpoint description")

    def test_samePortTwice(self) -> None:
        self.assertUsageError(["--port", "8080", "--port", "tcp:8080"], "name the same address")

    def test_badTimeout(self) -> None:
        self.assertUsageError(["--shutdown-timeout", "soon"], "--shutdown-timeout takes a number")
        self.assertUsageError(["--shutdown-timeout", "-1"], "zero or more")

    def test_recyclingValues(self) -> None:
        """
        The recycling limits take whole numbers, zero or more, and name the
        flag that was wrong.
        """
        for flag in ("--max-requests", "--max-requests-jitter", "--max-worker-memory"):
            self.assertUsageError(["--workers", "2", flag, "many"], f"{flag} takes a whole number", "'many'")
            self.assertUsageError(["--workers", "2", flag, "1.5"], f"{flag} takes a whole number")
            self.assertUsageError(["--workers", "2", flag, "-1"], f"{flag} must be zero (no limit) or more")

    def test_recyclingNeedsWorkers(self) -> None:
        """
        Recycling limits without C{--workers 2} or more, or a jitter without
        C{--max-requests}, are refused with the fix.
        """
        self.assertUsageError(["--max-requests", "100"], "--max-requests recycle", "--workers 2 or more")
        self.assertUsageError(["--workers", "2", "--max-requests-jitter", "5"], "give --max-requests too")
        options = self.parse("--workers", "2", "--max-requests", "100", "--max-requests-jitter", "5",
                             "--max-worker-memory", "300")
        self.assertEqual(
            (options["max-requests"], options["max-requests-jitter"], options["max-worker-memory"]), (100, 5, 300)
        )
        self.assertEqual(self.parse("--workers", "2")["max-requests"], 0)

    def test_metricsPath(self) -> None:
        """
        C{--metrics} takes a path of its own.
        """
        self.assertUsageError(["--metrics", "metrics"], "--metrics 'metrics': give a path that starts with /")
        self.assertUsageError(
            ["--metrics", "/healthz", "--health", "/healthz"], "--metrics and --health are both '/healthz'"
        )

    def test_accessLogConflict(self) -> None:
        self.assertUsageError(["--access-log", "a.log", "--no-access-log"], "cannot be used together")


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.binder = FakeBinder()
        patchStatic(self, Listener, "_bindSocket", self.binder)

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

    def test_recyclePolicy(self) -> None:
        """
        The supervisor's pool recycles by the options, memory in megabytes.
        """
        from twisted_graceful._supervisor import SupervisorService

        options = Options()
        options.parseOptions(["--workers", "2", "--max-requests", "100", "--max-requests-jitter", "5",
                              "--max-worker-memory", "300"])
        service = makeService(options)
        assert isinstance(service, SupervisorService)
        policy = service.poolCore.recycle
        self.assertEqual((policy.maxRequests, policy.jitter, policy.maxMemory), (100, 5, 300 * 2**20))

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

    def test_http2Advice(self) -> None:
        """
        Without HTTP/2 installed, a start with an C{ssl:} port says once
        that HTTP/1.1 only is served there, and what to install.
        """
        import twisted.web.http
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        pem = Path(twistedTests.__file__).parent / "server.pem"
        for enabled, expected in [(True, []), (False, [[f"ssl:0:privateKey={pem}"]])]:
            self.patch(twisted.web.http, "H2_ENABLED", enabled)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            options = Options()
            options.parseOptions(["--port", "8080", "--port", f"ssl:0:privateKey={pem}"])
            makeService(options)
            advice = [e for e in events if "HTTP/2 is not offered" in e["log_format"]]
            self.assertEqual([e["endpoints"] for e in advice], expected)
            for event in advice:
                self.assertEqual(event["command"], "pip install 'twisted-graceful[http2]'")


CLI_DOCS = Path(__file__).parents[1] / "docs" / "cli.md"


def optionDrift(helpText: str, docs: str) -> list[str]:
    """
    How the option table of C{docs} differs from the options C{helpText}
    (the output of C{twistd graceful --help}) lists: each problem, in words.
    """
    listed: dict[str, tuple[str | None, str | None]] = {}
    for short, name, default in re.findall(
        r"^ {2}(?:-(\w), )? {0,4}--([\w-]+)=?[^\n]*((?:\n {20,}[^\n]*)*)", helpText, re.MULTILINE
    ):
        found = re.search(r"\[default: ([^\]]*)\]", " ".join(default.split()))
        listed[name] = (short or None, found.group(1) if found else None)
    rows = {
        match.group(1): match for match in re.finditer(r"^\| `--([\w-]+)`(?:, `-(\w)`)? \|([^|]*)\|", docs, re.MULTILINE)
    }
    problems = [f"--{name} is not in the table" for name in listed if name not in rows]
    problems += [f"--{name} is documented but does not exist" for name in rows if name not in listed]
    for name, (short, default) in listed.items():
        row = rows.get(name)
        if row is None:
            continue
        if row.group(2) != short:
            problems.append(f"--{name}: short flag -{short} in --help, -{row.group(2)} in the docs")
        documented = row.group(3).strip().strip("`")
        if default is not None and not _sameDefault(default, documented):
            problems.append(f"--{name}: default {default} in --help, {documented!r} in the docs")
    return problems


def _sameDefault(default: str, documented: str) -> bool:
    try:
        return float(default) == float(documented)
    except ValueError:
        return default == documented


class DocumentedTests(SynchronousTestCase):
    def test_everyOptionDocumented(self) -> None:
        """
        Every option C{twistd graceful --help} lists has a row in
        C{docs/cli.md}, with its short flag and default; no row names an
        option that does not exist.
        """
        self.assertEqual(optionDrift(str(Options()), CLI_DOCS.read_text()), [])

    def test_driftFound(self) -> None:
        """
        A missing row, a stale row and a wrong default are each found.
        """
        docs = CLI_DOCS.read_text()
        missing = re.sub(r"^\| `--health`.*\n", "", docs, flags=re.MULTILINE)
        stale = docs + "| `--gone` | | Removed. |\n"
        wrong = docs.replace("| `--shutdown-timeout` | `30` |", "| `--shutdown-timeout` | `20` |")
        self.assertEqual(optionDrift(str(Options()), missing), ["--health is not in the table"])
        self.assertEqual(optionDrift(str(Options()), stale), ["--gone is documented but does not exist"])
        self.assertEqual(
            optionDrift(str(Options()), wrong), ["--shutdown-timeout: default 30.0 in --help, '20' in the docs"]
        )
