"""
Tests for L{twisted_graceful._pool}: every (state, input) pair of the worker
pool machine is either handled, with a test here, or deliberately left out
and refused with L{automat.NoTransition}.
"""

from __future__ import annotations

from typing import Any, Callable

from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import ChildExitedEarly, NotReadyToRestart, RestartInProgress
from twisted_graceful._pool import (
    CRASH_LOOP_AFTER,
    MAX_BACKOFF,
    STABLE_AFTER,
    Pool,
    PoolCore,
    RecyclePolicy,
    RolloutOutcome,
    backoff,
    poolFor,
)

STOP_TIMEOUT = 40.0
AT_LEAST_STOP_TIMEOUT = STOP_TIMEOUT + 1

STATES = ["Idle", "Starting", "Serving", "Rolling", "Recycling", "Stopping", "Stopped"]
INPUTS = [
    "start", "rollingRestart", "stop", "cutShort", "_workerReady", "_workerExited",
    "_respawnDue", "_full", "_rolloutEnded", "_allGone",
    "_workerReport", "_recycleDue", "_recycleEnded", "_rolloutDue",
]
TABLE_MAX_REQUESTS = 10

LEFT_OUT = {
    ("Idle", "_workerReady"),
    ("Idle", "_workerExited"),
    ("Idle", "_respawnDue"),
    ("Idle", "_full"),
    ("Idle", "_rolloutEnded"),
    ("Idle", "_allGone"),
    ("Starting", "start"),
    ("Starting", "_rolloutEnded"),
    ("Starting", "_allGone"),
    ("Serving", "start"),
    ("Serving", "_full"),
    ("Serving", "_rolloutEnded"),
    ("Serving", "_allGone"),
    ("Rolling", "start"),
    ("Rolling", "_full"),
    ("Rolling", "_allGone"),
    ("Stopping", "start"),
    ("Stopping", "_full"),
    ("Stopping", "_rolloutEnded"),
    ("Stopped", "start"),
    ("Stopped", "_workerReady"),
    ("Stopped", "_workerExited"),
    ("Stopped", "_respawnDue"),
    ("Stopped", "_full"),
    ("Stopped", "_rolloutEnded"),
    ("Stopped", "_allGone"),
    ("Idle", "_workerReport"),
    ("Idle", "_recycleDue"),
    ("Idle", "_recycleEnded"),
    ("Idle", "_rolloutDue"),
    ("Starting", "_recycleDue"),
    ("Starting", "_recycleEnded"),
    ("Starting", "_rolloutDue"),
    ("Serving", "_recycleEnded"),
    ("Rolling", "_recycleEnded"),
    ("Rolling", "_rolloutDue"),
    ("Recycling", "start"),
    ("Recycling", "_full"),
    ("Recycling", "_rolloutEnded"),
    ("Recycling", "_allGone"),
    ("Recycling", "_rolloutDue"),
    ("Stopping", "_recycleEnded"),
    ("Stopping", "_rolloutDue"),
    ("Stopped", "_workerReport"),
    ("Stopped", "_recycleDue"),
    ("Stopped", "_recycleEnded"),
    ("Stopped", "_rolloutDue"),
}

PENDING = object()
"A Deferred that has not fired."
FIRED = object()
"A Deferred that fired with L{None}."

