# -*- test-case-name: tests.test_workers_supervisor -*-
"""
L{SupervisorService}: C{twistd graceful --workers N}.

The supervisor is the process C{twistd} runs, the one the pid file and
systemd's C{MAINPID} name.  It binds (or inherits) the listening sockets
but never accepts on them: it starts N workers, fresh interpreters running
its own command, which adopt the sockets and serve.  It reports ready (to
its predecessor, the status file, systemd) once N workers are ready.

Signals: SIGTERM or SIGINT drain every worker at once, a second one cuts
their drains short; SIGHUP replaces the workers one at a time (see
L{twisted_graceful._pool}); the restart signal (SIGUSR2) upgrades the whole
tree through the usual hand-over, the new supervisor starting its own
workers before the old one drains its own; SIGUSR1 reopens the logs of the
supervisor and of every worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._broker import Broker, WorkerChannels
from ._child import DEFAULT_READY_TIMEOUT, ChildProcess, ReadyMessage, describeExit
from ._drain import DEFAULT_IDLE_GRACE
from ._errors import ChildExitedEarly, ChildReadyTimeout
from ._forkserver import ForkServer, ForkServerError
from ._inherit import encodeHandover
from ._pool import Pool, PoolCore, RecyclePolicy, RolloutOutcome, WorkerHandle, poolFor
from ._service import DEFAULT_SHUTDOWN_TIMEOUT, GracefulService, GracefulSiteService
from ._signals import SignalRouter
from ._workers import WORKER_IGNORES, workerCommand, workerEnvironment

DEFAULT_STOP_GRACE = 10.0
STATUS_INTERVAL = 1.0


class WorkerProcess(ChildProcess):
    """
    One worker, seen from the supervisor: a L{ChildProcess} whose ready
    pipe stays open for its stats, and whose every end is reported.
    """

    def __init__(
        self,
        pool: Pool,
        clock: Any,
        readyFD: int,
        lifelineFD: int,
        readyTimeout: float,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self._pool = pool
        self.failure: Failure | None = None
        self.reportedFailure: str | None = None
        self.onStats: Callable[[WorkerProcess, dict[str, Any]], None] = lambda worker, stats: None
        self.onDrain: Callable[[WorkerProcess], None] = lambda worker: None
        self.onEnded: Callable[[WorkerProcess], None] = lambda worker: None
        super().__init__(clock, readyFD, lifelineFD, readyTimeout, self._isReady, self._failed, kill=kill)

    @property
    def pid(self) -> int | None:
        return self.servingPID or self.spawnedPID

    def _isReady(self, message: ReadyMessage) -> None:
        self._pool._workerReady(self)

    def _failed(self, reason: Failure) -> None:
        # Only a failure before ready says more than the exit status.
        if self.failure is None and self.ready is None:
            self.failure = reason

    def _fail(self, error: Exception) -> None:
        # The successor's words do not fit a worker.
        if isinstance(error, ChildReadyTimeout):
            error = ChildReadyTimeout(
                f"Worker {self.pid} was not ready within {self._readyTimeout:g} s (it was "
                f"{self.stage}); it is being terminated."
            )
        else:
            status = f" ({describeExit(self.exitReason)})" if self.exitReason is not None else ""
            said = f": {self.reportedFailure}" if self.reportedFailure else "."
            error = ChildExitedEarly(f"Worker {self.pid} exited while {self.stage}, before it was ready{status}{said}")
        super()._fail(error)

    def _message(self, line: bytes) -> None:
        super()._message(line)
        if self.ready is None and b'"failed"' in line:
            try:
                said = json.loads(line)
            except ValueError:
                return
            if isinstance(said, dict) and said.get("state") == "failed" and isinstance(said.get("reason"), str):
                self.reportedFailure = said["reason"]
            return
        if self.ready is None or b'"stats"' not in line:
            return
        try:
            stats = json.loads(line)
        except ValueError:
            return
        if isinstance(stats, dict) and stats.get("state") == "stats":
            self.onStats(self, stats)

    def processEnded(self, reason: Failure) -> None:
        if self.failure is not None:
            why = self.failure
        elif reason.check(ProcessDone) is not None:
            why = Failure(ChildExitedEarly(f"Worker {self.pid} exited with status 0"))
        else:
            why = Failure(ChildExitedEarly(f"Worker {self.pid} exited: {describeExit(reason)}"))
        self.onEnded(self)
        self._pool._workerExited(self, why)

    def drain(self) -> None:
        self.onDrain(self)
        if self.transport is not None:
            self.transport.closeChildFD(self._lifelineFD)

    def interrupt(self) -> None:
        if self.pid is not None and self.exitReason is None:
            self._signal(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.pid is not None and self.exitReason is None:
            self._signal(self.pid, signal.SIGKILL)

    def sendSignal(self, signum: int) -> None:
        if self.pid is not None and self.exitReason is None:
            self._signal(self.pid, signum)


class _HeldSocket(GracefulSiteService):
    """
    An endpoint the supervisor holds for its workers: bound (or inherited)
    and adopted, so that it can be handed to workers and to a successor,
    but never read: the workers accept its connections.
    """

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._pause()

    def startService(self) -> None:
        super().startService()
        self._pause()

    def _pause(self) -> None:
        self.listener.pause()
        # A rollback resumes the endpoints it paused for the hand-over: the
        # workers accept, this copy stays paused.
        self.listener.resume = lambda: None  # type: ignore[method-assign]

    def stopAccepting(self, handOver: bool = False) -> None:
        # Close this copy without accepting what the kernel queued: the
        # workers, which hold the socket too, accept it.
        super().stopAccepting(handOver=True)


class _PoolService(Service):
    """
    Stops the pool when the supervisor stops (after its endpoints).
    """

    def __init__(self, pool: Pool, forkServer: ForkServer | None = None) -> None:
        self._pool = pool
        self._forkServer = forkServer

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return self._pool.stop().addBoth(self._stopped)

    def _stopped(self, result: object) -> object:
        if self._forkServer is not None:
            self._forkServer.close()
        succession = getattr(self.parent, "_succession", None)
        if succession is not None:
            succession.closeChannel()
        return result


class SupervisorService(GracefulService):
    """
    A L{GracefulService} that serves through N worker processes.

    @ivar pool: The workers.
    """

    _log = Logger()
    _killWorker = staticmethod(os.kill)

    def __init__(
        self,
        *,
        workers: int,
        stopTimeout: float = DEFAULT_SHUTDOWN_TIMEOUT + DEFAULT_STOP_GRACE,
        workerArgv: Sequence[str] | None = None,
        recycle: RecyclePolicy | None = None,
        forkServer: ForkServer | None = None,
        **kwargs: Any,
    ) -> None:
        """
        @param workers: N.
        @param stopTimeout: Seconds the workers have to exit once told to
            stop (their drain, their hooks), before they are killed.
        @param workerArgv: The worker's command; the supervisor's own by
            default.
        @param recycle: When a worker is recycled (replaced once it has
            served enough requests or grown too large); never by default.
        @param forkServer: Forks the workers, which then run the program's
            own C{__main__} (see L{twisted_graceful._forkserver}); without
            it, or once it is gone, each worker runs C{workerArgv}.
        @param kwargs: As for L{GracefulService}.
        """
        super().__init__(**kwargs)
        self._workerDirectory = os.getcwd()
        self._workerArgv = list(workerArgv) if workerArgv is not None else None
        self._forkServer = forkServer
        self._workerReadyTimeout = kwargs.get("readyTimeout", DEFAULT_READY_TIMEOUT)
        self.poolCore = PoolCore(
            self._clock,
            self._spawnWorker,
            workers,
            stopTimeout,
            onFull=self._poolFull,
            onChange=self._poolChanged,
            recycle=recycle or RecyclePolicy(),
            probation=self._probation,
        )
        self.pool = poolFor(self.poolCore)
        self._index = 0
        self._statusCall: Any = None
        self._broker = Broker(self._clock)
        _PoolService(self.pool, forkServer).setServiceParent(self)

    def addEndpoint(
        self,
        description: str,
        site: Site | IResource,
        *,
        shutdownTimeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
        idleGrace: float = DEFAULT_IDLE_GRACE,
    ) -> GracefulSiteService:
        """
        Hold C{description}'s socket for the workers.
        """
        endpoint = _HeldSocket(description, site, shutdownTimeout=shutdownTimeout, idleGrace=idleGrace, reactor=self._reactor)
        endpoint.setServiceParent(self)
        return endpoint

    def _reactorRunning(self) -> None:
        if self._handleSignals:
            # Until the workers are ready: their default action would kill
            # the supervisor.
            router = SignalRouter(self._clock, self._signalModule)
            for signum in {signal.SIGHUP, signal.SIGUSR1, self._restartSignal or signal.SIGUSR2}:
                router.onSignal(signum, self._tooEarly)
        self.pool.start()

    def _tooEarly(self, signum: int) -> None:
        self._log.warn(
            "Received {signal} while the workers start: ignored",
            signal=signal.Signals(signum).name,
            phase="signal-ignored",
        )

    def _poolFull(self) -> None:
        # As GracefulService._reactorRunning, but SIGHUP replaces the
        # workers, not the supervisor: routed so before ready is announced.
        if self._handleSignals:
            self._installSignals("ignore")
            if self._hangup == "restart":
                SignalRouter(self._clock, self._signalModule).onSignal(signal.SIGHUP, self._hangupReceived)
        self._closeUnusedInherited()
        assert self._succession is not None
        self._succession.ready()
        self._poolChanged()

    def _poolChanged(self) -> None:
        if self._statusCall is not None and self._statusCall.active():
            self._statusCall.cancel()
        self._statusCall = None
        self._reporter.workers(
            workers=self.poolCore.listing(), crashLoop=self.poolCore.crashLooping(), recycled=self.poolCore.recycled
        )

    def _ignoredByWorkers(self) -> list[int]:
        return [*WORKER_IGNORES, *([self._restartSignal] if self._restartSignal else [])]

    def _workerCommand(self) -> list[str]:
        argv = self._workerArgv if self._workerArgv is not None else [sys.executable, *sys.orig_argv[1:]]
        return workerCommand(argv, self._ignoredByWorkers())

    def _start(
        self,
        worker: WorkerProcess,
        environ: dict[str, str],
        childFDs: dict[int, int | str],
        forkServer: ForkServer | None,
    ) -> None:
        """
        Start C{worker}: forked by C{forkServer}, else a fresh interpreter.

        @raise Exception: It could not be started at all.
        """
        if forkServer is not None:
            try:
                forkServer.spawnProcess(
                    self._clock, worker, environ, self._workerDirectory, childFDs, self._ignoredByWorkers()
                )
                return
            except ForkServerError as e:
                self._log.warn(
                    "The fork server cannot start worker {worker}: {error}; it starts as a fresh interpreter",
                    worker=self._index,
                    error=e,
                    phase="fork-server-lost",
                )
        command = self._workerCommand()
        self._clock.spawnProcess(worker, command[0], command, env=environ, path=self._workerDirectory, childFDs=childFDs)

    def _spawnWorker(self, pool: Pool, generation: int) -> WorkerHandle:
        self._index += 1
        sockets = {e.identity: e.fileno() for e in self.endpoints() if e.port is not None}
        handover = encodeHandover(sockets, os.getpid(), 0)
        childFDs = dict(handover.childFDs)
        channels = self._workerChannels()
        numbers = None
        if channels is not None:
            numbers = (max(childFDs) + 1, max(childFDs) + 2)
            childFDs[numbers[0]] = channels.workerUp.fileno()
            childFDs[numbers[1]] = channels.workerDown.fileno()
        forkServer = self._forkServer if self._forkServer is not None and self._forkServer.lost is None else None
        environ = workerEnvironment(
            os.environ, handover, self._index, generation, numbers, forkServer.pid if forkServer is not None else None
        )
        worker = WorkerProcess(
            pool, self._clock, handover.readyFD, handover.lifelineFD, self._workerReadyTimeout, kill=self._killWorker
        )
        worker.onStats = self._workerStats
        try:
            self._start(worker, environ, childFDs, forkServer)
        except Exception as e:
            error = ChildExitedEarly(f"Cannot start a worker {self._workerCommand()!r}: {e}")
            worker.failure = Failure(error)
            self._clock.callLater(0, pool._workerExited, worker, worker.failure)
            if channels is not None:
                for end in (channels.up, channels.down, channels.workerUp, channels.workerDown):
                    end.close()
            return worker
        if channels is not None:
            channels.spawned()
            self._broker.add(worker, channels)
            worker.onDrain = self._workerDraining
            worker.onEnded = self._broker.remove
        return worker

    def _successionOptions(self) -> dict[str, Any]:
        # Connections a predecessor's workers move go on to a worker; the
        # channel to a successor stays open while the workers drain.
        return {"adopt": self._broker.passOn, "keepChannel": True}

    def _workerDraining(self, worker: WorkerProcess) -> None:
        """
        C{worker} is told to drain: its connections move to another worker,
        or, once this supervisor has handed over, to its successor's
        workers; not when it simply stops.
        """
        channel = self._succession.channel if self._succession is not None else None
        self._broker.upstream = channel
        self._broker.draining(worker, moveConnections=channel is not None or not self.stopping)

    def _workerChannels(self) -> WorkerChannels | None:
        """
        A new worker's hand-off channels, unless connections do not move.
        """
        if not self._connectionHandoff:
            return None
        try:
            return WorkerChannels.make()
        except OSError as e:
            self._log.warn(
                "Cannot make a worker's hand-off channels ({error}): its kept-alive connections will be "
                "closed, not moved, when it is replaced",
                error=e,
                phase="handoff-unavailable",
            )
            return None

    def _workerStats(self, worker: WorkerProcess, stats: dict[str, Any]) -> None:
        record = self.poolCore.find(worker)
        if record is None:
            return
        requests, rss = stats.get("requests"), stats.get("rss")
        requests = requests if isinstance(requests, int) else None
        changed = requests is not None and requests != record.requests
        # The pool records the figures and recycles a worker past its limit.
        self.pool._workerReport(worker, requests, rss if isinstance(rss, int) else None)
        if changed and self._statusCall is None:
            # At most one write a second for the counts.
            self._statusCall = self._clock.callLater(STATUS_INTERVAL, self._poolChanged)

    def rollingRestart(self) -> Deferred[RolloutOutcome]:
        """
        Replace every worker, one at a time, never below N ready.

        @return: A L{Deferred} that fires with the L{RolloutOutcome} when
            every worker was replaced; fails with L{ChildExitedEarly} or
            L{ChildReadyTimeout} when a new worker failed (the rollout
            stopped, the other workers serve on), L{RestartInProgress}
            during another rollout, L{NotReadyToRestart} while starting or
            stopping.
        """
        self._reporter.workers(rollout={"generation": self.poolCore.generation + 1, "outcome": "pending"})
        result = self.pool.rollingRestart()
        result.addCallbacks(self._rolloutDone, self._rolloutFailed)
        return result

    def _rolloutDone(self, outcome: RolloutOutcome) -> RolloutOutcome:
        self._reporter.workers(
            rollout={"generation": outcome.generation, "outcome": "ok", "elapsed": round(outcome.elapsed, 3)}
        )
        self._reporter.notifier.status(f"Workers replaced: generation {outcome.generation}")
        return outcome

    def _rolloutFailed(self, failure: Failure) -> Failure:
        self._reporter.workers(
            rollout={"generation": self.poolCore.generation, "outcome": "failed", "reason": failure.getErrorMessage()}
        )
        self._reporter.notifier.status(f"Rolling restart failed, old workers serve on: {failure.getErrorMessage()}")
        return failure

    def _hangupReceived(self, signum: int) -> None:
        self._log.info("Received SIGHUP: replacing the workers one at a time", signal="SIGHUP", phase="rollout-signal")
        self.rollingRestart().addErrback(lambda f: None)  # Logged by the pool.

    def _reopenLogFiles(self) -> None:
        super()._reopenLogFiles()
        for worker in self.poolCore.workers:
            worker.handle.sendSignal(signal.SIGUSR1)  # type: ignore[attr-defined]

    def cutShort(self) -> None:
        super().cutShort()
        self.pool.cutShort()
