# -*- test-case-name: tests.test_service -*-
"""
Services: L{GracefulSiteService} serves one HTTP endpoint and drains it;
L{GracefulService} groups endpoints with shutdown hooks and orders the stop:
stop accepting everywhere at once, drain every endpoint, run the hooks, then
stop any other child service.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Iterable, MutableMapping, Sequence, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.internet.task import deferLater
from twisted.internet.interfaces import IListeningPort
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._drain import DEFAULT_IDLE_GRACE, DrainingFactory, DrainResult
from ._errors import BadEndpoint
from ._endpoint import ListenAddress, adoptSocket, bindSocket, boundAddress, parseEndpoint
from ._child import DEFAULT_READY_TIMEOUT, ChildProcess
from ._errors import ChildExitedEarly, NotReadyToRestart, PidFileError
from ._health import HealthResource
from ._hooks import DEFAULT_HOOK_TIMEOUT, HookOutcome, ShutdownHooks
from ._inherit import Inheritance, encodeHandover
from ._parent import ParentProcess
from ._notify import Notifier
from ._once import Once
from ._pidfile import PidFile
from ._report import Reporter
from ._status import StatusFile, statusPathFor
from ._systemd import systemdSockets
from ._restart import RestartCore, RestartOutcome, Restarter, coordinatorFor
from ._signals import HANGUP_ACTIONS, Handler, SignalRouter

DEFAULT_SHUTDOWN_TIMEOUT = 30.0
_NOT_INHERITED = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _maybeGlobalReactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


class GracefulSiteService(Service):
    """
    Serve a L{Site} (or an L{IResource}, in a new L{Site}) on one endpoint,
    and drain it when the service stops.

    The listening socket is bound by the library and adopted by the reactor
    in L{privilegedStartService} (or L{startService}, if that was not
    called), so that it can be handed to a successor process.

    @ivar address: The parsed endpoint.
    @ivar port: The listening port once started, else L{None}.
    @ivar shutdownTimeout: Seconds the drain may take before the remaining
        connections are aborted; L{None} waits for ever.
    @ivar inheritedFileno: A listening socket to adopt instead of binding a
        new one (set by a L{GracefulService} that inherited it), or L{None}.
    @ivar fromSystemd: C{inheritedFileno} was passed by systemd, whose
        C{Backlog=} it keeps; a socket from a predecessor gets this
        endpoint's C{backlog}.
    """

    _log = Logger()
    _bindSocket = staticmethod(bindSocket)
    _closeFileno = staticmethod(os.close)
    _setNonBlocking = staticmethod(lambda fileno: os.set_blocking(fileno, False))

    def __init__(
        self,
        description: str,
        site: Site | IResource,
        *,
        shutdownTimeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
        idleGrace: float = DEFAULT_IDLE_GRACE,
        reactor: Any = None,
    ) -> None:
        """
        @param description: C{8080}, or a Twisted endpoint description:
            C{tcp:...}, C{tcp6:...}, C{unix:...} or C{ssl:...}.
        @param site: What to serve.
        @param idleGrace: Seconds a kept-alive connection must stay quiet
            during the drain before it is closed.
        @param reactor: The reactor; the global one by default.
        @raise BadEndpoint: C{description} cannot be served.
        @raise TypeError: C{site} is neither a L{Site} nor an L{IResource}.
        """
        self.address: ListenAddress = parseEndpoint(description)
        if shutdownTimeout is not None and shutdownTimeout < 0:
            raise ValueError(f"shutdownTimeout must be zero or more seconds, or None, not {shutdownTimeout!r}.")
        self._reactor = reactor
        if not isinstance(site, Site):
            if not IResource.providedBy(site):
                raise TypeError(
                    f"GracefulSiteService serves a twisted.web Site or IResource, but {site!r} is "
                    "neither. Wrap a WSGI application in twisted.web.wsgi.WSGIResource."
                )
            site = Site(site, reactor=reactor)
        self.site = site
        self.shutdownTimeout = shutdownTimeout
        self.inheritedFileno: int | None = None
        self.fromSystemd = False
        self.port: IListeningPort | None = None
        self.factory = DrainingFactory(site, self._clock, name=self.address.description, idleGrace=idleGrace)
        self._socket: socket.socket | Any = None
        self._portStopped: Deferred[Any] | None = None

    @property
    def _clock(self) -> Any:
        return _maybeGlobalReactor(self._reactor)

    @property
    def identity(self) -> str:
        """
        The identity of this endpoint's listening socket.
        """
        return self.address.identity

    def listeningAddress(self) -> str | None:
        """
        Where this endpoint listens (C{127.0.0.1:8080}, a path), or L{None}
        before it listens.
        """
        return None if self.port is None else boundAddress(self.port)

    def fileno(self) -> int:
        """
        The listening socket's descriptor, to hand to a successor.
        """
        if self.port is None:
            raise RuntimeError(f"{self.address.description} is not listening.")
        return self.port.fileno()  # type: ignore[attr-defined,no-any-return]

    def bind(self) -> None:
        """
        Bind the listening socket now, unless it is inherited or bound
        already; it is adopted by the reactor when the service starts.  Call
        this to report an address in use before the process daemonizes.

        @raise ListenFailed: The socket cannot be bound.
        """
        if self.port is None and self._socket is None and self.inheritedFileno is None:
            self._socket = self._bindSocket(self.address)

    def unbind(self) -> None:
        """
        Close a socket bound by L{bind} that is not listening yet.
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def privilegedStartService(self) -> None:
        """
        Bind (or adopt the inherited socket) and listen.

        @raise ListenFailed: The socket cannot be bound.
        """
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        self._listen()
        super().startService()

    def _listen(self) -> None:
        if self.port is not None:
            return
        reactor = _maybeGlobalReactor(self._reactor)
        if self.inheritedFileno is not None:
            fileno, self.inheritedFileno = self.inheritedFileno, None
            try:
                # The reactor would hang inside accept() on a blocking socket
                # (systemd passes them blocking).
                self._setNonBlocking(fileno)
                self.port = adoptSocket(
                    reactor, self.address, fileno, self.factory, applyBacklog=not self.fromSystemd
                )
            finally:
                self._closeFileno(fileno)
            how = "inherited"
        else:
            self.bind()
            sock, self._socket = self._socket, None
            assert sock is not None
            try:
                self.port = adoptSocket(reactor, self.address, sock.fileno(), self.factory)
            finally:
                sock.close()
            how = "bound"
        self._log.info(
            "Listening on {endpoint} at {address} ({how})",
            endpoint=self.address.description,
            identity=self.identity,
            address=self.listeningAddress(),
            how=how,
        )

    def whenDraining(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires when this endpoint starts to drain.
        """
        return self.factory.whenDraining()

    def stopAccepting(self, handOver: bool = False) -> None:
        """
        Stop accepting connections.  The socket is closed in this process but
        never shut down, so a successor that shares it keeps accepting.

        @param handOver: A successor serves this socket now: a UNIX socket's
            file is left in place (a final stop removes it).
        """
        port, self.port = self.port, None
        if port is not None and not handOver:
            _closeAfterAccepting(port, self.factory)
            return
        self.factory.stopAccepting()
        if port is None:
            return
        if self.address.family == socket.AF_UNIX:
            # A UNIX port unlinks its socket file when it stops listening,
            # which would take the successor's address away: stop reading
            # and close this process's descriptor instead.
            port.stopReading()  # type: ignore[attr-defined]
            port.socket.close()  # type: ignore[attr-defined]
            self.factory.doStop()
        else:
            # The port closes on the next reactor turn: the drain waits for
            # it, or a stop that drains at once would end the reactor first.
            # The successor's descriptor keeps the socket and its queue.
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                self._portStopped = stopped

    def drain(self, restarting: bool = False) -> Deferred[DrainResult]:
        """
        Stop accepting and drain, within L{shutdownTimeout}.

        @param restarting: The drain is part of a restart (WebSockets are
            closed with 1012 instead of 1001).
        @return: A L{Deferred} that fires with the L{DrainResult}.
        """
        self.stopAccepting()
        drained = self.factory.drain(self.shutdownTimeout, restarting)
        if self._portStopped is None:
            return drained
        portStopped, self._portStopped = self._portStopped, None
        return portStopped.addBoth(lambda _: drained)

    def cutShort(self) -> None:
        """
        Abort every connection now.
        """
        self.stopAccepting()
        self.factory.abortAll()

    def stopService(self) -> Deferred[DrainResult]:
        """
        Stop accepting and drain.

        @return: A L{Deferred} that fires with the L{DrainResult}.
        """
        super().stopService()
        return self.drain()


class GracefulService(MultiService):
    """
    A group of L{GracefulSiteService} endpoints, with shutdown hooks and an
    ordered stop.

    On L{stopService} (which C{twistd} calls on SIGTERM and SIGINT, through
    the reactor's C{('before', 'shutdown')} trigger) every endpoint stops
    accepting at once, every endpoint drains within its own deadline, the
    shutdown hooks run in order, and then the other child services stop.

    @ivar hooks: The shutdown hooks.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        reactor: Any = None,
        handleSignals: bool = True,
        restartSignal: int | None = signal.SIGUSR2,
        readyTimeout: float = DEFAULT_READY_TIMEOUT,
        pidFile: str | None = None,
        drainDelay: float = 0.0,
        environ: MutableMapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        notifier: Notifier | None = None,
        hangup: str = "restart",
        reopenLogs: Callable[[], object] | None = None,
    ) -> None:
        """
        @param reactor: The reactor; the global one by default.
        @param handleSignals: Once the reactor runs, route a SIGTERM or
            SIGINT received during the drain to L{cutShort} (the first one
            still stops the reactor as usual), and C{restartSignal} to
            L{restart}.
        @param restartSignal: The signal that restarts the process, or
            L{None} for none.
        @param readyTimeout: Seconds a successor has to report ready.
        @param pidFile: A pid file to keep naming the serving process across
            restarts, or L{None}.  A status file (C{PIDFILE.status}) goes
            with it.
        @param drainDelay: Seconds to keep serving everything after a stop
            is requested, while L{healthResource} already answers 503, so a
            load balancer stops sending traffic before the listener closes.
        @param environ: Where inherited sockets are announced (and removed
            once read); C{os.environ} by default.
        @param argv: The command that starts a successor;
            C{[sys.executable, *sys.orig_argv[1:]]} by default, so C{twistd},
            C{python -m twisted} and C{.tac} files come back the same way.
        @param notifier: systemd's notify socket; from C{NOTIFY_SOCKET} by
            default.
        @param hangup: What SIGHUP does: C{restart} (as C{restartSignal})
            or C{ignore}.  Neither ever stops the server.
        @param reopenLogs: Reopens the log files on SIGUSR1 (after
            C{logrotate} renamed them); by default the C{twistd graceful} log
            file and each endpoint's C{--access-log}.
        """
        super().__init__()
        self._reactor = reactor
        self._handleSignals = handleSignals
        self._restartSignal = restartSignal
        if hangup not in HANGUP_ACTIONS:
            raise ValueError(f"hangup must be one of {', '.join(HANGUP_ACTIONS)}, not {hangup!r}.")
        self._hangup = hangup
        self._reopenLogs = reopenLogs if reopenLogs is not None else self._reopenLogFiles
        self._readyTimeout = readyTimeout
        self._pidFile = PidFile(pidFile) if pidFile else None
        self._drainDelay = drainDelay
        self._delay: Deferred[None] | None = None
        self._reporter = Reporter(
            StatusFile(statusPathFor(pidFile)) if pidFile else None,
            notifier if notifier is not None else Notifier(environ if environ is not None else os.environ),
        )
        self._started = time.time()
        # The directory the command was started from: twistd --rundir
        # changes directory later, and relative paths on the command line
        # (a .tac file, say) must mean the same to the successor.
        self._launchDirectory = os.getcwd()
        self._environ = environ
        self._argv = list(argv) if argv is not None else None
        self.hooks = ShutdownHooks(self._clock)
        self._stopping: Deferred[None] | None = None
        self._drainBegan: Once[None] = Once()
        self._stopped: Once[None] = Once()
        self.drainResults: list[DrainResult] = []
        self.hookOutcomes: list[HookOutcome] = []
        self.inheritance: Inheritance | None = None
        self._parent: ParentProcess | None = None
        self._restarter: Restarter | None = None
        self._restartCore: RestartCore | None = None
        self._handedOver = False
        self._servesAlone = False
        self._unusedInherited: list[int] = []
        self._attempt = 0

    @property
    def generation(self) -> int:
        """
        1 for a first start, one more at each restart.
        """
        return self.inheritance.generation if self.inheritance is not None else 1

    @property
    def _clock(self) -> Any:
        return _maybeGlobalReactor(self._reactor)

    def addEndpoint(
        self,
        description: str,
        site: Site | IResource,
        *,
        shutdownTimeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
        idleGrace: float = DEFAULT_IDLE_GRACE,
    ) -> GracefulSiteService:
        """
        Serve C{site} on C{description}, as a new child L{GracefulSiteService}.

        @return: The new endpoint service.
        """
        endpoint = GracefulSiteService(
            description, site, shutdownTimeout=shutdownTimeout, idleGrace=idleGrace, reactor=self._reactor
        )
        endpoint.setServiceParent(self)
        return endpoint

    def addService(self, service: IService) -> None:
        """
        Add a child service.  An endpoint whose address another endpoint
        already has is refused: a successor could not tell their sockets
        apart.

        @raise BadEndpoint: The address is served already.
        """
        if isinstance(service, GracefulSiteService):
            for other in self.endpoints():
                if other.identity == service.identity:
                    raise BadEndpoint(
                        f"{service.address.description!r} and {other.address.description!r} are the "
                        f"same address ({service.identity}); serve it once."
                    )
        super().addService(service)

    def addShutdownHook(
        self,
        hook: Callable[..., Any],
        *args: object,
        timeout: float | None = DEFAULT_HOOK_TIMEOUT,
        name: str | None = None,
        **kwargs: object,
    ) -> None:
        """
        Run C{hook(*args, **kwargs)} once every endpoint has drained, after
        the hooks added before it.  It may return a L{Deferred} or be a
        coroutine function; a failure or a timeout is logged and the next
        hook runs.

        @param timeout: Seconds after which the hook is cancelled.
        """
        self.hooks.add(hook, *args, timeout=timeout, name=name, **kwargs)

    def bind(self) -> None:
        """
        Bind every endpoint's socket now (see L{GracefulSiteService.bind}).
        If one fails, those bound are closed again.

        @raise ListenFailed: A socket cannot be bound.
        """
        self._inherit()
        try:
            for endpoint in self.endpoints():
                endpoint.bind()
        except BaseException:
            for endpoint in self.endpoints():
                endpoint.unbind()
            raise

    def endpoints(self) -> list[GracefulSiteService]:
        """
        The endpoint services, in the order they were added.
        """
        return [s for s in self if isinstance(s, GracefulSiteService)]

    def whenDraining(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires with L{None} when the drain begins,
            so that long-lived responses can finish early.
        """
        return self._drainBegan.when()

    @property
    def stopping(self) -> bool:
        """
        C{True} once the ordered stop has begun.
        """
        return self._stopping is not None

    def _inherit(self) -> None:
        """
        Read the sockets inherited from a predecessor (once), give each to
        the endpoint with its identity, and check the pid file.
        """
        if self.inheritance is not None:
            return
        environ = self._environ if self._environ is not None else os.environ
        self.inheritance = inheritance = Inheritance.fromEnvironment(environ)
        byIdentity = {e.identity: e for e in self.endpoints()}
        self._unusedInherited.extend(inheritance.refused)
        for identity, (fileno, family) in inheritance.sockets.items():
            endpoint = byIdentity.get(identity)
            if endpoint is None or endpoint.address.family != family or endpoint.port is not None:
                self._unusedInherited.append(fileno)
                continue
            endpoint.inheritedFileno = fileno
        self._adoptSystemdSockets()
        self._parent = ParentProcess(self._clock, inheritance)
        self._restartCore = RestartCore(self._clock, self._spawnSuccessor, self._handOver, inheritance.parentPID)
        self._restarter = coordinatorFor(
            self._restartCore
        )
        if self._pidFile is not None:
            self._pidFile.checkStart(allowed=inheritance.parentPID)

    def _adoptSystemdSockets(self) -> None:
        """
        Give each endpoint still without a socket the one systemd passed for
        its address or name, if any; close the others.
        """
        waiting = [e for e in self.endpoints() if e.inheritedFileno is None and e.port is None]
        for passed in self._systemdSockets():
            endpoint = next((e for e in waiting if passed.matches(e.identity)), None)
            if endpoint is None:
                self._log.warn(
                    "systemd passed {identity} (name {name}), which no endpoint serves: closing it",
                    identity=passed.identity,
                    name=passed.name,
                    phase="inherit-ignored",
                )
                self._unusedInherited.append(passed.fileno)
                continue
            waiting.remove(endpoint)
            endpoint.inheritedFileno = passed.fileno
            endpoint.fromSystemd = True
            self._log.info(
                "Using the socket systemd passed for {endpoint}",
                endpoint=endpoint.address.description,
                identity=passed.identity,
                name=passed.name,
            )

    _systemdSockets = staticmethod(systemdSockets)

    def privilegedStartService(self) -> None:
        self._inherit()
        super().privilegedStartService()

    def startService(self) -> None:
        self._inherit()
        super().startService()
        assert self._parent is not None
        self._parent.announce("starting", generation=self.generation)
        self._clock.callWhenRunning(self._reactorRunning)

    def _reactorRunning(self) -> None:
        if self._handleSignals:
            router = SignalRouter(self._clock)
            router.onStop((signal.SIGTERM, signal.SIGINT), self._stopSignal)
            if self._restartSignal is not None:
                router.onSignal(self._restartSignal, self._restartSignalReceived)
            # Their default action kills the process: never leave them so.
            if self._restartSignal != signal.SIGHUP:
                router.onSignal(signal.SIGHUP, self._hangupReceived)
            if self._restartSignal != signal.SIGUSR1:
                router.onSignal(signal.SIGUSR1, self._reopenLogsReceived)
        for fileno in self._unusedInherited:
            self._closeInherited(fileno)
        self._unusedInherited = []
        endpoints = {e.address.description: e.listeningAddress() for e in self.endpoints()}
        assert self._parent is not None and self._restarter is not None
        self._parent.announce("ready", generation=self.generation, endpoints=endpoints)
        self._log.info(
            "Serving {endpoints} as pid {pid}, generation {generation}",
            endpoints=endpoints,
            pid=os.getpid(),
            generation=self.generation,
            phase="ready",
        )
        self._restarter._ready()
        self._parent.watch(self._servingAlone, self._parentGone)

    _closeInherited = staticmethod(os.close)
    _kill = staticmethod(os.kill)

    def _servingAlone(self) -> None:
        """
        The predecessor (if any) no longer accepts connections: this process
        is the one serving, so the pid file names it.
        """
        if self._servesAlone or self._stopping is not None:
            return
        self._servesAlone = True
        # The status first: whenever the pid file names this process, the
        # status file does too.
        self._reporter.serving(
            self.generation, {e.address.description: e.listeningAddress() for e in self.endpoints()}, self._started
        )
        if self._pidFile is not None:
            try:
                self._pidFile.write(os.getpid())
            except PidFileError as e:
                # Serve on: the pid file is how operators find the server,
                # not what it serves with.
                self._log.error(
                    "{error} Serving on as pid {pid}, but the pid file does not name it: fix the "
                    "directory, then restart",
                    error=str(e),
                    pid=os.getpid(),
                    pidFile=self._pidFile.path,
                    phase="pidfile-failed",
                )
                self._reporter.pidFileFailed(str(e))
        if self.inheritance is not None and self.inheritance.parentPID is not None:
            self._log.info(
                "Took over from pid {parentPID}",
                parentPID=self.inheritance.parentPID,
                generation=self.generation,
                phase="took-over",
            )

    def _parentGone(self) -> None:
        self._servingAlone()
        assert self._restarter is not None
        if self.inheritance is not None and self.inheritance.parentPID is not None:
            self._log.info(
                "Previous process {parentPID} has exited",
                parentPID=self.inheritance.parentPID,
                phase="parent-gone",
            )
        queued = self._restartQueued()
        self._restarter._parentGone()
        if queued and not self._restartQueued() and self._stopping is None:
            # The queued restart runs now.
            self._reporter.upgrading(self._attempt)

    def restart(self) -> Deferred[RestartOutcome]:
        """
        Start a successor running the same command, hand it the listening
        sockets, and once it reports ready, stop accepting, drain and stop
        the reactor.

        @return: A L{Deferred} that fires with a L{RestartOutcome} when the
            successor is ready and this process has stopped accepting; fails
            with L{ChildExitedEarly} or L{ChildReadyTimeout} when the
            successor died or missed the ready timeout (this process goes on
            serving), with L{RestartInProgress} during another restart, and
            with L{NotReadyToRestart} while this process starts or stops.
            A restart asked while this process's own predecessor still
            drains is queued: it runs once the predecessor has exited, and
            the L{Deferred} fires with its outcome.
        """
        if self._restarter is None:
            return fail(NotReadyToRestart("the service has not started"))
        if self._parent is not None:
            # A restart asked for right after the predecessor exited must
            # not be refused because its lifeline's end of file is still
            # unread in this very reactor turn.
            self._parent.poll()
        attempt = self._reporter.restartRequested()
        self._attempt = attempt
        result = self._restarter.restart()
        if result.called:
            return result.addErrback(self._reportRefused, attempt)
        if self._restartQueued():
            self._reporter.queued(attempt)
        else:
            self._reporter.upgrading(attempt)
        return result.addErrback(self._reportFailed, attempt)

    def _restartQueued(self) -> bool:
        return self._restartCore is not None and self._restartCore.queued is not None

    def _reportRefused(self, failure: Failure, attempt: int) -> Failure:
        self._reporter.refused(attempt, failure.getErrorMessage())
        return failure

    def _reportFailed(self, failure: Failure, attempt: int) -> Failure:
        if not self._handedOver and self._stopping is None:
            self._reporter.upgradeFailed(attempt, failure.getErrorMessage())
        return failure

    def healthResource(self) -> HealthResource:
        """
        A resource answering 200 while this process serves and 503 once it
        has started to stop, for a load balancer's or Kubernetes' readiness
        check.
        """
        return HealthResource(lambda: self._stopping is not None)

    def _restartSignalReceived(self, signum: int) -> None:
        self._log.info("Received {signal}: restarting", signal=signal.Signals(signum).name, phase="restart-signal")
        self.restart().addErrback(lambda f: None)  # Logged by the machine.

    def _hangupReceived(self, signum: int) -> None:
        if self._hangup == "restart":
            self._restartSignalReceived(signum)
        else:
            self._log.info("Received SIGHUP: ignored", signal="SIGHUP", phase="signal-ignored")

    def _reopenLogsReceived(self, signum: int) -> None:
        try:
            self._reopenLogs()
        except Exception as e:
            self._log.warn(
                "Received {signal}: cannot reopen the log files ({error}); still writing to the old ones",
                signal=signal.Signals(signum).name,
                error=str(e),
                phase="logs-not-reopened",
            )
        else:
            self._log.info("Received {signal}: reopened the log files", signal=signal.Signals(signum).name,
                           phase="logs-reopened")

    def _reopenLogFiles(self) -> None:
        from . import _logfile

        _logfile.reopen()
        sites = {id(e.site): e.site for e in self.endpoints()}
        for site in sites.values():
            _logfile.reopenAccessLog(site)

    def _successorCommand(self) -> list[str]:
        argv = self._argv if self._argv is not None else [sys.executable, *sys.orig_argv[1:]]
        # The successor ignores the signals it handles until it installs its
        # handlers: one that reaches it while it starts must not kill it
        # (the default action).  SIG_IGN survives exec; a shell sets it.
        caught = sorted({int(s) for s in (self._restartSignal, signal.SIGHUP, signal.SIGUSR1) if s is not None})
        return ["/bin/sh", "-c", f'trap "" {" ".join(map(str, caught))}; exec "$0" "$@"', *argv]

    def _spawnSuccessor(self, restarter: Restarter) -> ChildProcess:
        sockets = {e.identity: e.fileno() for e in self.endpoints() if e.port is not None}
        handover = encodeHandover(sockets, os.getpid(), self.generation)
        environ = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        environ.update(handover.environ)
        child = ChildProcess(
            self._clock,
            handover.readyFD,
            handover.lifelineFD,
            self._readyTimeout,
            restarter._childReady,
            restarter._childFailed,
            kill=self._kill,
        )
        command = self._successorCommand()
        try:
            self._clock.spawnProcess(
                child, command[0], command, env=environ, path=self._launchDirectory, childFDs=handover.childFDs
            )
        except Exception as e:
            error = ChildExitedEarly(f"Cannot start the successor {command!r}: {e}")
            self._clock.callLater(0, restarter._childFailed, Failure(error))
            return child
        self._log.info(
            "Spawned successor {childPID} for {endpoints}",
            childPID=child.spawnedPID,
            endpoints=sorted(sockets),
            generation=self.generation + 1,
            phase="child-spawned",
        )
        return child

    def _handOver(self, child: ChildProcess) -> None:
        self._handedOver = True
        for endpoint in self.endpoints():
            endpoint.stopAccepting(handOver=True)
        assert child.servingPID is not None
        self._reporter.handedOver(self._attempt, child.servingPID)
        child.handOver()
        self._log.info(
            "Handed over to pid {childPID}: draining",
            childPID=child.servingPID,
            phase="handed-over",
        )
        self._clock.callLater(0, self._stopReactor)

    def _stopReactor(self) -> None:
        if self._stopping is None:
            try:
                self._clock.stop()
            except Exception:
                self.stopService()

    def _stopSignal(self, signum: int, previous: Handler | None) -> None:
        if self._stopping is not None:
            self._log.warn(
                "Received signal {signal} during the drain: stopping now",
                signal=signal.Signals(signum).name,
                phase="cut-short",
            )
            self.cutShort()
        elif previous is not None:
            previous(signum, None)
        else:
            self._clock.stop()

    def cutShort(self) -> None:
        """
        Abort every connection and cancel the shutdown hooks still to run.
        """
        if self._delay is not None:
            self._delay.cancel()
        for endpoint in self.endpoints():
            endpoint.cutShort()
        self.hooks.cutShort()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting on every endpoint at once, drain them all, run the
        shutdown hooks in order, then stop the other child services.

        @return: A L{Deferred} that fires when all of that is done.
        """
        if self._stopping is None:
            if self._restarter is not None:
                self._restarter.stop()
            self._stopping = Deferred.fromCoroutine(self._stop())
            self._stopping.addErrback(lambda f: self._log.failure("Ordered stop failed", f))
            self._stopping.addCallback(self._stopped.happen)
        return self._stopped.when()

    async def _stop(self) -> None:
        started = self._clock.seconds()
        endpoints = self.endpoints()
        if not self._handedOver:
            self._reporter.draining(self._drainDelay)
            if self._drainDelay > 0:
                self._log.info(
                    "Stop requested: the health check answers 503; serving for {delay} s more",
                    delay=self._drainDelay,
                    phase="drain-delay",
                )
                self._delay = deferLater(self._clock, self._drainDelay, lambda: None)
                try:
                    await self._delay
                except CancelledError:
                    pass
                self._delay = None
        self._log.info(
            "Stopping: draining {count} endpoints",
            count=len(endpoints),
            connections=sum(e.factory.connectionCount() for e in endpoints),
            inFlight=sum(e.factory.inFlightCount() for e in endpoints),
            phase="stopping",
        )
        for endpoint in endpoints:
            endpoint.stopAccepting()
        self._drainBegan.happen(None)
        results = await DeferredList([e.drain(self._handedOver) for e in endpoints], consumeErrors=True)
        self.drainResults = [r for ok, r in results if ok]
        failed = [(e, cast(Failure, r)) for e, (ok, r) in zip(endpoints, results) if not ok]
        for endpoint, failure in failed:
            self._log.failure(
                "Draining {endpoint} failed", failure, endpoint=endpoint.address.description, phase="drain-error"
            )
        self.hookOutcomes = await self.hooks.run()
        await _stopOthers(self, endpoints)
        if not self._handedOver:
            self._reporter.stopped(self.drainResults, failed=len(failed))
            if self._pidFile is not None:
                self._pidFile.removeIfNames(os.getpid())
        self._log.info(
            "Stopped in {elapsed:.3f} s: {completed} requests completed, {aborted} cut,"
            " {abortedConnections} connections aborted",
            elapsed=self._clock.seconds() - started,
            completed=sum(r.completed for r in self.drainResults),
            aborted=sum(r.abortedRequests for r in self.drainResults),
            abortedConnections=sum(r.abortedConnections for r in self.drainResults),
            drainErrors=len(failed),
            phase="stopped",
        )


def _closeAfterAccepting(port: IListeningPort, factory: DrainingFactory) -> None:
    """
    Close a listening port for good, now, having first accepted every
    connection the kernel queued on it.

    Closing a listening socket resets the connections queued on it that
    nobody accepted, though their clients have sent their requests: those
    are accepted and served (and drained) instead.  A connection that
    arrives after the close is refused, never reset.  The port is closed at
    once rather than on the next reactor turn (as C{stopListening} does), so
    that no connection is queued in between.
    """
    doRead = getattr(port, "doRead", None)
    connectionLost = getattr(port, "connectionLost", None)
    if doRead is None or connectionLost is None:
        factory.stopAccepting()
        port.stopListening()
        return
    # PRIVATE: twisted.internet.tcp.Port (and unix.Port): doRead accepts up
    # to numberAccepts queued connections, stopping at the first EAGAIN;
    # connectionLost closes the socket (a UNIX port unlinks its file first)
    # and stops the factory, which loseConnection defers by a reactor turn.
    port.stopReading()  # type: ignore[attr-defined]
    port.disconnecting = True  # type: ignore[attr-defined]
    port.numberAccepts = 2**16  # type: ignore[attr-defined]
    doRead()
    factory.stopAccepting()
    connectionLost(Failure(CONNECTION_DONE))


async def _stopOthers(parent: MultiService, drained: Iterable[IService]) -> None:
    """
    Stop C{parent} itself and the children of C{parent} other than
    C{drained}, in reverse order as L{MultiService} does.
    """
    skip = set(map(id, drained))
    Service.stopService(parent)
    stopping = [
        d for child in reversed(list(parent)) if id(child) not in skip
        for d in [_maybeStop(child)] if d is not None
    ]
    for child in parent:
        if id(child) in skip:
            Service.stopService(child)  # type: ignore[arg-type,unused-ignore]
    await DeferredList(stopping, consumeErrors=True)


def _maybeStop(service: IService) -> Deferred[Any] | None:
    result = service.stopService()
    return result if isinstance(result, Deferred) else None