HANDLED: dict[tuple[str, str], tuple[str, Any]] = {
    ("Idle", "start"): ("Starting", None),
    ("Idle", "stop"): ("Stopped", FIRED),
    ("Idle", "rollingRestart"): ("Idle", NotReadyToRestart),
    ("Idle", "cutShort"): ("Idle", None),
    ("Starting", "stop"): ("Stopping", PENDING),
    ("Starting", "rollingRestart"): ("Starting", NotReadyToRestart),
    ("Starting", "cutShort"): ("Stopping", None),
    ("Starting", "_workerReady"): ("Starting", None),
    ("Starting", "_workerExited"): ("Starting", None),
    ("Starting", "_respawnDue"): ("Starting", None),
    ("Starting", "_full"): ("Serving", None),
    ("Serving", "stop"): ("Stopping", PENDING),
    ("Serving", "rollingRestart"): ("Rolling", PENDING),
    ("Serving", "cutShort"): ("Stopping", None),
    ("Serving", "_workerReady"): ("Serving", None),
    ("Serving", "_workerExited"): ("Serving", None),
    ("Serving", "_respawnDue"): ("Serving", None),
    ("Rolling", "stop"): ("Stopping", PENDING),
    ("Rolling", "rollingRestart"): ("Rolling", RestartInProgress),
    ("Rolling", "cutShort"): ("Stopping", None),
    ("Rolling", "_workerReady"): ("Rolling", None),
    ("Rolling", "_workerExited"): ("Serving", None),
    ("Rolling", "_respawnDue"): ("Rolling", None),
    ("Rolling", "_rolloutEnded"): ("Serving", None),
    ("Stopping", "stop"): ("Stopping", PENDING),
    ("Stopping", "rollingRestart"): ("Stopping", NotReadyToRestart),
    ("Stopping", "cutShort"): ("Stopping", None),
    ("Stopping", "_workerReady"): ("Stopping", None),
    ("Stopping", "_workerExited"): ("Stopping", None),
    ("Stopping", "_respawnDue"): ("Stopping", None),
    ("Stopping", "_allGone"): ("Stopped", None),
    ("Stopped", "stop"): ("Stopped", FIRED),
    ("Stopped", "rollingRestart"): ("Stopped", NotReadyToRestart),
    ("Stopped", "cutShort"): ("Stopped", None),
    ("Starting", "_workerReport"): ("Starting", None),
    ("Serving", "_workerReport"): ("Serving", None),
    ("Serving", "_recycleDue"): ("Recycling", None),
    ("Serving", "_rolloutDue"): ("Rolling", None),
    ("Rolling", "_workerReport"): ("Rolling", None),
    ("Rolling", "_recycleDue"): ("Rolling", None),
    ("Recycling", "stop"): ("Stopping", PENDING),
    ("Recycling", "rollingRestart"): ("Recycling", PENDING),
    ("Recycling", "cutShort"): ("Stopping", None),
    ("Recycling", "_workerReady"): ("Recycling", None),
    ("Recycling", "_workerExited"): ("Serving", None),
    ("Recycling", "_respawnDue"): ("Recycling", None),
    ("Recycling", "_workerReport"): ("Recycling", None),
    ("Recycling", "_recycleDue"): ("Recycling", None),
    ("Recycling", "_recycleEnded"): ("Serving", None),
    ("Stopping", "_workerReport"): ("Stopping", None),
    ("Stopping", "_recycleDue"): ("Stopping", None),
}


class FakeWorker:
    """
    Stands for a L{twisted_graceful._supervisor.WorkerProcess}: records what
    the pool asks of it.
    """

    def __init__(self, pid: int, generation: int) -> None:
        self._pid = pid
        self.generation = generation
        self.drained = 0
        self.interrupted = 0
        self.killed = 0

    @property
    def pid(self) -> int | None:
        return self._pid

    def drain(self) -> None:
        self.drained += 1

    def interrupt(self) -> None:
        self.interrupted += 1

    def kill(self) -> None:
        self.killed += 1


def crash(why: str = "killed by SIGKILL") -> Failure:
    return Failure(ChildExitedEarly(why))


class Harness:
    def __init__(self, size: int = 2, recycle: RecyclePolicy | None = None) -> None:
        self.clock = Clock()
        self.spawned: list[FakeWorker] = []
        self.full = 0
        self.changes = 0
        self.core = PoolCore(
            self.clock,
            self.spawn,
            size,
            STOP_TIMEOUT,
            onFull=self.onFull,
            onChange=self.onChange,
            recycle=recycle or RecyclePolicy(),
        )
        self.machine = poolFor(self.core)
        self.peak = 0

    def spawn(self, pool: Pool, generation: int) -> FakeWorker:
        worker = FakeWorker(1000 + len(self.spawned), generation)
        self.spawned.append(worker)
        return worker

    def onFull(self) -> None:
        self.full += 1

    def onChange(self) -> None:
        self.changes += 1
        self.peak = max(self.peak, len(self.core.workers))

    def state(self) -> str:
        return self.machine.__automat_transitioner__._state.name  # type: ignore[attr-defined,no-any-return]

    def live(self) -> list[FakeWorker]:
        return [w.handle for w in self.core.workers]  # type: ignore[misc]

    def starting(self) -> list[FakeWorker]:
        return [w.handle for w in self.core.workers if w.state == "starting"]  # type: ignore[misc]

    def readyAll(self) -> None:
        for worker in self.starting():
            self.machine._workerReady(worker)


def inState(name: str) -> Harness:
    """
    A pool of 2 driven into state C{name} through its inputs.
    """
    h = Harness(recycle=RecyclePolicy(maxRequests=TABLE_MAX_REQUESTS))
    if name != "Idle":
        h.machine.start()
    if name in ("Serving", "Rolling", "Recycling"):
        h.readyAll()
    if name == "Rolling":
        h.pending = h.machine.rollingRestart()  # type: ignore[attr-defined]
    if name == "Recycling":
        h.machine._workerReport(h.live()[0], TABLE_MAX_REQUESTS, None)
    if name in ("Stopping", "Stopped"):
        h.pending = h.machine.stop()  # type: ignore[attr-defined]
    if name == "Stopped":
        for worker in h.live():
            h.machine._workerExited(worker, crash())
    assert h.state() == name, (h.state(), name)
    return h


