# -*- test-case-name: tests.test_workers_pool -*-
"""
L{WorkerPool}: the supervisor's N worker processes, as an Automat machine.

Invariants, each a state or a refused transition:
  - the pool keeps N workers; a worker that exits unasked is replaced, at
    once the first time, then after a delay that doubles with each failure
    in a row (up to L{MAX_BACKOFF}); after L{CRASH_LOOP_AFTER} failures in a
    row the pool says it is in a crash loop;
  - a rolling restart replaces the workers one at a time, and never runs
    below N ready workers: a new worker is ready first, then one old worker
    drains, and the next new worker starts once that one has exited (so at
    most N + 1 workers run); a new worker that fails before it is ready, or
    dies while its predecessor drains, stops the rollout and the workers not
    yet replaced serve on;
  - one rollout at a time (L{RestartInProgress}); none while the pool
    starts or stops (L{NotReadyToRestart});
  - a stop drains every worker at once, kills those still there at the stop
    deadline, and ends when the last has exited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from attrs import frozen
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import NotReadyToRestart, RestartInProgress

_log = Logger(namespace="twisted_graceful.workers")

STABLE_AFTER = 10.0
"""
Seconds a worker must have been ready for its exit not to count as one more
failure in a row.
"""

BASE_BACKOFF = 0.5
MAX_BACKOFF = 30.0
CRASH_LOOP_AFTER = 5


def backoff(failures: int) -> float:
    """
    Seconds to wait before replacing a worker after C{failures} failures in
    a row: none after the first, then 0.5 s doubling up to L{MAX_BACKOFF}.
    """
    if failures <= 1:
        return 0.0
    return float(min(BASE_BACKOFF * 2 ** (failures - 2), MAX_BACKOFF))


class WorkerHandle(Protocol):
    """
    What the pool needs of one worker process.
    """

    @property
    def pid(self) -> int | None: "The worker's pid, once started."

    def drain(self) -> None: "Ask the worker to stop accepting, drain and exit."

    def interrupt(self) -> None: "Cut the worker's drain short (SIGTERM to a draining worker)."

    def kill(self) -> None: "SIGKILL the worker."


@frozen
class RolloutOutcome:
    """
    A rolling restart that replaced every worker.

    @ivar generation: The generation the workers run now.
    @ivar replaced: How many workers were replaced.
    @ivar elapsed: Seconds from the request to the last old worker's exit.
    """

    generation: int
    replaced: int
    elapsed: float


@dataclass(eq=False)
class Worker:
    """
    The pool's record of one worker.

    @ivar state: C{starting}, C{ready} or C{draining}.
    @ivar requests: Requests the worker reported it served.
    @ivar rss: Resident memory it reported, in bytes.
    """

    handle: WorkerHandle
    generation: int
    started: float
    state: str = "starting"
    readyAt: float | None = None
    requests: int = 0
    rss: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.handle.pid,
            "generation": self.generation,
            "state": self.state,
            "requests": self.requests,
            "started": self.started,
        }


class Pool(Protocol):
    def start(self) -> None:
        "Start the workers."

    def rollingRestart(self) -> Deferred[RolloutOutcome]:
        "Replace every worker, one at a time."

    def stop(self) -> Deferred[None]:
        "Drain every worker at once; fires once the last has exited."

    def cutShort(self) -> None:
        "Stop, and cut every worker's drain short."

    def _workerReady(self, handle: WorkerHandle) -> None:
        "A worker reported ready."

    def _workerExited(self, handle: WorkerHandle, reason: Failure) -> None:
        "A worker's process ended (or never started)."

    def _respawnDue(self) -> None:
        "The delay before replacing lost workers is over."

    def _full(self) -> None:
        "Every one of the N first workers is ready."

    def _rolloutEnded(self) -> None:
        "The rollout replaced every worker, or stopped."

    def _allGone(self) -> None:
        "While stopping: the last worker has exited."


@dataclass
class PoolCore:
    """
    The pool's data and effects.

    @ivar clock: Times the backoff and the stop deadline.
    @ivar spawn: Starts a worker of a generation; its process then calls
        the machine's C{_workerReady} and C{_workerExited}.
    @ivar size: N, the number of workers.
    @ivar stopTimeout: Seconds the workers have to exit once told to stop,
        before they are killed.
    @ivar onFull: Called once, when the first N workers are ready.
    @ivar onChange: Called after each change of a worker or the pool.
    """

    clock: IReactorTime
    spawn: Callable[[Pool, int], WorkerHandle]
    size: int
    stopTimeout: float
    onFull: Callable[[], None] = lambda: None
    onChange: Callable[[], None] = lambda: None
    workers: list[Worker] = field(default_factory=list)
    generation: int = 1
    failures: int = 0
    lastFailure: float | None = None
    missing: int = 0
    respawnCall: IDelayedCall | None = None
    killCall: IDelayedCall | None = None
    stopWaiters: list[Deferred[None]] = field(default_factory=list)
    rollout: _Rollout | None = None
    rolloutResult: Deferred[RolloutOutcome] | None = None
    machine: Pool | None = None

    def find(self, handle: WorkerHandle) -> Worker | None:
        return next((w for w in self.workers if w.handle is handle), None)

    def ready(self) -> list[Worker]:
        return [w for w in self.workers if w.state == "ready"]

    def crashLooping(self) -> bool:
        """
        Whether workers keep failing: L{CRASH_LOOP_AFTER} failures in a row,
        the last one recent or the pool still short of ready workers.
        """
        if self.failures < CRASH_LOOP_AFTER or self.lastFailure is None:
            return False
        recent = self.clock.seconds() - self.lastFailure < STABLE_AFTER
        return recent or len(self.ready()) < self.size

    def listing(self) -> list[dict[str, Any]]:
        """
        Each worker, for the status file.
        """
        return [w.describe() for w in self.workers]


@dataclass
class _Rollout:
    """
    A rolling restart: the old workers still to replace, the new worker
    starting, the old worker draining.
    """

    old: list[Worker]
    started: float
    result: Deferred[RolloutOutcome] = field(default_factory=Deferred)
    new: Worker | None = None
    draining: Worker | None = None
    replaced: int = 0


def _spawn(pool: Pool, core: PoolCore) -> Worker:
    worker = Worker(core.spawn(pool, core.generation), core.generation, core.clock.seconds())
    core.workers.append(worker)
    _log.info(
        "Started worker {workerPID}, generation {generation}",
        workerPID=worker.handle.pid,
        generation=core.generation,
        phase="worker-spawned",
    )
    return worker


def _markReady(pool: Pool, core: PoolCore, handle: WorkerHandle) -> Worker | None:
    worker = core.find(handle)
    if worker is None or worker.state != "starting":
        return None
    worker.state = "ready"
    worker.readyAt = core.clock.seconds()
    _log.info(
        "Worker {workerPID} is ready after {elapsed:.3f} s",
        workerPID=handle.pid,
        generation=worker.generation,
        elapsed=worker.readyAt - worker.started,
        phase="worker-ready",
    )
    if core.failures and core.lastFailure is not None and worker.readyAt - core.lastFailure >= STABLE_AFTER:
        core.failures = 0
    core.onChange()
    return worker


def _lost(core: PoolCore, worker: Worker, reason: Failure) -> None:
    """
    A worker exited unasked: count the failure and replace it.
    """
    now = core.clock.seconds()
    if worker.readyAt is not None and now - worker.readyAt >= STABLE_AFTER:
        core.failures = 1
    else:
        core.failures += 1
    core.lastFailure = now
    core.missing += 1
    delay = backoff(core.failures)
    _log.error(
        "Worker {workerPID} exited unexpectedly ({reason}): replacing it in {delay} s",
        workerPID=worker.handle.pid,
        generation=worker.generation,
        reason=reason.getErrorMessage(),
        delay=delay,
        failures=core.failures,
        phase="worker-lost",
    )
    if core.failures == CRASH_LOOP_AFTER:
        _log.error(
            "Workers are in a crash loop: {failures} failures in a row; replacing them every "
            "{delay} s at most. See the workers' output.",
            failures=core.failures,
            delay=MAX_BACKOFF,
            phase="crash-loop",
        )
    if core.respawnCall is None or not core.respawnCall.active():
        core.respawnCall = core.clock.callLater(delay, _respawnLater, core)


def _respawnLater(core: PoolCore) -> None:
    core.respawnCall = None
    if core.machine is not None:
        core.machine._respawnDue()


def _exited(core: PoolCore, handle: WorkerHandle, reason: Failure) -> Worker | None:
    """
    Forget a worker that exited; replace it unless it was asked to go.

    @return: The worker's record, or L{None} if it is not one of the pool's.
    """
    worker = core.find(handle)
    if worker is None:
        return None
    core.workers.remove(worker)
    if worker.state == "draining":
        _log.info(
            "Worker {workerPID} has exited",
            workerPID=handle.pid,
            generation=worker.generation,
            phase="worker-exited",
        )
    elif core.rollout is None or worker is not core.rollout.new:
        _lost(core, worker, reason)
    core.onChange()
    return worker


def _respawn(pool: Pool, core: PoolCore) -> None:
    core.respawnCall = None
    missing, core.missing = core.missing, 0
    for _ in range(missing):
        _spawn(pool, core)
    core.onChange()


def _drainWorker(core: PoolCore, worker: Worker) -> None:
    worker.state = "draining"
    worker.handle.drain()
    core.onChange()


def _beginStop(pool: Pool, core: PoolCore) -> None:
    if core.respawnCall is not None and core.respawnCall.active():
        core.respawnCall.cancel()
    core.respawnCall = None
    core.missing = 0
    if core.rollout is not None:
        rollout, core.rollout = core.rollout, None
        error = NotReadyToRestart("the supervisor is stopping; the rollout was abandoned")
        _log.warn("Rollout abandoned: {reason}", reason=str(error), phase="rollout-abandoned")
        rollout.result.errback(Failure(error))
    _log.info("Stopping {count} workers", count=len(core.workers), phase="workers-stopping")
    for worker in core.workers:
        if worker.state != "draining":
            _drainWorker(core, worker)
    core.killCall = core.clock.callLater(core.stopTimeout, _killRemaining, core)
    if not core.workers:
        pool._allGone()


def _killRemaining(core: PoolCore) -> None:
    core.killCall = None
    for worker in core.workers:
        _log.warn(
            "Worker {workerPID} did not exit within {timeout} s of the stop: killing it",
            workerPID=worker.handle.pid,
            timeout=core.stopTimeout,
            phase="worker-killed",
        )
        worker.handle.kill()


def _stopWaiter(core: PoolCore) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    core.stopWaiters.append(d)
    return d


def _stepRollout(pool: Pool, core: PoolCore, rollout: _Rollout) -> None:
    """
    Start the next new worker, or end the rollout when no old one is left.
    """
    rollout.old = [w for w in rollout.old if w in core.workers and w.state == "ready"]
    if not rollout.old:
        outcome = RolloutOutcome(core.generation, rollout.replaced, core.clock.seconds() - rollout.started)
        _log.info(
            "Rollout done: {replaced} workers replaced in {elapsed:.3f} s, generation {generation}",
            replaced=outcome.replaced,
            elapsed=outcome.elapsed,
            generation=outcome.generation,
            phase="rollout-done",
        )
        core.rollout = None
        rollout.result.callback(outcome)
        pool._rolloutEnded()
        return
    rollout.new = _spawn(pool, core)


def _beginRollout(pool: Pool, core: PoolCore) -> _Rollout:
    core.generation += 1
    rollout = _Rollout(sorted(core.ready(), key=lambda w: w.started), core.clock.seconds())
    core.rollout = rollout
    core.rolloutResult = rollout.result
    _log.info(
        "Rolling restart: replacing {count} workers one at a time, generation {generation}",
        count=len(rollout.old),
        generation=core.generation,
        phase="rollout-started",
    )
    _stepRollout(pool, core, rollout)
    return rollout


def _refuse(error: Exception) -> Callable[..., Deferred[RolloutOutcome]]:
    def refuse(pool: Pool, core: PoolCore, *args: object) -> Deferred[RolloutOutcome]:
        _log.warn("Rolling restart refused: {reason}", reason=str(error), phase="rollout-refused")
        return fail(error)

    return refuse


def _ignore(pool: Pool, core: PoolCore, *args: Any) -> None:
    return None


def _makeMachine() -> Callable[[PoolCore], Pool]:
    builder = TypeMachineBuilder(Pool, PoolCore)
    Idle = builder.state("Idle")
    Starting = builder.state("Starting")
    Serving = builder.state("Serving")
    Rolling = builder.state("Rolling", _beginRollout)
    Stopping = builder.state("Stopping")
    Stopped = builder.state("Stopped")

    @Idle.upon(Pool.start).to(Starting)
    def start(pool: Pool, core: PoolCore) -> None:
        _log.info("Starting {count} workers", count=core.size, phase="workers-starting")
        for _ in range(core.size):
            _spawn(pool, core)

    @Idle.upon(Pool.stop).to(Stopped)
    def stopIdle(pool: Pool, core: PoolCore) -> Deferred[None]:
        return succeed(None)

    Idle.upon(Pool.rollingRestart).loop()(_refuse(NotReadyToRestart("the workers have not started")))
    Idle.upon(Pool.cutShort).loop()(_ignore)

    @Starting.upon(Pool._workerReady).loop()
    def readyStarting(pool: Pool, core: PoolCore, handle: WorkerHandle) -> None:
        _markReady(pool, core, handle)
        if len(core.ready()) >= core.size:
            pool._full()

    @Starting.upon(Pool._full).to(Serving)
    def full(pool: Pool, core: PoolCore) -> None:
        _log.info("All {count} workers are ready", count=core.size, phase="workers-ready")
        core.onFull()

    Starting.upon(Pool.rollingRestart).loop()(_refuse(NotReadyToRestart("the workers are still starting")))

    for state in (Starting, Serving):

        @state.upon(Pool._workerExited).loop()
        def exited(pool: Pool, core: PoolCore, handle: WorkerHandle, reason: Failure) -> None:
            _exited(core, handle, reason)

        state.upon(Pool._respawnDue).loop()(_respawn)

    @Serving.upon(Pool._workerReady).loop()
    def readyServing(pool: Pool, core: PoolCore, handle: WorkerHandle) -> None:
        _markReady(pool, core, handle)

    @Serving.upon(Pool.rollingRestart).to(Rolling)
    def rollingRestart(pool: Pool, core: PoolCore) -> Deferred[RolloutOutcome]:
        # The state's data factory, _beginRollout, ran first.
        assert core.rolloutResult is not None
        result, core.rolloutResult = core.rolloutResult, None
        return result

    Rolling.upon(Pool.rollingRestart).loop()(
        _refuse(RestartInProgress("a rolling restart is in progress; it is left to finish"))
    )

    @Rolling.upon(Pool._workerReady).loop()
    def readyRolling(pool: Pool, core: PoolCore, rollout: _Rollout, handle: WorkerHandle) -> None:
        worker = _markReady(pool, core, handle)
        if worker is None or worker is not rollout.new:
            return
        rollout.old = [w for w in rollout.old if w in core.workers and w.state == "ready"]
        if not rollout.old:
            _stepRollout(pool, core, rollout)
            return
        rollout.draining = rollout.old.pop(0)
        _drainWorker(core, rollout.draining)

    @Rolling.upon(Pool._workerExited).loop()
    def exitedRolling(pool: Pool, core: PoolCore, rollout: _Rollout, handle: WorkerHandle, reason: Failure) -> None:
        worker = _exited(core, handle, reason)
        if worker is None:
            return
        if worker is rollout.draining:
            rollout.draining = None
            rollout.replaced += 1
            if rollout.new is not None and rollout.new.state == "ready":
                rollout.new = None
                _stepRollout(pool, core, rollout)
            return
        if worker is rollout.new:
            if rollout.draining is not None:
                # Its predecessor drains already: replace it.
                _lost(core, worker, reason)
            _log.error(
                "Rollout stopped: new worker {workerPID} failed ({reason}); {count} workers of the "
                "previous generation serve on",
                workerPID=handle.pid,
                reason=reason.getErrorMessage(),
                count=len(rollout.old),
                phase="rollout-failed",
            )
            core.rollout = None
            rollout.result.errback(reason)
            pool._rolloutEnded()

    @Rolling.upon(Pool._respawnDue).loop()
    def respawnRolling(pool: Pool, core: PoolCore, rollout: _Rollout) -> None:
        _respawn(pool, core)

    Rolling.upon(Pool._rolloutEnded).to(Serving).returns(None)

    def stop(pool: Pool, core: PoolCore, *data: object) -> Deferred[None]:
        waiter = _stopWaiter(core)
        _beginStop(pool, core)
        return waiter

    def cutShortRunning(pool: Pool, core: PoolCore, *data: object) -> None:
        _beginStop(pool, core)
        for worker in core.workers:
            worker.handle.interrupt()

    for state in (Starting, Serving):
        state.upon(Pool.stop).to(Stopping)(stop)
        state.upon(Pool.cutShort).to(Stopping)(cutShortRunning)
    Rolling.upon(Pool.stop).to(Stopping)(stop)
    Rolling.upon(Pool.cutShort).to(Stopping)(cutShortRunning)

    @Stopping.upon(Pool.stop).loop()
    def stopAgain(pool: Pool, core: PoolCore) -> Deferred[None]:
        return _stopWaiter(core)

    @Stopping.upon(Pool.cutShort).loop()
    def cutShortStopping(pool: Pool, core: PoolCore) -> None:
        for worker in core.workers:
            worker.handle.interrupt()

    @Stopping.upon(Pool._workerExited).loop()
    def exitedStopping(pool: Pool, core: PoolCore, handle: WorkerHandle, reason: Failure) -> None:
        _exited(core, handle, reason)
        if not core.workers:
            pool._allGone()

    @Stopping.upon(Pool._allGone).to(Stopped)
    def allGone(pool: Pool, core: PoolCore) -> None:
        if core.killCall is not None and core.killCall.active():
            core.killCall.cancel()
        core.killCall = None
        _log.info("Every worker has exited", phase="workers-stopped")
        waiters, core.stopWaiters = core.stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    @Stopping.upon(Pool._workerReady).loop()
    def readyStopping(pool: Pool, core: PoolCore, handle: WorkerHandle) -> None:
        "Told to drain already: it will exit."

    Stopping.upon(Pool._respawnDue).loop()(_ignore)
    Stopping.upon(Pool.rollingRestart).loop()(_refuse(NotReadyToRestart("the supervisor is stopping")))

    @Stopped.upon(Pool.stop).loop()
    def stopStopped(pool: Pool, core: PoolCore) -> Deferred[None]:
        return succeed(None)

    Stopped.upon(Pool.cutShort).loop()(_ignore)
    Stopped.upon(Pool.rollingRestart).loop()(_refuse(NotReadyToRestart("the supervisor has stopped")))

    return builder.build()


_MACHINE = _makeMachine()


def poolFor(core: PoolCore) -> Pool:
    """
    Build the pool machine for C{core}, idle until L{Pool.start}.
    """
    machine = _MACHINE(core)
    core.machine = machine
    return machine
