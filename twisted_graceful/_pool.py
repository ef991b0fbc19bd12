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
    most N + 1 workers run), the second only once the first has lived
    through its probation (a canary); a new worker that fails before it is ready,
    dies while its predecessor drains, or dies within the probation after it
    was ready, stops the rollout and the workers not yet replaced serve on;
    the rollout succeeds once the last new worker has lived through its
    probation;
  - one rollout at a time (L{RestartInProgress}); none while the pool
    starts or stops (L{NotReadyToRestart});
  - a ready worker past its recycling limit (requests served, or resident
    memory, as its last report says) is recycled as one step of a rollout:
    a new worker of its generation starts, and once it is ready the old one
    drains.  One recycle at a time; none while the pool starts or rolls
    (each waits, and runs once the pool serves); a rollout asked during a
    recycle waits for it.  A new worker that fails before it is ready ends
    the recycle, the old worker serves on, and the next recycle waits for
    the failures' backoff;
  - a stop drains every worker at once, kills those still there at the stop
    deadline, and ends when the last has exited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import randint
from typing import Any, Callable, Protocol

from attrs import frozen
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import ChildExitedEarly, NotReadyToRestart, RestartInProgress

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
    maxRequests: int | None = None
    recycling: str | None = None

    def describe(self) -> dict[str, Any]:
        described = {
            "pid": self.handle.pid,
            "generation": self.generation,
            "state": self.state,
            "requests": self.requests,
            "started": self.started,
        }
        if self.recycling is not None:
            described["recycling"] = self.recycling
        return described


@frozen
class RecyclePolicy:
    """
    When a worker is replaced because it has served enough.

    @ivar maxRequests: Requests a worker serves before it is recycled; 0
        for no limit.
    @ivar jitter: Each worker's limit is C{maxRequests} plus a number drawn
        from 0 to C{jitter}, so that workers started together are not
        recycled together.
    @ivar maxMemory: Resident memory, in bytes, past which a worker is
        recycled; 0 for no limit.
    @ivar randint: Draws the jitter: C{randint(0, jitter)}.
    """

    maxRequests: int = 0
    jitter: int = 0
    maxMemory: int = 0
    randint: Callable[[int, int], int] = randint

    def limitFor(self) -> int | None:
        """
        A new worker's request limit, or L{None} for none.
        """
        if self.maxRequests <= 0:
            return None
        return self.maxRequests + (self.randint(0, self.jitter) if self.jitter > 0 else 0)

    def reason(self, worker: Worker) -> dict[str, Any] | None:
        """
        Why C{worker} is due for recycling, as log fields, or L{None}.
        """
        if worker.maxRequests is not None and worker.requests >= worker.maxRequests:
            return {"reason": "requests", "requests": worker.requests, "limit": worker.maxRequests}
        if self.maxMemory > 0 and worker.rss is not None and worker.rss > self.maxMemory:
            return {"reason": "memory", "rss": worker.rss, "limit": self.maxMemory}
        return None


class Pool(Protocol):
    def start(self) -> None:
        "Start the workers."

    def rollingRestart(self) -> Deferred[RolloutOutcome]:
        "Replace every worker, one at a time."

    def _workerReport(self, handle: WorkerHandle, requests: int | None, rss: int | None) -> None:
        "A worker reported its stats (requests served, resident memory in bytes)."

    def _recycleDue(self) -> None:
        "A ready worker is past its recycling limit."

    def _recycleEnded(self) -> None:
        "The recycled worker has exited, or its replacement failed."

    def _rolloutDue(self) -> None:
        "A rollout asked during a recycle may run."

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
    recycle: RecyclePolicy = field(default_factory=RecyclePolicy)
    probation: float = 0.0
    recycled: int = 0
    recycleAfter: float = 0.0
    pendingRollout: Deferred[RolloutOutcome] | None = None
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

    def recycleCandidate(self) -> tuple[Worker, dict[str, Any]] | None:
        """
        The oldest ready worker past its recycling limit, with why, unless
        a failed recycle's backoff still runs.
        """
        if self.clock.seconds() < self.recycleAfter:
            return None
        for worker in sorted(self.ready(), key=lambda w: w.started):
            why = self.recycle.reason(worker)
            if why is not None:
                return worker, why
        return None

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
    placed: list[Worker] = field(default_factory=list)
    probationCall: IDelayedCall | None = None