def feed(h: Harness, input: str) -> Any:
    live = h.live()
    starting = h.starting()
    args: dict[str, tuple[Any, ...]] = {
        "_workerReady": (starting[-1] if starting else FakeWorker(1, 1),),
        "_workerExited": (starting[-1] if starting else (live[0] if live else FakeWorker(1, 1)), crash()),
        "_workerReport": (live[0] if live else FakeWorker(1, 1), 1, None),
    }
    if input == "_recycleDue":
        # Only sent when a worker is past its limit.
        for worker in h.core.ready()[:1]:
            worker.requests = TABLE_MAX_REQUESTS
    if input == "_recycleEnded":
        # As after a failed recycle: the old worker waits for the backoff.
        h.core.recycleAfter = h.clock.seconds() + 1
    method: Callable[..., Any] = getattr(h.machine, input)
    return method(*args.get(input, ()))


class TransitionTableTests(SynchronousTestCase):
    def test_tableCoversEveryPair(self) -> None:
        """
        Each (state, input) pair is either left out or has its outcome in
        L{HANDLED}, never both.
        """
        pairs = {(state, input) for state in STATES for input in INPUTS}
        self.assertEqual(set(HANDLED) | LEFT_OUT, pairs)
        self.assertEqual(set(HANDLED) & LEFT_OUT, set())

    def test_leftOutPairsRefused(self) -> None:
        """
        Each pair deliberately left out raises L{NoTransition}.
        """
        for state, input in sorted(LEFT_OUT):
            h = inState(state)
            getattr(h, "pending", Deferred()).addErrback(lambda f: None)
            with self.assertRaises(NoTransition, msg=f"{state} upon {input}"):
                feed(h, input)

    def test_everyOtherPairHandled(self) -> None:
        """
        Every pair not left out moves the pool to the state L{HANDLED} names,
        with the result it names.
        """
        for (state, input), (target, outcome) in sorted(HANDLED.items()):
            where = f"{state} upon {input}"
            h = inState(state)
            getattr(h, "pending", Deferred()).addErrback(lambda f: None)
            result = feed(h, input)
            self.assertEqual(h.state(), target, where)
            if outcome is None:
                self.assertIsNone(result, where)
            elif outcome is PENDING:
                self.assertNoResult(result)
                result.addErrback(lambda f: None)
            elif outcome is FIRED:
                self.assertIsNone(self.successResultOf(result), where)
            else:
                self.assertIs(self.failureResultOf(result).type, outcome, where)


class StartTests(SynchronousTestCase):
    def test_startsN(self) -> None:
        """
        L{Pool.start} spawns N workers; the pool is full (once) when all N
        are ready, not before.
        """
        h = Harness(size=3)
        h.machine.start()
        self.assertEqual([w.generation for w in h.spawned], [1, 1, 1])
        h.machine._workerReady(h.spawned[0])
        h.machine._workerReady(h.spawned[1])
        self.assertEqual((h.state(), h.full), ("Starting", 0))
        h.machine._workerReady(h.spawned[2])
        self.assertEqual((h.state(), h.full), ("Serving", 1))

    def test_readyTwiceCountsOnce(self) -> None:
        """
        A worker that reports ready twice counts once.
        """
        h = Harness()
        h.machine.start()
        h.machine._workerReady(h.spawned[0])
        h.machine._workerReady(h.spawned[0])
        self.assertEqual(h.state(), "Starting")


