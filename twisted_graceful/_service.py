# -*- test-case-name: tests.test_service -*-
"""
L{GracefulService}: a group of L{GracefulSiteService} endpoints with
shutdown hooks, restarts and an ordered stop.  A thin shell over its rooms:
L{Listener} (each socket), L{assignSockets} (which inherited socket goes
where), L{SuccessorLauncher} (starting the successor), the restart machine
(L{coordinatorFor}), L{OrderedStop} (the stop) and L{Reporter} (pid file,
status file, systemd).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, MutableMapping, Sequence

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._assign import Wanted, assignSockets
from ._child import DEFAULT_READY_TIMEOUT
from ._drain import DEFAULT_IDLE_GRACE, DrainResult
from ._errors import BadEndpoint, NotReadyToRestart
from ._handoff import DEFAULT_HANDOFF_LIMIT
from ._health import HealthResource
from ._hooks import DEFAULT_HOOK_TIMEOUT, HookOutcome, ShutdownHooks
from ._inherit import Inheritance
from ._launcher import SuccessorLauncher
from ._listener import maybeGlobalReactor
from ._notify import Notifier
from ._once import Once
from ._pidfile import PidFile
from ._report import Reporter
from ._restart import DEFAULT_PROBATION, RestartOutcome
from ._succession import Succession
from ._signals import HANGUP_ACTIONS, ISignalModule, ServiceSignals, ignoreUntilHandled
from ._site import DEFAULT_SHUTDOWN_TIMEOUT, GracefulSiteService
from ._status import StatusFile, statusPathFor
from ._stop import OrderedStop
from ._systemd import systemdSockets

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "GracefulService", "GracefulSiteService"]


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
        probation: float = DEFAULT_PROBATION,
        pidFile: str | None = None,
        drainDelay: float = 0.0,
        environ: MutableMapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        notifier: Notifier | None = None,
        hangup: str = "restart",
        reopenLogs: Callable[[], object] | None = None,
        connectionHandoff: bool = True,
        handoffLimit: int = DEFAULT_HANDOFF_LIMIT,
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
        @param probation: Seconds a ready successor must live before this
            process closes its listening sockets and stops; if it dies
            sooner, or while this process drains, this process rolls back
            and serves again.
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
        @param connectionHandoff: At a restart, move idle kept-alive HTTP/1.1
            connections of plain TCP and UNIX endpoints to the successor
            instead of closing them; and take those a predecessor moves.
        @param handoffLimit: Connections this process takes from its
            predecessor at most; the others drain there.
        """
        super().__init__()
        self._reactor = reactor
        self._handleSignals = handleSignals
        self._restartSignal = restartSignal
        if hangup not in HANGUP_ACTIONS:
            raise ValueError(f"hangup must be one of {', '.join(HANGUP_ACTIONS)}, not {hangup!r}.")
        self._hangup = hangup
        if not probation >= 0:
            raise ValueError(f"probation must be zero or more seconds, not {probation!r}.")
        self._probation = probation
        if handoffLimit < 0:
            raise ValueError(f"handoffLimit must be zero or more connections, not {handoffLimit!r}.")
        self._connectionHandoff = connectionHandoff
        self._handoffLimit = handoffLimit
        self._reopenLogs = reopenLogs if reopenLogs is not None else self._reopenLogFiles
        self._reporter = Reporter(
            StatusFile(statusPathFor(pidFile)) if pidFile else None,
            notifier if notifier is not None else Notifier(environ if environ is not None else os.environ),
            PidFile(pidFile) if pidFile else None,
        )
        self._launcher = SuccessorLauncher(
            reactor,
            argv=argv,
            readyTimeout=readyTimeout,
            caught=(restartSignal, signal.SIGHUP, signal.SIGUSR1),
            kill=lambda pid, signum: self._kill(pid, signum),
        )
        self._started = time.time()
        self._environ = environ
        self.hooks = ShutdownHooks(self._clock)
        self._orderedStop = OrderedStop(
            self._clock, self, self.endpoints, self.hooks, self._reporter, drainDelay
        )
        self._stopping: Deferred[None] | None = None
        self._stopped: Once[None] = Once()
        self.inheritance: Inheritance | None = None
        self._succession: Succession | None = None
        self._unusedInherited: list[int] = []

    @property
    def drainResults(self) -> list[DrainResult]:
        """
        Each endpoint's L{DrainResult}, once the stop has drained them.
        """
        return self._orderedStop.drainResults

    @property
    def hookOutcomes(self) -> list[HookOutcome]:
        """
        Each shutdown hook's L{HookOutcome}, once the stop has run them.
        """
        return self._orderedStop.hookOutcomes

    @property
    def generation(self) -> int:
        """
        1 for a first start, one more at each restart.
        """
        return self.inheritance.generation if self.inheritance is not None else 1

    @property
    def _clock(self) -> Any:
        return maybeGlobalReactor(self._reactor)

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
        self._ignoreSignalsUntilHandled()
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
        return self._orderedStop.drainBegan.when()

    @property
    def stopping(self) -> bool:
        """
        C{True} once the ordered stop has begun.
        """
        return self._stopping is not None

    def _inherit(self) -> None:
        """
        Read the sockets inherited from a predecessor or systemd (once),
        give each to the endpoint of its identity, and check the pid file.
        """
        if self.inheritance is not None:
            return
        environ = self._environ if self._environ is not None else os.environ
        self.inheritance = inheritance = Inheritance.fromEnvironment(environ)
        waiting = {e.identity: e for e in self.endpoints() if e.port is None}
        assignment = assignSockets(
            [Wanted(e.identity, e.address.family) for e in waiting.values()],
            inheritance.sockets,
            inheritance.refused,
            self._systemdSockets(),
        )
        for identity, fileno in assignment.fromParent.items():
            waiting[identity].inheritedFileno = fileno
        for identity, passed in assignment.fromSystemd.items():
            endpoint = waiting[identity]
            endpoint.inheritedFileno = passed.fileno
            endpoint.fromSystemd = True
            self._log.info(
                "Using the socket systemd passed for {endpoint}",
                endpoint=endpoint.address.description,
                identity=passed.identity,
                name=passed.name,
            )
        for passed in assignment.ignoredSystemd:
            self._log.warn(
                "systemd passed {identity} (name {name}), which no endpoint serves: closing it",
                identity=passed.identity,
                name=passed.name,
                phase="inherit-ignored",
            )
        self._unusedInherited.extend(assignment.unused)
        self._succession = Succession(
            self._clock,
            inheritance,
            self._launcher,
            self._reporter,
            endpoints=self.endpoints,
            started=self._started,
            stopping=lambda: self.stopping,
            stopReactor=self._stopReactor,
            orderedStop=self._orderedStop,
            probation=self._probation,
            connectionHandoff=self._connectionHandoff,
            handoffLimit=self._handoffLimit,
            **self._successionOptions(),
        )
        self._reporter.checkStart(inheritance.parentPID)

    def _successionOptions(self) -> dict[str, Any]:
        """
        More keyword arguments of L{Succession}, for subclasses.
        """
        return {}

    _systemdSockets = staticmethod(systemdSockets)

    def privilegedStartService(self) -> None:
        self._inherit()
        self._ignoreSignalsUntilHandled()
        super().privilegedStartService()

    def startService(self) -> None:
        self._inherit()
        self._ignoreSignalsUntilHandled()
        super().startService()
        assert self._succession is not None
        self._succession.starting()
        self._clock.callWhenRunning(self._reactorRunning)

    def _ignoreSignalsUntilHandled(self) -> None:
        if self._handleSignals:
            ignoreUntilHandled((self._restartSignal, signal.SIGHUP, signal.SIGUSR1), self._signalModule)

    def _reactorRunning(self) -> None:
        if self._handleSignals:
            self._installSignals(self._hangup)
        self._closeUnusedInherited()
        assert self._succession is not None
        self._succession.ready()

    def _installSignals(self, hangup: str) -> None:
        """
        Route the stop, restart and log-reopening signals to this service.

        @param hangup: What SIGHUP does, as for L{ServiceSignals}.
        """
        ServiceSignals(
            self._clock,
            stopping=lambda: self.stopping,
            cutShort=lambda: self.cutShort(),
            # Failures are logged by the restart machine.
            restart=lambda: self.restart().addErrback(lambda f: None),
            reopenLogs=lambda: self._reopenLogs(),
            restartSignal=self._restartSignal,
            hangup=hangup,
        ).install(self._signalModule)

    def _closeUnusedInherited(self) -> None:
        """
        Close the inherited fds that no endpoint adopted.
        """
        for fileno in self._unusedInherited:
            self._closeInherited(fileno)
        self._unusedInherited = []

    _closeInherited = staticmethod(os.close)
    _signalModule: ISignalModule = signal
    _kill = staticmethod(os.kill)

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
        if self._succession is None:
            return fail(NotReadyToRestart("the service has not started"))
        return self._succession.restart()

    def healthResource(self) -> HealthResource:
        """
        A resource answering 200 while this process serves and 503 once it
        has started to stop, for a load balancer's or Kubernetes' readiness
        check.
        """
        return HealthResource(lambda: self._stopping is not None)

    def _reopenLogFiles(self) -> None:
        from . import _logfile

        _logfile.reopen()
        sites = {id(e.site): e.site for e in self.endpoints()}
        for site in sites.values():
            _logfile.reopenAccessLog(site)

    def _stopReactor(self) -> None:
        if self._stopping is None:
            try:
                self._clock.stop()
            except Exception:
                self.stopService()

    def cutShort(self) -> None:
        """
        Abort every connection and cancel the shutdown hooks still to run.
        """
        self._orderedStop.cutShort()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting on every endpoint at once, drain them all, run the
        shutdown hooks in order, then stop the other child services.

        @return: A L{Deferred} that fires when all of that is done.
        """
        if self._stopping is None:
            handedOver = self._succession is not None and self._succession.handedOver
            if self._succession is not None:
                self._succession.stop()
            self._stopping = self._orderedStop.run(restarting=handedOver)
            self._stopping.addCallback(self._stopped.happen)
        return self._stopped.when()
