# -*- test-case-name: tests.test_tap -*-
"""
C{twistd graceful}: command-line options and the service they make.

This is a thin layer over L{GracefulService}: parse and check every option,
load the application, bind the sockets before C{twistd} daemonizes (so that
an address in use is reported on the terminal), and build the service.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Site

from . import _logfile
from ._app import loadObject, loadResource, loadWSGI
from ._drain import DEFAULT_IDLE_GRACE
from ._endpoint import parseEndpoint
from ._extras import installCommand
from ._handoff import DEFAULT_HANDOFF_LIMIT
from ._logfile import PidTextObserver
from ._errors import AppLoadError, GracefulError, MissingExtra
from ._child import DEFAULT_READY_TIMEOUT
from ._restart import DEFAULT_PROBATION
from ._service import DEFAULT_SHUTDOWN_TIMEOUT, GracefulService
from ._limits import limitBodies, parseSize
from ._signals import HANGUP_ACTIONS, ignoreUntilHandled, signalNumber
from ._workers import WorkerInheritance, WorkerLink, countRequests, reportFailure

DEFAULT_PORT = "8080"
_log = Logger()


def _restartSignal(value: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    number = signalNumber(value)
    if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT):
        raise ValueError(f"--restart-signal cannot be {value}: it cannot be caught or already stops the server")
    return number


_restartSignal.coerceDoc = "A signal name, or 'none'."  # type: ignore[attr-defined]


def _maxRequestBody(value: str) -> int:
    try:
        return parseSize(value)
    except ValueError as e:
        raise ValueError(f"--max-request-body: {e}") from None


_maxRequestBody.coerceDoc = "A size such as 10M."  # type: ignore[attr-defined]


def _hangupAction(value: str) -> str:
    action = value.strip().lower()
    if action not in HANGUP_ACTIONS:
        raise ValueError(f"--sighup takes {' or '.join(HANGUP_ACTIONS)}, not {value!r}")
    return action


_hangupAction.coerceDoc = "restart or ignore."  # type: ignore[attr-defined]


def _workerCount(value: str) -> int:
    text = value.strip().lower()
    if text == "auto":
        return availableCPUs()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--workers takes a number of processes (1 or more) or 'auto', not {value!r}")
    return count


_workerCount.coerceDoc = "A number, or 'auto' (one per CPU)."  # type: ignore[attr-defined]


def _handoffLimit(value: str) -> int:
    try:
        count = int(value.strip())
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"--handoff-limit takes a number of connections (0 or more), not {value!r}")
    return count


_handoffLimit.coerceDoc = "A number of connections."  # type: ignore[attr-defined]


def availableCPUs() -> int:
    """
    The CPUs this process may run on (what C{--workers auto} starts).
    """
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _count(name: str, unit: str) -> Any:
    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{name} takes a whole number of {unit} (0 for no limit), not {value!r}") from None
        if number < 0:
            raise ValueError(f"{name} must be zero (no limit) or more, not {value!r}")
        return number

    coerce.coerceDoc = f"A whole number of {unit}."  # type: ignore[attr-defined]
    return coerce


def _positiveFloat(name: str, zeroAllowed: bool = True) -> Any:
    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name} takes a number of seconds, not {value!r}") from None
        if number < 0 or (number == 0 and not zeroAllowed):
            raise ValueError(f"{name} must be {'zero or more' if zeroAllowed else 'more than zero'}, not {value!r}")
        return number

    coerce.coerceDoc = "A number of seconds."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    """
    Options of C{twistd graceful}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve a twisted.web resource or a WSGI application with graceful shutdown "
        "(SIGTERM, SIGINT) and zero-downtime restart. With neither --app nor --wsgi, "
        "a demo application answers (try /slow?seconds=2)."
    )

    optParameters = [
        ["app", "a", None, "A twisted.web IResource, or a zero-argument callable returning one, "
         "by dotted path: package.module.attribute."],
        ["wsgi", None, None, "A WSGI application by dotted path, served on the reactor's thread pool."],
        ["shutdown-timeout", None, DEFAULT_SHUTDOWN_TIMEOUT,
         "Seconds the drain may take before the remaining connections are aborted.",
         _positiveFloat("--shutdown-timeout")],
        ["idle-grace", None, DEFAULT_IDLE_GRACE,
         "Seconds a kept-alive connection must stay quiet during a drain before it is closed.",
         _positiveFloat("--idle-grace")],
        ["hook-timeout", None, 10.0,
         "Seconds each --shutdown-hook may take before it is cancelled.",
         _positiveFloat("--hook-timeout", zeroAllowed=False)],
        ["ready-timeout", None, DEFAULT_READY_TIMEOUT,
         "Seconds a successor started by a restart has to report ready; then it is terminated "
         "and this process keeps serving.",
         _positiveFloat("--ready-timeout", zeroAllowed=False)],
        ["probation", None, DEFAULT_PROBATION,
         "Seconds a ready successor must live before this process lets go of its sockets; "
         "if it dies sooner (or while this process drains), this process serves again. With "
         "--workers, a new worker that dies this soon stops a rolling restart.",
         _positiveFloat("--probation")],
        ["restart-signal", None, "USR2",
         "The signal that restarts the server with no downtime (a name such as USR2 or HUP), "
         "or 'none'.", _restartSignal],
        ["sighup", None, "restart",
         "What SIGHUP does: restart (the same restart as --restart-signal) or ignore. "
         "SIGUSR1 reopens the log files.", _hangupAction],
        ["health", None, None,
         "Answer this path (such as /healthz) with 200 while serving and 503 once a stop has "
         "begun, for load balancers and Kubernetes readiness probes."],
        ["metrics", None, None,
         "Serve Prometheus metrics at this path (such as /metrics), counted across restarts; "
         "needs the metrics extra."],
        ["drain-delay", None, 0.0,
         "Seconds to keep serving everything after SIGTERM while --health already answers 503, "
         "before the listeners close.", _positiveFloat("--drain-delay")],
        ["access-log", None, None, "Write the access log (combined format) to this file, in append "
         "mode. By default access lines go to the twistd log."],
        ["workers", "w", 1, "Serve with this many worker processes (or 'auto', one per CPU) "
         "under a supervisor that holds the sockets; SIGHUP then replaces the workers one at a time. "
         "1 serves in this process.", _workerCount],
        ["max-requests", None, 0, "Recycle a worker once it has served this many requests: a new worker "
         "starts, then the old one drains. 0: never.", _count("--max-requests", "requests")],
        ["max-requests-jitter", None, 0, "Add a random 0 to this many requests to each worker's "
         "--max-requests, so that workers are not recycled together.",
         _count("--max-requests-jitter", "requests")],
        ["max-worker-memory", None, 0, "Recycle a worker once its resident memory is over this many "
         "megabytes. 0: never.", _count("--max-worker-memory", "megabytes")],
        ["max-request-body", None, None, "Answer a request body larger than this (bytes, or with K, "
         "M or G) with 413 Payload Too Large, without storing it. Default: no limit", _maxRequestBody],
        ["handoff-limit", None, DEFAULT_HANDOFF_LIMIT, "At a restart, take at most this many kept-alive "
         "connections from the previous process; the others drain there.", _handoffLimit],
    ]
    optFlags = [
        ["no-access-log", None, "Do not log requests."],
        ["no-connection-handoff", None, "At a restart, close kept-alive connections (once idle) "
         "instead of moving them to the new process."],
        ["no-fork-server", None, "With --workers: start each worker as a fresh interpreter instead of "
         "forking it from the fork server (slower: a few tenths of a second a worker)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["hooks"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse, and end the command with one line naming the bad option
        instead of twistd's whole usage text.

        The directory the command runs in comes first on the import path,
        as for C{python -m} and gunicorn, so that C{--app}, C{--wsgi} and
        C{--shutdown-hook} find a module beside it; a successor, which
        starts in the same directory, finds it too.

        SIGHUP, SIGUSR1 and SIGUSR2 are ignored from now until the server
        handles them.
        """
        _importFromWorkingDirectory(sys.path)
        # The application is imported while the options are parsed, which
        # may take long: a SIGHUP or a restart signal sent meanwhile must not
        # kill the server (their default action) before it handles them.
        ignoreUntilHandled((signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2))
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            # usage.Options puts its own words before a coercer's message.
            message = str(e).removeprefix("Parameter type enforcement failed: ")
            raise SystemExit(f"twistd graceful: {message}\nSee: twistd graceful --help") from None
        except (AppLoadError, MissingExtra) as e:
            # The application or the installation, not the command line, is
            # at fault: no usage.
            if isinstance(self.get("worker"), WorkerInheritance):
                reportFailure(self["worker"], str(e))
            raise SystemExit(f"twistd graceful: {e}") from None

    def opt_port(self, description: str) -> None:
        try:
            parseEndpoint(description)
        except MissingExtra as e:
            raise MissingExtra(f"--port: {e}", e.extra) from None
        except GracefulError as e:
            raise usage.UsageError(f"--port: {e}") from None
        if description in self["ports"]:
            raise usage.UsageError(f"--port {description} is given twice; give each endpoint once.")
        self["ports"].append(description)

    opt_port.__doc__ = (
        "Listen here; give it once per endpoint. A bare number is TCP on all IPv4 interfaces; "
        "otherwise a Twisted endpoint description: tcp:8080:interface=127.0.0.1, tcp6:8080, "
        "unix:/run/app.sock, ssl:8443:privateKey=key.pem:certKey=cert.pem. Default: 8080."
    )
    opt_p = opt_port

    def opt_shutdown_hook(self, dotted: str) -> None:
        try:
            hook = loadObject(dotted, "--shutdown-hook")
        except GracefulError as e:
            raise usage.UsageError(str(e)) from None
        if not callable(hook):
            raise usage.UsageError(f"--shutdown-hook {dotted!r}: {hook!r} is not callable.")
        self["hooks"].append((dotted, hook))

    opt_shutdown_hook.__doc__ = (
        "A callable (package.module.function) to call with no arguments once every endpoint "
        "has drained; give it once per hook, in the order they should run. It may return a "
        "Deferred or be a coroutine function."
    )

    def _prepareMetrics(self) -> None:
        """
        Check C{--metrics}, and name the metrics directory before anything
        (the application included) imports C{prometheus_client}.
        """
        path = self["metrics"]
        if not path.startswith("/"):
            raise usage.UsageError(f"--metrics {path!r}: give a path that starts with /, such as /metrics.")
        if path == self["health"]:
            raise usage.UsageError(f"--metrics and --health are both {path!r}: give each its own path.")
        from ._metrics import prepareDirectory, requirePrometheus

        if importlib.util.find_spec("prometheus_client") is None:
            requirePrometheus()  # Raises, naming the extra.
        prepareDirectory(os.environ)
        requirePrometheus()

    def _checkRecycling(self) -> None:
        if self["worker"] is not None:
            return
        given = [f"--{name}" for name in ("max-requests", "max-requests-jitter", "max-worker-memory") if self[name]]
        if given and self["workers"] < 2:
            raise usage.UsageError(
                f"{' and '.join(given)} recycle worker processes: give --workers 2 or more "
                "(with --workers 1 this process serves and nothing is recycled)."
            )
        if self["max-requests-jitter"] and not self["max-requests"]:
            raise usage.UsageError(
                "--max-requests-jitter is added to --max-requests: give --max-requests too, "
                "such as --max-requests 1000 --max-requests-jitter 50."
            )

    def postOptions(self) -> None:
        if self["app"] is not None and self["wsgi"] is not None:
            raise usage.UsageError("--app and --wsgi cannot be used together: give one application.")
        if self["no-access-log"] and self["access-log"] is not None:
            raise usage.UsageError("--access-log and --no-access-log cannot be used together.")
        if not self["ports"]:
            self["ports"] = [DEFAULT_PORT]
        if self["health"] is not None and not self["health"].startswith("/"):
            raise usage.UsageError(f"--health {self['health']!r}: give a path that starts with /, such as /healthz.")
        if self["metrics"] is not None:
            self._prepareMetrics()
        if self["drain-delay"] and self["health"] is None:
            raise usage.UsageError("--drain-delay only helps with --health: give both, such as --health /healthz.")
        if isinstance(self["restart-signal"], str):
            self["restart-signal"] = _restartSignal(self["restart-signal"])
        if self["restart-signal"] == signal.SIGHUP and self["sighup"] != "restart":
            raise usage.UsageError("--restart-signal HUP and --sighup ignore contradict each other: give one.")
        try:
            self["worker"] = WorkerInheritance.fromEnvironment(os.environ)
        except GracefulError as e:
            raise usage.UsageError(str(e)) from None
        if self["worker"] is None and self["workers"] > 1 and self["restart-signal"] == signal.SIGHUP:
            raise usage.UsageError(
                "--restart-signal HUP cannot be used with --workers: SIGHUP replaces the workers; "
                "give another signal, such as USR2."
            )
        self._checkRecycling()
        self["fork-server"] = None
        if self["worker"] is None and self["workers"] > 1 and not self["no-fork-server"]:
            # Before the application is loaded, so that each worker loads it.
            self["fork-server"] = _startForkServer(getattr(self, "parent", None))
        # twistd would refuse to start a successor (its pid file names the
        # live predecessor), write the file before the process serves, and
        # delete it at exit even after a successor has taken over: the
        # service keeps the pid file instead.
        self["pidfile"] = None
        parent = getattr(self, "parent", None)
        if parent is not None and self["worker"] is not None:
            # A worker writes no pid file: the supervisor's names the tree.
            parent["pidfile"] = ""
        if parent is not None and parent.get("pidfile"):
            self["pidfile"] = os.path.abspath(parent["pidfile"])
            parent["pidfile"] = ""
        logPath = _takeOverLog(parent) if parent is not None else None
        if parent is not None and self["worker"] is not None:
            # The supervisor daemonized already, if asked to.
            parent["nodaemon"] = True
        identities: dict[str, str] = {}
        for description in self["ports"]:
            identity = parseEndpoint(description).identity
            if identity in identities:
                raise usage.UsageError(
                    f"--port {description} and --port {identities[identity]} name the same "
                    "address; give it once."
                )
            identities[identity] = description
        try:
            if self["wsgi"] is not None:
                self["resource"] = _wsgiResource(loadWSGI(self["wsgi"]))
            elif self["app"] is not None:
                self["resource"] = loadResource(self["app"])
            else:
                from .demo import DemoResource

                self["resource"] = DemoResource()
        except AppLoadError as e:
            if e.__cause__ is not None and logPath is not None:
                _logTraceback(logPath, str(e), e.__cause__)
            raise


def _logTraceback(path: str, message: str, error: BaseException) -> None:
    """
    Append C{error}'s traceback to the log file at C{path}, as a debug event:
    the terminal gets one line, and the log the whole story.  (The log has
    not begun yet when options are parsed, so it is written here.)
    """
    event = {
        "log_format": "{message}",
        "message": message,
        "log_level": LogLevel.debug,
        "log_namespace": __name__,
        "log_time": time.time(),
        "log_failure": Failure(error, type(error), error.__traceback__),
    }
    with open(path, "a", encoding="utf-8") as log:
        PidTextObserver(log)(event)


def _importFromWorkingDirectory(path: list[str]) -> None:
    """
    Put the working directory first on the import path C{path}, unless it is
    there already (as C{""} or by name).
    """
    try:
        here = os.getcwd()
    except OSError:
        return  # The directory is gone: nothing to import from it.
    if here not in map(os.path.abspath, path):
        path.insert(0, here)


def _startForkServer(parent: Any) -> Any:
    """
    Fork the fork server of C{--workers} now, before a reactor or the
    application is loaded.

    @return: The L{twisted_graceful._forkserver.ForkServer}, or why there is
        none (the workers then start as fresh interpreters).
    """
    from . import _forkserver

    why = _forkserver.cannotFork()
    if why is None:
        try:
            given = parent if parent is not None else {}
            return _forkserver.start(
                detach=not given.get("nodaemon"),
                uid=given.get("uid"),
                gid=given.get("gid"),
                euid=bool(given.get("euid")),
                umask=given.get("umask"),
            )
        except OSError as e:
            why = f"it could not be forked ({e})"
    return why


def _takeOverLog(parent: Any) -> str | None:
    """
    Two generations write one log during a hand-over: replace twistd's log
    observer by one that appends and marks each line with its pid, unless
    the user chose a logger or syslog.

    @return: The log file, or L{None} if the log is not one we write to a
        file (standard output, syslog, the user's logger).
    """
    if parent.get("logger") or parent.get("syslog"):
        return None
    path = parent.get("logfile") or (None if parent.get("nodaemon") else "twistd.log")
    if path is not None and path != "-":
        path = os.path.abspath(path)
    _logfile.configure(path)
    parent["logger"] = _logfile.OBSERVER
    return None if path in (None, "-") else path


def _wsgiResource(application: Any) -> IResource:
    from twisted.internet import reactor
    from twisted.web.wsgi import WSGIResource

    return WSGIResource(reactor, reactor.getThreadPool(), application)  # type: ignore[attr-defined]


class _ServiceSite(Site):
    """
    A L{Site} that answers some paths itself (C{--health}, C{--metrics}),
    before its resource tree.

    @param paths: Each path, such as C{b"/healthz"}, and what answers it.
    """

    def __init__(self, resource: IResource, paths: dict[bytes, IResource], **kwargs: object) -> None:
        super().__init__(resource, **kwargs)
        self.paths = paths

    def getResourceFor(self, request: Any) -> IResource:
        special = self.paths.get(request.path)
        if special is not None:
            request.site = self
            request.sitepath = list(request.prepath or [])
            return special
        return super().getResourceFor(request)  # type: ignore[no-any-return]


def _makeSite(options: Options, service: GracefulService, metrics: Any) -> Site:
    paths: dict[bytes, IResource] = {}
    if options["health"] is not None:
        paths[options["health"].encode()] = service.healthResource()
    if metrics is not None:
        paths[options["metrics"].encode()] = metrics.resource()
    site = _ServiceSite(options["resource"], paths) if paths else Site(options["resource"])
    if options["access-log"] is not None:
        site.logPath = options["access-log"]
    elif options["no-access-log"]:
        site.log = lambda request: None  # type: ignore[method-assign]
    if options["max-request-body"] is not None:
        limitBodies(site, options["max-request-body"])
    return site


def _adviseHTTP2(service: GracefulService) -> None:
    """
    Say once, at start, that C{ssl:} ports serve HTTP/1.1 only when HTTP/2
    is not installed.
    """
    tls = [e.address.description for e in service.endpoints() if e.address.scheme == "ssl"]
    if not tls:
        return
    from twisted.web.http import H2_ENABLED

    if not H2_ENABLED:
        _log.info(
            "HTTP/2 is not offered on {endpoints} (HTTP/1.1 only): {command}",
            endpoints=tls,
            command=installCommand("http2"),
        )


def makeService(options: Options) -> GracefulService:
    """
    Build the service for C{twistd graceful}, with every socket bound: a
    server, a supervisor of C{--workers} workers, or one of its workers.

    An address that cannot be bound ends the command with its message (no
    traceback), before C{twistd} daemonizes.
    """
    if options.get("worker") is None and options["workers"] > 1:
        return _makeSupervisor(options)
    service = GracefulService(
        restartSignal=options["restart-signal"] if options.get("worker") is None else None,
        hangup=options["sighup"] if options.get("worker") is None else "ignore",
        readyTimeout=options["ready-timeout"],
        probation=options["probation"],
        pidFile=options["pidfile"],
        drainDelay=options["drain-delay"],
        connectionHandoff=not options["no-connection-handoff"],
        handoffLimit=options["handoff-limit"],
    )
    from .demo import DemoResource

    if isinstance(options["resource"], DemoResource):
        options["resource"].service = service
    metrics = None
    if options["metrics"] is not None:
        from twisted.internet import reactor

        from ._metrics import GracefulMetrics, MetricsService

        metrics = GracefulMetrics(service, reactor)
        MetricsService(metrics).setServiceParent(service)
    for description in options["ports"]:
        service.addEndpoint(
            description,
            _makeSite(options, service, metrics),
            shutdownTimeout=options["shutdown-timeout"],
            idleGrace=options["idle-grace"],
        )
    for name, hook in options["hooks"]:
        service.addShutdownHook(hook, timeout=options["hook-timeout"], name=name)
    _adviseHTTP2(service)
    try:
        if options.get("worker") is not None:
            _becomeWorker(options, service)
        service.bind()
    except GracefulError as e:
        raise SystemExit(f"twistd graceful: {e}") from None
    return service


def _becomeWorker(options: Options, service: GracefulService) -> None:
    """
    Serve the sockets the supervisor passed, and report to it.
    """
    from twisted.internet import reactor

    link = WorkerLink(options["worker"], reactor)
    link.adopt(service.endpoints())
    for site in {id(e.site): e.site for e in service.endpoints()}.values():
        countRequests(site, link.requests)
    link.setServiceParent(service)


def _makeSupervisor(options: Options) -> GracefulService:
    """
    The supervisor of C{--workers}: it holds the sockets and runs no
    application code of its own (it loaded the application only to report
    an error before it daemonizes).
    """
    from ._pool import RecyclePolicy
    from ._supervisor import DEFAULT_STOP_GRACE, SupervisorService

    forkServer = options.get("fork-server")

    stopTimeout = (
        options["shutdown-timeout"] + options["drain-delay"]
        + options["hook-timeout"] * len(options["hooks"]) + DEFAULT_STOP_GRACE
    )
    service = SupervisorService(
        workers=options["workers"],
        stopTimeout=stopTimeout,
        recycle=RecyclePolicy(
            maxRequests=options["max-requests"],
            jitter=options["max-requests-jitter"],
            maxMemory=options["max-worker-memory"] * 2**20,
        ),
        restartSignal=options["restart-signal"],
        hangup=options["sighup"],
        readyTimeout=options["ready-timeout"],
        probation=options["probation"],
        pidFile=options["pidfile"],
        connectionHandoff=not options["no-connection-handoff"],
        handoffLimit=options["handoff-limit"],
        forkServer=None if isinstance(forkServer, str) else forkServer,
    )
    if isinstance(forkServer, str):
        _log.info(
            "Workers start as fresh interpreters, not forked: {why}", why=forkServer, phase="fork-server-unavailable"
        )
    for description in options["ports"]:
        service.addEndpoint(description, options["resource"], shutdownTimeout=options["shutdown-timeout"])
    try:
        service.bind()
    except GracefulError as e:
        raise SystemExit(f"twistd graceful: {e}") from None
    return service


__all__ = ["Options", "makeService"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("Run this as: twistd graceful --help")