class ReplaceTests(SynchronousTestCase):
    def serving(self) -> Harness:
        h = Harness()
        h.machine.start()
        h.readyAll()
        return h

    def test_firstCrashReplacedAtOnce(self) -> None:
        """
        A worker that exits unasked is replaced on the next reactor turn.
        """
        h = self.serving()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h.machine._workerExited(h.spawned[0], crash())
        self.assertEqual(len(h.spawned), 2)
        h.clock.advance(0)
        self.assertEqual(len(h.spawned), 3)
        self.assertEqual(len(h.live()), 2)
        lost = [e for e in events if e.get("phase") == "worker-lost"]
        self.assertEqual([(e["workerPID"], e["delay"]) for e in lost], [(1000, 0.0)])

    def test_backoffDoubles(self) -> None:
        """
        Each failure in a row doubles the wait before the replacement; after
        L{CRASH_LOOP_AFTER} the pool says it is in a crash loop.
        """
        h = self.serving()
        waits = []
        for _ in range(CRASH_LOOP_AFTER + 4):
            victim = h.live()[0]
            h.machine._workerExited(victim, crash())
            before = len(h.spawned)
            delay = backoff(h.core.failures)
            if delay:
                h.clock.advance(delay - 0.01)
                self.assertEqual(len(h.spawned), before, "replaced before its delay")
                h.clock.advance(0.01)
            else:
                h.clock.advance(0)
            self.assertEqual(len(h.spawned), before + 1)
            waits.append(delay)
        self.assertEqual(waits, [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        self.assertTrue(h.core.crashLooping())

    def test_stableWorkerResetsFailures(self) -> None:
        """
        A worker that served for L{STABLE_AFTER} seconds before it died is a
        first failure again: replaced at once.
        """
        h = self.serving()
        h.machine._workerExited(h.live()[0], crash())
        h.clock.advance(0)
        h.machine._workerExited(h.live()[0], crash())
        self.assertEqual(h.core.failures, 2)
        h.clock.advance(backoff(2))
        h.readyAll()
        h.clock.advance(STABLE_AFTER)
        h.machine._workerExited(h.live()[0], crash())
        self.assertEqual(h.core.failures, 1)

    def test_crashLoopEnds(self) -> None:
        """
        The crash loop is over once the pool is full and no worker failed
        for L{STABLE_AFTER} seconds.
        """
        h = self.serving()
        for _ in range(CRASH_LOOP_AFTER):
            h.machine._workerExited(h.live()[-1], crash())
            h.clock.advance(MAX_BACKOFF)
        self.assertTrue(h.core.crashLooping())
        h.readyAll()
        h.clock.advance(STABLE_AFTER)
        self.assertFalse(h.core.crashLooping())

    def test_listing(self) -> None:
        """
        The listing names each worker's pid, generation and state.
        """
        h = Harness()
        h.machine.start()
        h.machine._workerReady(h.spawned[0])
        self.assertEqual(
            [(w["pid"], w["generation"], w["state"]) for w in h.core.listing()],
            [(1000, 1, "ready"), (1001, 1, "starting")],
        )


class RollingTests(SynchronousTestCase):
    def serving(self, size: int = 2) -> Harness:
        h = Harness(size)
        h.machine.start()
        h.readyAll()
        return h

    def readyCount(self, h: Harness) -> int:
        return len(h.core.ready())

    def test_oneAtATimeNeverBelowN(self) -> None:
        """
        A rolling restart starts one new worker; only once it is ready does
        one old worker drain; the next new worker starts when that one has
        exited.  Ready workers never drop below N, and at most N + 1 run.
        """
        h = self.serving(size=3)
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        for step in range(3):
            new = h.spawned[-1]
            self.assertEqual(new.generation, 2)
            self.assertEqual([w.drained for w in old], [1] * step + [0] * (3 - step))
            self.assertGreaterEqual(self.readyCount(h), 3)
            h.machine._workerReady(new)
            self.assertEqual(old[step].drained, 1)
            self.assertGreaterEqual(self.readyCount(h), 3)
            h.machine._workerExited(old[step], Failure(ChildExitedEarly("exit status 0")))
            self.assertGreaterEqual(self.readyCount(h), 3)
        outcome = self.successResultOf(result)
        self.assertEqual((outcome.generation, outcome.replaced), (2, 3))
        self.assertIsInstance(outcome, RolloutOutcome)
        self.assertEqual(h.state(), "Serving")
        self.assertEqual(len(h.spawned), 6)
        self.assertLessEqual(h.peak, 4)
        self.assertEqual(h.core.failures, 0, "an old worker asked to drain is no failure")

    def test_newWorkerFailsRolloutStops(self) -> None:
        """
        A new worker that exits before it is ready stops the rollout with its
        reason: no old worker is drained and none is replaced.
        """
        h = self.serving()
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        h.machine._workerExited(h.spawned[-1], crash("exit status 1"))
        failure = self.failureResultOf(result, ChildExitedEarly)
        self.assertEqual(failure.getErrorMessage(), "exit status 1")
        self.assertEqual([w.drained for w in old], [0, 0])
        self.assertEqual(h.state(), "Serving")
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(h.spawned), 3, "a failed new worker is not replaced")
        self.assertEqual(self.readyCount(h), 2)

    def test_newWorkerDiesWhileOldDrains(self) -> None:
        """
        A new worker that dies after it was ready, while its predecessor
        drains, stops the rollout and is replaced.
        """
        h = self.serving()
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        new = h.spawned[-1]
        h.machine._workerReady(new)
        self.assertEqual(old[0].drained, 1)
        h.machine._workerExited(new, crash())
        self.failureResultOf(result, ChildExitedEarly)
        self.assertEqual(h.state(), "Serving")
        h.clock.advance(0)
        self.assertEqual(len(h.spawned), 4)
        self.assertEqual(old[1].drained, 0)

    def test_oldWorkerCrashesDuringRollout(self) -> None:
        """
        An old worker that crashes during the rollout is replaced (by the
        new generation) and not drained later.
        """
        h = self.serving()
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        h.machine._workerExited(old[1], crash())
        h.clock.advance(0)
        for worker in h.starting():
            h.machine._workerReady(worker)
        self.assertEqual(old[0].drained, 1)
        h.machine._workerExited(old[0], Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(self.successResultOf(result).replaced, 1)
        self.assertEqual(old[1].drained, 0)
        self.assertEqual({w.generation for w in h.core.workers}, {2})

    def test_stopAbandonsRollout(self) -> None:
        """
        A stop during a rollout fails it with L{NotReadyToRestart} and drains
        every worker, the new one included.
        """
        h = self.serving()
        result = h.machine.rollingRestart()
        h.machine.stop().addErrback(lambda f: None)
        self.failureResultOf(result, NotReadyToRestart)
        self.assertEqual([w.drained for w in h.spawned], [1, 1, 1])


PROBATION = 5.0


class ProbationTests(SynchronousTestCase):
    def serving(self) -> Harness:
        h = Harness(2)
        h.core.probation = PROBATION
        h.machine.start()
        h.readyAll()
        return h

    def firstStep(self, h: Harness) -> tuple[list[FakeWorker], FakeWorker, Deferred[RolloutOutcome]]:
        """
        Start a rollout and replace the first old worker.
        """
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        new = h.spawned[-1]
        h.machine._workerReady(new)
        h.machine._workerExited(old[0], Failure(ChildExitedEarly("exit status 0")))
        return old, new, result

    def test_diesWithinProbationStopsRollout(self) -> None:
        """
        A new worker that dies within the probation after it was ready, its
        predecessor gone already, stops the rollout: the old workers not yet
        replaced serve on, and a replacement takes its place.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION - 1)
        self.assertEqual(len(h.spawned), 3, "the second new worker waits for the first's probation")
        h.machine._workerExited(new, crash())
        failure = self.failureResultOf(result, ChildExitedEarly)
        self.assertIn(f"after it was ready, within the probation of {PROBATION:g} s", failure.getErrorMessage())
        self.assertEqual((h.state(), old[1].drained), ("Serving", 0))
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(h.spawned), 4, "replaced twice")
        h.machine._workerReady(h.spawned[3])
        self.assertEqual({w.handle for w in h.core.ready()}, {old[1], h.spawned[3]})

    def test_firstIsACanary(self) -> None:
        """
        The second new worker starts only once the first has lived through
        its probation: a release whose workers die soon after ready replaces
        one old worker, not every one.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION - 0.5)
        self.assertEqual((len(h.spawned), old[1].drained), (3, 0))
        h.clock.advance(0.5)
        self.assertEqual((len(h.spawned), old[1].drained), (4, 0))
        h.machine._workerReady(h.spawned[3])
        self.assertEqual(old[1].drained, 1)
        self.assertNoResult(result)

    def test_diesWhilePredecessorDrains(self) -> None:
        """
        A new worker that dies within its probation while its predecessor
        drains stops the rollout, saying so, and is replaced.
        """
        h = self.serving()
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        new = h.spawned[-1]
        h.machine._workerReady(new)
        h.machine._workerExited(new, crash())
        self.assertIn("within the probation", self.failureResultOf(result, ChildExitedEarly).getErrorMessage())
        h.clock.advance(0)
        self.assertEqual((h.state(), len(h.spawned), old[1].drained), ("Serving", 4, 0))

    def test_doneAfterProbation(self) -> None:
        """
        The rollout succeeds only once its last new worker has been ready
        for the probation.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION)  # The first passed its probation: the second starts.
        last = h.spawned[-1]
        h.machine._workerReady(last)
        h.machine._workerExited(old[1], Failure(ChildExitedEarly("exit status 0")))
        self.assertNoResult(result)
        self.assertEqual(h.state(), "Rolling")
        h.clock.advance(PROBATION)
        self.assertEqual(self.successResultOf(result).replaced, 2)
        self.assertEqual(h.state(), "Serving")

    def test_lastDiesWithinProbation(self) -> None:
        """
        The last new worker dying within its probation fails the rollout;
        it is replaced.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION)  # The first passed its probation: the second starts.
        last = h.spawned[-1]
        h.machine._workerReady(last)
        h.machine._workerExited(old[1], Failure(ChildExitedEarly("exit status 0")))
        h.clock.advance(1)
        h.machine._workerExited(last, crash())
        self.failureResultOf(result, ChildExitedEarly)
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual((h.state(), len(h.spawned)), ("Serving", 5))
        self.assertIsNone(h.core.rollout)

    def test_diesAfterProbation(self) -> None:
        """
        A new worker that dies once its probation is over is replaced like
        any lost worker, and the rollout goes on.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION)
        h.machine._workerExited(new, crash())
        self.assertNoResult(result)
        self.assertEqual(h.state(), "Rolling")

    def test_stopDuringProbation(self) -> None:
        """
        A stop while the last new worker is on probation abandons the
        rollout; the probation's end does nothing.
        """
        h = self.serving()
        old, new, result = self.firstStep(h)
        h.clock.advance(PROBATION)  # The first passed its probation: the second starts.
        h.machine._workerReady(h.spawned[-1])
        h.machine._workerExited(old[1], Failure(ChildExitedEarly("exit status 0")))
        h.machine.stop().addErrback(lambda f: None)
        self.failureResultOf(result, NotReadyToRestart)
        h.clock.advance(PROBATION)
        self.assertEqual(h.state(), "Stopping")


class StopTests(SynchronousTestCase):
    def test_drainsAllAtOnce(self) -> None:
        """
        L{Pool.stop} drains every worker at once and fires when the last one
        has exited.
        """
        h = Harness()
        h.machine.start()
        h.readyAll()
        stopped = h.machine.stop()
        self.assertEqual([w.drained for w in h.spawned], [1, 1])
        h.machine._workerExited(h.spawned[0], Failure(ChildExitedEarly("exit status 0")))
        self.assertNoResult(stopped)
        h.machine._workerExited(h.spawned[1], Failure(ChildExitedEarly("exit status 0")))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(h.state(), "Stopped")
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(h.spawned), 2, "nothing replaced after a stop")

    def test_killAtDeadline(self) -> None:
        """
        Workers still there at the stop deadline are killed.
        """
        h = Harness()
        h.machine.start()
        h.readyAll()
        h.machine.stop()
        h.clock.advance(STOP_TIMEOUT - 1)
        self.assertEqual([w.killed for w in h.spawned], [0, 0])
        h.clock.advance(AT_LEAST_STOP_TIMEOUT)
        self.assertEqual([w.killed for w in h.spawned], [1, 1])

    def test_pendingRespawnCancelled(self) -> None:
        """
        A replacement waiting for its backoff is not started after a stop.
        """
        h = Harness()
        h.machine.start()
        h.machine._workerExited(h.spawned[0], crash())
        h.machine.stop()
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(h.spawned), 2)

    def test_cutShortInterrupts(self) -> None:
        """
        L{Pool.cutShort} drains and interrupts every worker; again during
        the stop, interrupts them again.
        """
        h = Harness()
        h.machine.start()
        h.readyAll()
        h.machine.cutShort()
        self.assertEqual([(w.drained, w.interrupted) for w in h.spawned], [(1, 1), (1, 1)])
        h.machine.cutShort()
        self.assertEqual([w.interrupted for w in h.spawned], [2, 2])

    def test_stopWithNoWorkers(self) -> None:
        """
        A pool whose workers are all gone (and not yet replaced) stops at
        once.
        """
        h = Harness(size=1)
        h.machine.start()
        h.machine._workerExited(h.spawned[0], crash())
        self.assertIsNone(self.successResultOf(h.machine.stop()))
        self.assertEqual(h.state(), "Stopped")


class BackoffTests(SynchronousTestCase):
    def test_values(self) -> None:
        """
        No wait after a first failure, then 0.5 s doubling to the cap.
        """
        self.assertEqual([backoff(n) for n in range(1, 10)], [0, 0.5, 1, 2, 4, 8, 16, 30, 30])


MB = 2**20


class RecycleTests(SynchronousTestCase):
    def serving(self, size: int = 2, **policy: Any) -> Harness:
        h = Harness(size, RecyclePolicy(**policy))
        h.machine.start()
        h.readyAll()
        return h

    def test_requestLimitRecyclesGracefully(self) -> None:
        """
        A worker that reports C{maxRequests} served is replaced as one step
        of a rollout: its replacement (same generation) starts first, and
        only once that is ready does the old one drain.  Ready workers never
        drop below N, and the event says why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = self.serving(maxRequests=50)
        old = h.spawned[0]
        h.machine._workerReport(old, 49, None)
        self.assertEqual((h.state(), len(h.spawned)), ("Serving", 2))
        h.machine._workerReport(old, 50, None)
        self.assertEqual(h.state(), "Recycling")
        new = h.spawned[-1]
        self.assertEqual((len(h.spawned), new.generation, old.drained), (3, 1, 0))
        self.assertEqual(len(h.core.ready()), 2)
        self.assertEqual(h.core.listing()[0]["recycling"], "served 50 requests (limit 50)")
        h.machine._workerReady(new)
        self.assertEqual(old.drained, 1)
        self.assertEqual(len(h.core.ready()), 2)
        h.machine._workerExited(old, Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(h.state(), "Serving")
        self.assertEqual(h.core.recycled, 1)
        self.assertEqual(h.core.failures, 0, "a recycled worker is no failure")
        self.assertEqual(h.live(), [h.spawned[1], new])
        [started] = [e for e in events if e.get("phase") == "worker-recycling"]
        self.assertEqual(
            (started["workerPID"], started["reason"], started["requests"], started["limit"]), (old.pid, "requests", 50, 50)
        )
        self.assertEqual(len([e for e in events if e.get("phase") == "worker-recycled"]), 1)

    def test_jitterDrawnPerWorker(self) -> None:
        """
        Each worker's limit is C{maxRequests} plus C{randint(0, jitter)},
        drawn once for each worker it starts.
        """
        draws = iter([3, 0, 7])
        calls: list[tuple[int, int]] = []

        def randint(low: int, high: int) -> int:
            calls.append((low, high))
            return next(draws)

        h = self.serving(maxRequests=100, jitter=10, randint=randint)
        self.assertEqual([w.maxRequests for w in h.core.workers], [103, 100])
        h.machine._workerReport(h.spawned[0], 102, None)
        h.machine._workerReport(h.spawned[1], 100, None)
        self.assertEqual(h.state(), "Recycling")
        self.assertEqual(h.core.workers[-1].maxRequests, 107)
        self.assertEqual(calls, [(0, 10)] * 3)
        self.assertEqual(h.spawned[1].drained + h.spawned[0].drained, 0)

    def test_noLimitByDefault(self) -> None:
        """
        With the default policy no report recycles a worker.
        """
        h = self.serving()
        h.machine._workerReport(h.spawned[0], 10**9, 10**12)
        self.assertEqual((h.state(), len(h.spawned)), ("Serving", 2))

    def test_memoryLimit(self) -> None:
        """
        A worker whose reported resident memory is over C{maxMemory} is
        recycled, with the figures in the event.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = self.serving(maxMemory=100 * MB)
        h.machine._workerReport(h.spawned[1], 5, 100 * MB)
        self.assertEqual(h.state(), "Serving")
        h.machine._workerReport(h.spawned[1], 5, 101 * MB)
        self.assertEqual(h.state(), "Recycling")
        [started] = [e for e in events if e.get("phase") == "worker-recycling"]
        self.assertEqual((started["reason"], started["rss"], started["limit"]), ("memory", 101 * MB, 100 * MB))
        self.assertEqual(started["recycling"], "uses 101 MB (limit 100 MB)")

    def test_oneAtATime(self) -> None:
        """
        Two workers past their limit are recycled one after the other.
        """
        h = self.serving(maxRequests=10)
        first, second = h.spawned
        h.machine._workerReport(first, 10, None)
        h.machine._workerReport(second, 10, None)
        self.assertEqual(len(h.spawned), 3)
        h.machine._workerReady(h.spawned[2])
        self.assertEqual((first.drained, second.drained), (1, 0))
        h.machine._workerExited(first, Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(h.state(), "Recycling")
        self.assertEqual(len(h.spawned), 4)
        h.machine._workerReady(h.spawned[3])
        self.assertEqual(second.drained, 1)
        h.machine._workerExited(second, Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual((h.state(), h.core.recycled), ("Serving", 2))
        self.assertLessEqual(h.peak, 3)

    def test_waitsWhileStarting(self) -> None:
        """
        A worker past its limit before the pool is full waits for it.
        """
        h = Harness(2, RecyclePolicy(maxRequests=10))
        h.machine.start()
        h.machine._workerReady(h.spawned[0])
        h.machine._workerReport(h.spawned[0], 10, None)
        self.assertEqual(len(h.spawned), 2)
        h.machine._workerReady(h.spawned[1])
        self.assertEqual(h.state(), "Recycling")

    def test_waitsForRollout(self) -> None:
        """
        A worker past its limit during a rollout is recycled once the
        rollout has ended, not during it.
        """
        h = self.serving(maxRequests=10)
        old = list(h.spawned)
        result = h.machine.rollingRestart()
        first = h.spawned[-1]
        h.machine._workerReady(first)
        h.machine._workerReport(first, 10, None)
        self.assertEqual(len(h.spawned), 3)
        h.machine._workerExited(old[0], Failure(ChildExitedEarly("exit status 0")))
        h.machine._workerReady(h.spawned[-1])
        h.machine._workerExited(old[1], Failure(ChildExitedEarly("exit status 0")))
        self.successResultOf(result)
        self.assertEqual(h.state(), "Recycling")
        self.assertEqual(len(h.spawned), 5)

    def test_rolloutWaitsForRecycle(self) -> None:
        """
        A rollout asked during a recycle starts once the recycle has ended,
        and its L{Deferred} fires with the rollout's outcome; a second one
        meanwhile is refused.
        """
        h = self.serving(maxRequests=10)
        h.machine._workerReport(h.spawned[0], 10, None)
        result = h.machine.rollingRestart()
        self.failureResultOf(h.machine.rollingRestart(), RestartInProgress)
        self.assertNoResult(result)
        self.assertEqual(len(h.spawned), 3)
        h.machine._workerReady(h.spawned[2])
        h.machine._workerExited(h.spawned[0], Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(h.state(), "Rolling")
        for _ in range(2):
            new = h.spawned[-1]
            self.assertEqual(new.generation, 2)
            h.machine._workerReady(new)
            [draining] = [w for w in h.core.workers if w.state == "draining"]
            h.machine._workerExited(draining.handle, Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(self.successResultOf(result).replaced, 2)
        self.assertEqual(h.state(), "Serving")

    def test_newWorkerFailsOldServesOn(self) -> None:
        """
        A replacement that exits before it is ready ends the recycle: the
        old worker is not drained and serves on, and it is not recycled
        again before the failures' backoff is over.
        """
        h = self.serving(maxRequests=10)
        old = h.spawned[0]
        h.machine._workerReport(old, 10, None)
        h.machine._workerExited(h.spawned[2], crash("exit status 1"))
        self.assertEqual((h.state(), old.drained, h.core.failures), ("Serving", 0, 1))
        self.assertNotIn("recycling", h.core.listing()[0])
        h.clock.advance(0.1)
        h.machine._workerReport(old, 11, None)
        self.assertEqual(len(h.spawned), 3, "recycled again within the backoff")
        h.clock.advance(1)
        h.machine._workerReport(old, 12, None)
        self.assertEqual((h.state(), len(h.spawned)), ("Recycling", 4))

    def test_oldWorkerCrashesBeforeReplacementReady(self) -> None:
        """
        An old worker that crashes while its replacement starts counts as a
        failure but is not replaced twice: the pool stays at N.
        """
        h = self.serving(maxRequests=10)
        old = h.spawned[0]
        h.machine._workerReport(old, 10, None)
        h.machine._workerExited(old, crash())
        self.assertEqual(h.core.failures, 1)
        h.clock.advance(MAX_BACKOFF)
        self.assertEqual(len(h.spawned), 3)
        h.machine._workerReady(h.spawned[2])
        self.assertEqual((h.state(), len(h.core.ready())), ("Serving", 2))

    def test_newWorkerDiesWhileOldDrains(self) -> None:
        """
        A replacement that dies after it was ready, while the old worker
        drains, is replaced like any lost worker; the recycle ends when the
        old one exits.
        """
        h = self.serving(maxRequests=10)
        old = h.spawned[0]
        h.machine._workerReport(old, 10, None)
        h.machine._workerReady(h.spawned[2])
        h.machine._workerExited(h.spawned[2], crash())
        h.clock.advance(0)
        self.assertEqual(len(h.spawned), 4)
        h.machine._workerExited(old, Failure(ChildExitedEarly("exit status 0")))
        self.assertEqual(h.state(), "Serving")
        h.machine._workerReady(h.spawned[3])
        self.assertEqual(len(h.core.ready()), 2)

    def test_stopDuringRecycle(self) -> None:
        """
        A stop during a recycle drains every worker, the replacement
        included, and fails a rollout that waited.
        """
        h = self.serving(maxRequests=10)
        h.machine._workerReport(h.spawned[0], 10, None)
        waiting = h.machine.rollingRestart()
        h.machine.stop().addErrback(lambda f: None)
        self.failureResultOf(waiting, NotReadyToRestart)
        self.assertEqual([w.drained for w in h.spawned], [1, 1, 1])