@dataclass
class _Recycle:
    """
    A recycle: the old worker past its limit, and the new worker that
    replaces it.
    """

    old: Worker | None
    new: Worker
    why: dict[str, Any]


def _spawn(pool: Pool, core: PoolCore) -> Worker:
    worker = Worker(core.spawn(pool, core.generation), core.generation, core.clock.seconds())
    worker.maxRequests = core.recycle.limitFor()
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


def _countFailure(core: PoolCore, worker: Worker) -> None:
    """
    One more failure in a row, unless C{worker} had been stable.
    """
    now = core.clock.seconds()
    if worker.readyAt is not None and now - worker.readyAt >= STABLE_AFTER:
        core.failures = 1
    else:
        core.failures += 1
    core.lastFailure = now


def _lost(core: PoolCore, worker: Worker, reason: Failure) -> None:
    """
    A worker exited unasked: count the failure and replace it.
    """
    _countFailure(core, worker)
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


def _maybeRecycle(pool: Pool, core: PoolCore) -> None:
    """
    Recycle a worker past its limit, if there is one.
    """
    if core.recycleCandidate() is not None:
        pool._recycleDue()


def _report(core: PoolCore, handle: WorkerHandle, requests: int | None, rss: int | None) -> Worker | None:
    worker = core.find(handle)
    if worker is None:
        return None
    if requests is not None:
        worker.requests = requests
    if rss is not None:
        worker.rss = rss
    return worker


def _beginRecycle(pool: Pool, core: PoolCore) -> _Recycle:
    candidate = core.recycleCandidate()
    assert candidate is not None, "_recycleDue without a worker past its limit"
    old, why = candidate
    if why["reason"] == "requests":
        old.recycling = f"served {why['requests']} requests (limit {why['limit']})"
    else:
        old.recycling = f"uses {why['rss'] // 2**20} MB (limit {why['limit'] // 2**20} MB)"
    _log.info(
        "Recycling worker {workerPID}: it {recycling}; starting its replacement first",
        workerPID=old.handle.pid,
        generation=old.generation,
        recycling=old.recycling,
        phase="worker-recycling",
        **why,
    )
    recycle = _Recycle(old, _spawn(pool, core), why)
    core.onChange()
    return recycle


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
    if core.pendingRollout is not None:
        pending, core.pendingRollout = core.pendingRollout, None
        pending.errback(Failure(NotReadyToRestart("the supervisor is stopping; the rollout was abandoned")))
    if core.rollout is not None:
        rollout, core.rollout = core.rollout, None
        if rollout.probationCall is not None and rollout.probationCall.active():
            rollout.probationCall.cancel()
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
        rollout.new = None
        now = core.clock.seconds()
        until = max((w.readyAt for w in rollout.placed if w in core.workers and w.readyAt is not None), default=now)
        if core.probation > 0 and until + core.probation > now:
            rollout.probationCall = core.clock.callLater(until + core.probation - now, _probationOver, pool, core, rollout)
            return
        _finishRollout(pool, core, rollout)
        return
    first = rollout.placed[0] if len(rollout.placed) == 1 else None
    if first is not None and first.readyAt is not None and core.probation > 0:
        # The first new worker is the canary: the others wait until it has
        # lived through its probation, so that a release that dies soon
        # after ready replaces one old worker, not all of them.
        left = first.readyAt + core.probation - core.clock.seconds()
        if left > 0:
            rollout.probationCall = core.clock.callLater(left, _probationOver, pool, core, rollout)
            return
    rollout.new = _spawn(pool, core)


def _probationOver(pool: Pool, core: PoolCore, rollout: _Rollout) -> None:
    rollout.probationCall = None
    if core.rollout is rollout:
        # The next new worker, or the end of the rollout.
        _stepRollout(pool, core, rollout)


def _onProbation(core: PoolCore, rollout: _Rollout, worker: Worker) -> bool:
    """
    Whether C{worker} is one of the rollout's new workers, ready for less
    than the probation.
    """
    return (
        core.probation > 0
        and worker in rollout.placed
        and worker.readyAt is not None
        and core.clock.seconds() - worker.readyAt < core.probation
    )


def _finishRollout(pool: Pool, core: PoolCore, rollout: _Rollout) -> None:
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


def _ignore(pool: Pool, core: PoolCore, *args: object) -> None:
    return None


def _makeMachine() -> Callable[[PoolCore], Pool]:
    builder = TypeMachineBuilder(Pool, PoolCore)
    Idle = builder.state("Idle")
    Starting = builder.state("Starting")
    Serving = builder.state("Serving")
    Rolling = builder.state("Rolling", _beginRollout)
    Recycling = builder.state("Recycling", _beginRecycle)
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
        _maybeRecycle(pool, core)

    for state in (Starting, Stopping):

        @state.upon(Pool._workerReport).loop()
        def report(pool: Pool, core: PoolCore, handle: WorkerHandle, requests: int | None, rss: int | None) -> None:
            _report(core, handle, requests, rss)

    @Rolling.upon(Pool._workerReport).loop()
    def reportRolling(
        pool: Pool, core: PoolCore, rollout: _Rollout, handle: WorkerHandle, requests: int | None, rss: int | None
    ) -> None:
        # A worker past its limit waits for the rollout's end.
        _report(core, handle, requests, rss)

    @Recycling.upon(Pool._workerReport).loop()
    def reportRecycling(
        pool: Pool, core: PoolCore, recycle: _Recycle, handle: WorkerHandle, requests: int | None, rss: int | None
    ) -> None:
        # One recycle at a time: the next waits for this one's end.
        _report(core, handle, requests, rss)

    @Serving.upon(Pool._workerReport).loop()
    def reportServing(pool: Pool, core: PoolCore, handle: WorkerHandle, requests: int | None, rss: int | None) -> None:
        if _report(core, handle, requests, rss) is not None:
            _maybeRecycle(pool, core)

    Serving.upon(Pool._recycleDue).to(Recycling).returns(None)
    Rolling.upon(Pool._recycleDue).loop()(_ignore)
    Recycling.upon(Pool._recycleDue).loop()(_ignore)
    Stopping.upon(Pool._recycleDue).loop()(_ignore)

    @Recycling.upon(Pool._workerReady).loop()
    def readyRecycling(pool: Pool, core: PoolCore, recycle: _Recycle, handle: WorkerHandle) -> None:
        worker = _markReady(pool, core, handle)
        if worker is None or worker is not recycle.new:
            return
        if recycle.old is not None and recycle.old in core.workers and recycle.old.state == "ready":
            _drainWorker(core, recycle.old)
        else:
            pool._recycleEnded()

    @Recycling.upon(Pool._workerExited).loop()
    def exitedRecycling(
        pool: Pool, core: PoolCore, recycle: _Recycle, handle: WorkerHandle, reason: Failure
    ) -> None:
        worker = core.find(handle)
        if worker is None:
            return
        if worker is recycle.new and worker.state == "starting":
            core.workers.remove(worker)
            if recycle.old is None:
                # The worker it was to replace is gone too.
                _lost(core, worker, reason)
            else:
                _countFailure(core, worker)
                core.recycleAfter = core.clock.seconds() + max(backoff(core.failures), BASE_BACKOFF)
                recycle.old.recycling = None
            _log.error(
                "Recycle stopped: new worker {workerPID} failed ({reason}); worker {oldPID} serves on",
                workerPID=handle.pid,
                oldPID=recycle.old.handle.pid if recycle.old is not None else None,
                reason=reason.getErrorMessage(),
                failures=core.failures,
                phase="recycle-failed",
            )
            core.onChange()
            pool._recycleEnded()
            return
        if worker is recycle.old and worker.state != "draining":
            # It crashed before its replacement was ready: that one replaces it.
            core.workers.remove(worker)
            _countFailure(core, worker)
            _log.error(
                "Worker {workerPID} exited unexpectedly ({reason}) while its replacement starts",
                workerPID=handle.pid,
                generation=worker.generation,
                reason=reason.getErrorMessage(),
                failures=core.failures,
                phase="worker-lost",
            )
            recycle.old = None
            core.onChange()
            return
        if worker is recycle.old:
            core.recycled += 1  # Before the change is reported.
        _exited(core, handle, reason)
        if worker is recycle.old:
            _log.info(
                "Worker {workerPID} recycled: worker {newPID} serves in its place",
                workerPID=handle.pid,
                newPID=recycle.new.handle.pid,
                recycled=core.recycled,
                phase="worker-recycled",
                **recycle.why,
            )
            pool._recycleEnded()

    @Recycling.upon(Pool._respawnDue).loop()
    def respawnRecycling(pool: Pool, core: PoolCore, recycle: _Recycle) -> None:
        _respawn(pool, core)

    @Recycling.upon(Pool.rollingRestart).loop()
    def rollingRestartRecycling(pool: Pool, core: PoolCore, recycle: _Recycle) -> Deferred[RolloutOutcome]:
        if core.pendingRollout is not None:
            return _refuse(RestartInProgress("a rolling restart is waiting for a recycle to end"))(pool, core)
        _log.info(
            "Rolling restart requested while worker {workerPID} is recycled: it starts once that ends",
            workerPID=recycle.old.handle.pid if recycle.old is not None else None,
            phase="rollout-waiting",
        )
        core.pendingRollout = Deferred()
        return core.pendingRollout

    @Recycling.upon(Pool._recycleEnded).to(Serving)
    def recycleEnded(pool: Pool, core: PoolCore, recycle: _Recycle) -> None:
        if core.pendingRollout is not None:
            pool._rolloutDue()
        else:
            _maybeRecycle(pool, core)

    @Serving.upon(Pool._rolloutDue).to(Rolling)
    def rolloutDue(pool: Pool, core: PoolCore) -> None:
        assert core.rolloutResult is not None
        result, core.rolloutResult = core.rolloutResult, None
        pending, core.pendingRollout = core.pendingRollout, None
        if pending is not None:
            result.chainDeferred(pending)
        else:
            result.addErrback(lambda f: None)

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
        rollout.placed.append(worker)
        rollout.old = [w for w in rollout.old if w in core.workers and w.state == "ready"]
        if not rollout.old:
            _stepRollout(pool, core, rollout)
            return
        rollout.draining = rollout.old.pop(0)
        _drainWorker(core, rollout.draining)

    @Rolling.upon(Pool._workerExited).loop()
    def exitedRolling(pool: Pool, core: PoolCore, rollout: _Rollout, handle: WorkerHandle, reason: Failure) -> None:
        worker = core.find(handle)
        if worker is not None and worker.state == "ready" and _onProbation(core, rollout, worker):
            assert worker.readyAt is not None
            elapsed = core.clock.seconds() - worker.readyAt
            if rollout.new is not None and rollout.new is not worker and rollout.new.state == "starting":
                # The new worker starting takes its place.
                core.workers.remove(worker)
                _countFailure(core, worker)
                core.onChange()
            else:
                # Replaced (the rollout's own new worker, too, as it died
                # while its predecessor drains).
                rollout.new = None
                _exited(core, handle, reason)
            error = ChildExitedEarly(
                f"New worker {handle.pid} exited {elapsed:.3f} s after it was ready, within the probation "
                f"of {core.probation:g} s ({reason.getErrorMessage()})"
            )
            _log.error(
                "Rollout stopped: {reason}; {count} workers of the previous generation serve on",
                workerPID=handle.pid,
                reason=str(error),
                elapsed=elapsed,
                probation=core.probation,
                count=len([w for w in rollout.old if w in core.workers and w.state == "ready"]),
                phase="rollout-failed",
            )
            if rollout.probationCall is not None and rollout.probationCall.active():
                rollout.probationCall.cancel()
            core.rollout = None
            rollout.result.errback(Failure(error))
            pool._rolloutEnded()
            return
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

    @Rolling.upon(Pool._rolloutEnded).to(Serving)
    def rolloutEnded(pool: Pool, core: PoolCore, rollout: _Rollout) -> None:
        _maybeRecycle(pool, core)

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
    Recycling.upon(Pool.stop).to(Stopping)(stop)
    Recycling.upon(Pool.cutShort).to(Stopping)(cutShortRunning)

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
