"""
Tests for L{twisted_graceful._restart}: every (state, input) pair of the
restart machine is either handled, with a test here, or deliberately left out
and refused with L{automat.NoTransition}.
"""

from __future__ import annotations

from typing import Any, Callable

from automat import NoTransition
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from twisted_graceful import ChildExitedEarly, NotReadyToRestart, RestartInProgress, SuccessorDied
from twisted_graceful._child import ReadyMessage
from twisted_graceful._restart import RestartCore, Restarter, coordinatorFor

STATES = [
    "StartingBesideParent",
    "Starting",
    "ServingBesideParent",
    "Serving",
    "Queued",
    "AwaitingChild",
    "OnProbation",
    "DrainedOnProbation",
    "DrainingAfterProbation",
    "HandedOver",
    "Stopping",
]
INPUTS = ["restart", "stop", "_ready", "_parentGone", "_childReady", "_childFailed", "_drained", "_probationOver"]
PROBATION = 5.0
PROBATION_STATES = ("OnProbation", "DrainedOnProbation", "DrainingAfterProbation")

LEFT_OUT = {
    ("StartingBesideParent", "_childReady"),
    ("StartingBesideParent", "_childFailed"),
    ("Starting", "_childReady"),
    ("Starting", "_childFailed"),
    ("ServingBesideParent", "_ready"),
    ("ServingBesideParent", "_childReady"),
    ("ServingBesideParent", "_childFailed"),
    ("Serving", "_ready"),
    ("Serving", "_childReady"),
    ("Serving", "_childFailed"),
    ("Queued", "_ready"),
    ("Queued", "_childReady"),
    ("Queued", "_childFailed"),
    ("HandedOver", "_ready"),
    ("HandedOver", "_childReady"),
    # The probation's timer is cancelled whenever the machine leaves the
    # probation, and only a hand-over starts a drain whose end is an input
    # (a rollback's resumed drain never ends).
    *{(state, input) for state in STATES[:6] + ["Stopping"] for input in ("_drained", "_probationOver")},
    ("HandedOver", "_probationOver"),
    # The successor reported ready once; this process's own start and its
    # predecessor's exit are over before any restart.
    *{(state, input) for state in PROBATION_STATES for input in ("_ready", "_parentGone", "_childReady")},
    ("DrainedOnProbation", "_drained"),
    ("DrainingAfterProbation", "_probationOver"),
}


PENDING = object()
"""
A restart that started a successor and waits for it.
"""

# (state, input) -> (the state after, what the input returns).
HANDLED: dict[tuple[str, str], tuple[str, Any]] = {
    ("StartingBesideParent", "restart"): ("StartingBesideParent", NotReadyToRestart),
    ("StartingBesideParent", "stop"): ("Stopping", None),
    ("StartingBesideParent", "_ready"): ("ServingBesideParent", None),
    ("StartingBesideParent", "_parentGone"): ("Starting", None),
    ("Starting", "restart"): ("Starting", NotReadyToRestart),
    ("Starting", "stop"): ("Stopping", None),
    ("Starting", "_ready"): ("Serving", None),
    ("Starting", "_parentGone"): ("Starting", None),
    ("ServingBesideParent", "restart"): ("Queued", PENDING),
    ("ServingBesideParent", "stop"): ("Stopping", None),
    ("ServingBesideParent", "_parentGone"): ("Serving", None),
    ("Serving", "restart"): ("AwaitingChild", PENDING),
    ("Serving", "stop"): ("Stopping", None),
    ("Serving", "_parentGone"): ("Serving", None),
    ("Queued", "restart"): ("Queued", PENDING),
    ("Queued", "stop"): ("Stopping", None),
    ("Queued", "_parentGone"): ("AwaitingChild", None),
    ("AwaitingChild", "restart"): ("AwaitingChild", RestartInProgress),
    ("AwaitingChild", "stop"): ("Stopping", None),
    ("AwaitingChild", "_ready"): ("AwaitingChild", None),
    ("AwaitingChild", "_parentGone"): ("AwaitingChild", None),
    ("AwaitingChild", "_childReady"): ("OnProbation", None),
    ("AwaitingChild", "_childFailed"): ("Serving", None),
    ("OnProbation", "restart"): ("OnProbation", RestartInProgress),
    ("OnProbation", "stop"): ("HandedOver", None),
    ("OnProbation", "_childFailed"): ("Serving", None),
    ("OnProbation", "_drained"): ("DrainedOnProbation", None),
    ("OnProbation", "_probationOver"): ("DrainingAfterProbation", None),
    ("DrainedOnProbation", "restart"): ("DrainedOnProbation", RestartInProgress),
    ("DrainedOnProbation", "stop"): ("HandedOver", None),
    ("DrainedOnProbation", "_childFailed"): ("Serving", None),
    ("DrainedOnProbation", "_probationOver"): ("HandedOver", None),
    ("DrainingAfterProbation", "restart"): ("DrainingAfterProbation", RestartInProgress),
    ("DrainingAfterProbation", "stop"): ("HandedOver", None),
    ("DrainingAfterProbation", "_childFailed"): ("Serving", None),
    ("DrainingAfterProbation", "_drained"): ("HandedOver", None),
    ("HandedOver", "restart"): ("HandedOver", NotReadyToRestart),
    ("HandedOver", "stop"): ("HandedOver", None),
    ("HandedOver", "_parentGone"): ("HandedOver", None),
    ("HandedOver", "_childFailed"): ("HandedOver", None),
    ("HandedOver", "_drained"): ("HandedOver", None),
    ("Stopping", "restart"): ("Stopping", NotReadyToRestart),
    ("Stopping", "stop"): ("Stopping", None),
    ("Stopping", "_ready"): ("Stopping", None),
    ("Stopping", "_parentGone"): ("Stopping", None),
    ("Stopping", "_childReady"): ("Stopping", None),
    ("Stopping", "_childFailed"): ("Stopping", None),
}


class FakeChild:
    """
    Stands for a L{ChildProcess}: records being terminated.
    """

    def __init__(self) -> None:
        self.spawnedPID = 4242
        self.servingPID: int | None = None
        self.terminated = 0

    def terminate(self) -> None:
        self.terminated += 1


class Harness:
    """
    A restart machine whose effects are recorded: the test ends the drain
    begun at each hand-over (C{drains}) and advances the clock.
    """

    def __init__(self, parentPID: int | None = None, probation: float = PROBATION) -> None:
        self.clock = Clock()
        self.children: list[FakeChild] = []
        self.handedOver: list[FakeChild] = []
        self.drains: list[Deferred[object]] = []
        self.confirmed: list[FakeChild] = []
        self.rolledBack: list[tuple[FakeChild, Failure]] = []
        self.drainAtOnce = False
        self.living: set[int] = set()
        self.core = RestartCore(
            self.clock, self.spawn, self.handOver, self.confirmed.append,  # type: ignore[arg-type]
            lambda child, reason: self.rolledBack.append((child, reason)),  # type: ignore[arg-type]
            probation=probation, parentPID=parentPID, stillThere=lambda pid: pid in self.living,
        )
        self.machine = coordinatorFor(self.core)

    def spawn(self, restarter: Restarter) -> FakeChild:
        child = FakeChild()
        self.children.append(child)
        return child

    def handOver(self, child: FakeChild) -> Deferred[object]:
        self.handedOver.append(child)
        drain: Deferred[object] = succeed(None) if self.drainAtOnce else Deferred()
        self.drains.append(drain)
        return drain

    def state(self) -> str:
        return self.machine.__automat_transitioner__._state.name  # type: ignore[attr-defined,no-any-return]


def inState(name: str) -> Harness:
    """
    A machine driven into state C{name} through its public inputs.
    """
    h = Harness(parentPID=1 if name in ("StartingBesideParent", "ServingBesideParent", "Queued") else None)
    restarted = ("AwaitingChild", *PROBATION_STATES, "HandedOver")
    if name in ("ServingBesideParent", "Serving", "Queued", *restarted):
        h.machine._ready()
    if name == "Queued":
        h.pending = h.machine.restart()  # type: ignore[attr-defined]
    if name in restarted:
        h.pending = h.machine.restart()  # type: ignore[attr-defined]
    if name in (*PROBATION_STATES, "HandedOver"):
        h.machine._childReady(ReadyMessage(4243, {}))
    if name in ("DrainedOnProbation", "HandedOver"):
        h.drains[-1].callback(None)
    if name in ("DrainingAfterProbation", "HandedOver"):
        h.clock.advance(PROBATION)
    if name == "Stopping":
        h.machine.stop()
    assert h.state() == name, (h.state(), name)
    return h


def feed(h: Harness, input: str) -> Any:
    args: dict[str, tuple[Any, ...]] = {
        "_childReady": (ReadyMessage(4243, {"generation": 2}),),
        "_childFailed": (Failure(ChildExitedEarly("exit status 1")),),
    }
    method: Callable[..., Any] = getattr(h.machine, input)
    return method(*args.get(input, ()))


class TransitionTableTests(SynchronousTestCase):
    def test_leftOutPairsRefused(self) -> None:
        """
        Each pair deliberately left out raises L{NoTransition}.
        """
        for state, input in sorted(LEFT_OUT):
            h = inState(state)
            getattr(h, "pending", succeed(None)).addErrback(lambda f: None)
            with self.assertRaises(NoTransition, msg=f"{state} upon {input}"):
                feed(h, input)

    def test_tableCoversEveryPair(self) -> None:
        """
        Each (state, input) pair is either left out or has its outcome in
        L{HANDLED}, never both.
        """
        pairs = {(state, input) for state in STATES for input in INPUTS}
        self.assertEqual(set(HANDLED) | LEFT_OUT, pairs)
        self.assertEqual(set(HANDLED) & LEFT_OUT, set())

    def test_everyOtherPairHandled(self) -> None:
        """
        Every pair not left out moves the machine to the state L{HANDLED}
        names for it, with the result it names: L{None}, a restart still
        pending, or a restart refused with a specific error.
        """
        for (state, input), (target, outcome) in sorted(HANDLED.items()):
            where = f"{state} upon {input}"
            h = inState(state)
            getattr(h, "pending", succeed(None)).addErrback(lambda f: None)
            result = feed(h, input)
            self.assertEqual(h.state(), target, where)
            if outcome is None:
                self.assertIsNone(result, where)
            elif outcome is PENDING:
                self.assertNoResult(result)
            else:
                failure = self.failureResultOf(result)
                self.assertIs(failure.type, outcome, where)


class StartingTests(SynchronousTestCase):
    def test_readyBesideParent(self) -> None:
        h = inState("StartingBesideParent")
        h.machine._ready()
        self.assertEqual(h.state(), "ServingBesideParent")

    def test_parentGoneWhileStarting(self) -> None:
        h = inState("StartingBesideParent")
        h.machine._parentGone()
        self.assertEqual(h.state(), "Starting")
        h.machine._parentGone()
        self.assertEqual(h.state(), "Starting")
        h.machine._ready()
        self.assertEqual(h.state(), "Serving")

    def test_restartWhileStarting(self) -> None:
        """
        A restart signal that reaches a process still starting is refused,
        and does not harm it.
        """
        for state in ("StartingBesideParent", "Starting"):
            h = inState(state)
            failure = self.failureResultOf(h.machine.restart(), NotReadyToRestart)
            self.assertIn("still starting", str(failure.value))
            self.assertEqual(h.state(), state)
            self.assertEqual(h.children, [])

    def test_stopWhileStarting(self) -> None:
        for state in ("StartingBesideParent", "Starting", "ServingBesideParent", "Serving"):
            h = inState(state)
            h.machine.stop()
            self.assertEqual(h.state(), "Stopping")


class ServingTests(SynchronousTestCase):
    def test_restartBesideDrainingParent(self) -> None:
        """
        A restart asked while the predecessor still drains is queued (no
        successor yet: there would be three processes); a second request
        joins it; once the predecessor has exited it runs, and both requests
        get its outcome.
        """
        h = inState("ServingBesideParent")
        first = h.machine.restart()
        second = h.machine.restart()
        self.assertEqual((h.state(), h.children), ("Queued", []))
        self.assertNoResult(first)
        self.assertNoResult(second)
        h.machine._parentGone()
        self.assertEqual((h.state(), len(h.children)), ("AwaitingChild", 1))
        self.assertNoResult(first)
        h.machine._childReady(ReadyMessage(4243, {"generation": 3}))
        self.assertEqual(h.handedOver, h.children)
        h.drains[-1].callback(None)
        h.clock.advance(PROBATION)
        outcome = self.successResultOf(first)
        self.assertEqual(outcome.pid, 4243)
        self.assertIs(self.successResultOf(second), outcome)

    def test_queuedRestartFails(self) -> None:
        """
        A queued restart whose successor fails tells every request for it.
        """
        h = inState("Queued")
        second = h.machine.restart()
        h.machine._parentGone()
        h.machine._childFailed(Failure(ChildExitedEarly("exit status 1")))
        self.failureResultOf(h.pending, ChildExitedEarly)  # type: ignore[attr-defined]
        self.failureResultOf(second, ChildExitedEarly)
        self.assertEqual(h.state(), "Serving")

    def test_stopWhileQueued(self) -> None:
        """
        A stop abandons the queued restart: its requests fail, no successor
        is started.
        """
        h = inState("Queued")
        h.machine.stop()
        failure = self.failureResultOf(h.pending, NotReadyToRestart)  # type: ignore[attr-defined]
        self.assertIn("stopped before the queued restart", str(failure.value))
        h.machine._parentGone()
        self.assertEqual((h.state(), h.children), ("Stopping", []))

    def test_restartSpawns(self) -> None:
        h = inState("Serving")
        d = h.machine.restart()
        self.assertNoResult(d)
        self.assertEqual(len(h.children), 1)
        self.assertEqual(h.state(), "AwaitingChild")


class AwaitingChildTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = inState("AwaitingChild")

    def test_childReadyHandsOver(self) -> None:
        """
        When the successor is ready, the machine hands over and puts it on
        probation; once confirmed, the restart fires with the successor's
        pid and the time from the request to its ready report.
        """
        self.h.clock.advance(0.25)
        self.h.machine._childReady(ReadyMessage(4243, {"generation": 2}))
        self.assertEqual(self.h.handedOver, self.h.children)
        self.assertEqual(self.h.state(), "OnProbation")
        self.assertNoResult(self.h.pending)  # type: ignore[attr-defined]
        self.h.drains[-1].callback(None)
        self.h.clock.advance(PROBATION)
        outcome = self.successResultOf(self.h.pending)  # type: ignore[attr-defined]
        self.assertEqual((outcome.pid, outcome.elapsed, outcome.fields), (4243, 0.25, {"generation": 2}))
        self.assertEqual(self.h.state(), "HandedOver")

    def test_elapsedFromRequest(self) -> None:
        """
        The time reported is from the restart request, not from the clock's
        origin.
        """
        h = inState("Serving")
        h.drainAtOnce = True
        h.clock.advance(100)
        d = h.machine.restart()
        h.clock.advance(0.5)
        h.machine._childReady(ReadyMessage(4243, {}))
        h.clock.advance(PROBATION)
        self.assertEqual(self.successResultOf(d).elapsed, 0.5)

    def test_childFailedKeepsServing(self) -> None:
        """
        A successor that fails leaves this process serving, and a later
        restart can try again.
        """
        self.h.machine._childFailed(Failure(ChildExitedEarly("exit status 1")))
        self.failureResultOf(self.h.pending, ChildExitedEarly)  # type: ignore[attr-defined]
        self.assertEqual(self.h.state(), "Serving")
        self.assertEqual(self.h.handedOver, [])
        self.h.machine.restart()
        self.assertEqual(len(self.h.children), 2)

    def test_secondRestartRefused(self) -> None:
        """
        A restart during a restart is refused and leaves the first alone.
        """
        failure = self.failureResultOf(self.h.machine.restart(), RestartInProgress)
        self.assertIn("4242", str(failure.value))
        self.assertEqual(len(self.h.children), 1)
        self.assertEqual(self.h.children[0].terminated, 0)
        self.assertNoResult(self.h.pending)  # type: ignore[attr-defined]

    def test_stopTerminatesChild(self) -> None:
        """
        Stopping during a restart terminates the successor and fails the
        restart.
        """
        self.h.machine.stop()
        self.assertEqual(self.h.children[0].terminated, 1)
        self.failureResultOf(self.h.pending, NotReadyToRestart)  # type: ignore[attr-defined]
        self.assertEqual(self.h.state(), "Stopping")

    def test_ignoredInputs(self) -> None:
        self.h.machine._parentGone()
        self.h.machine._ready()
        self.assertEqual(self.h.state(), "AwaitingChild")


class AfterHandOverTests(SynchronousTestCase):
    def test_handedOverRefusesRestart(self) -> None:
        h = inState("HandedOver")
        self.failureResultOf(h.machine.restart(), NotReadyToRestart)
        h.machine.stop()
        h.machine._parentGone()
        h.machine._childFailed(Failure(ChildExitedEarly("late")))
        self.assertEqual(h.state(), "HandedOver")

    def test_stoppingIgnoresLateNews(self) -> None:
        h = inState("Stopping")
        self.failureResultOf(h.machine.restart(), NotReadyToRestart)
        h.machine._childReady(ReadyMessage(1, {}))
        h.machine._childFailed(Failure(ChildExitedEarly("late")))
        h.machine._ready()
        h.machine._parentGone()
        h.machine.stop()
        self.assertEqual(h.state(), "Stopping")


def died(served: float = 1.5) -> Failure:
    return Failure(SuccessorDied("The successor (pid 4243) exited 1.500 s after it was ready: exit status 1",
                                 4243, "exit status 1", served))


class ProbationTests(SynchronousTestCase):
    """
    A ready successor is confirmed only once the drain is over and its
    probation has passed; until then its death rolls the restart back.
    """

    def setUp(self) -> None:
        self.h = inState("OnProbation")
        self.d = self.h.pending  # type: ignore[attr-defined]

    def test_drainThenProbation(self) -> None:
        """
        A drain over before the probation waits for the probation's end.
        """
        self.h.clock.advance(1)
        self.h.drains[-1].callback(None)
        self.h.clock.advance(PROBATION - 1.001)
        self.assertEqual((self.h.state(), self.h.confirmed), ("DrainedOnProbation", []))
        self.assertNoResult(self.d)
        self.h.clock.advance(0.001)
        self.assertEqual((self.h.state(), self.h.confirmed), ("HandedOver", self.h.children))
        self.assertEqual(self.successResultOf(self.d).pid, 4243)

    def test_probationThenDrain(self) -> None:
        """
        A probation over before the drain waits for the drain's end.
        """
        self.h.clock.advance(PROBATION * 3)
        self.assertEqual((self.h.state(), self.h.confirmed), ("DrainingAfterProbation", []))
        self.assertNoResult(self.d)
        self.h.drains[-1].callback(None)
        self.assertEqual((self.h.state(), self.h.confirmed), ("HandedOver", self.h.children))
        self.successResultOf(self.d)

    def test_drainOverAtOnce(self) -> None:
        """
        A drain with nothing to wait for ends within the hand-over; the
        probation still holds the confirmation back.
        """
        h = inState("Serving")
        h.drainAtOnce = True
        d = h.machine.restart()
        h.machine._childReady(ReadyMessage(4243, {}))
        self.assertEqual((h.state(), h.confirmed), ("DrainedOnProbation", []))
        h.clock.advance(PROBATION)
        self.assertEqual(h.confirmed, h.children)
        self.successResultOf(d)

    def test_noProbation(self) -> None:
        """
        With a probation of 0 the successor is confirmed on the next turn
        after the drain.
        """
        h = Harness(probation=0)
        h.machine._ready()
        h.drainAtOnce = True
        h.machine.restart()
        h.machine._childReady(ReadyMessage(4243, {}))
        self.assertEqual(h.confirmed, [])
        h.clock.advance(0)
        self.assertEqual(h.confirmed, h.children)

    def assertRolledBack(self, h: Harness, d: Deferred[Any]) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reason = died()
        h.machine._childFailed(reason)
        self.assertEqual(h.state(), "Serving")
        self.assertEqual(h.rolledBack, [(h.children[-1], reason)])
        self.assertEqual(h.confirmed, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])
        failure = self.failureResultOf(d, SuccessorDied)
        self.assertIn("exit status 1; this process rolled back and serves again", str(failure.value))
        self.assertEqual((failure.value.pid, failure.value.served), (4243, 1.5))  # type: ignore[attr-defined]
        [event] = [e for e in events if e.get("phase") == "rolled-back"]
        self.assertEqual(
            (event["childPID"], event["exitStatus"], event["served"], event["log_level"].name),
            (4243, "exit status 1", 1.5, "error"),
        )

    def test_rollBackWhileDraining(self) -> None:
        """
        A successor that dies during the drain and the probation is rolled
        back: the machine serves again, the restart fails with
        L{SuccessorDied}, the probation's timer is gone.
        """
        self.h.clock.advance(1.5)
        self.assertRolledBack(self.h, self.d)

    def test_rollBackWhenDrained(self) -> None:
        """
        The old process waits out the probation even when its drain is over:
        a death then rolls back.
        """
        self.h.drains[-1].callback(None)
        self.assertRolledBack(self.h, self.d)

    def test_rollBackAfterProbationWhileDraining(self) -> None:
        """
        Past the probation, a death while the old process still drains
        rolls back.
        """
        self.h.clock.advance(PROBATION)
        self.assertRolledBack(self.h, self.d)

    def test_restartAfterRollBack(self) -> None:
        """
        After a rollback, a restart to a good release starts a new
        successor and is confirmed.
        """
        self.h.machine._childFailed(died())
        self.failureResultOf(self.d, SuccessorDied)
        d = self.h.machine.restart()
        self.assertEqual((self.h.state(), len(self.h.children)), ("AwaitingChild", 2))
        self.h.machine._childReady(ReadyMessage(4244, {}))
        self.h.drains[-1].callback(None)
        self.h.clock.advance(PROBATION)
        self.assertEqual(self.h.confirmed, [self.h.children[1]])
        self.assertEqual(self.successResultOf(d).pid, 4244)

    def test_restartRefused(self) -> None:
        """
        A restart on probation is refused and leaves the successor alone.
        """
        for state in PROBATION_STATES:
            h = inState(state)
            failure = self.failureResultOf(h.machine.restart(), RestartInProgress)
            self.assertIn("successor pid 4242, on probation", str(failure.value))
            self.assertEqual((h.state(), h.children[0].terminated), (state, 0))

    def test_stopKeepsSuccessor(self) -> None:
        """
        A stop during the probation gives up the rollback: the successor is
        confirmed at once, and a drain that ends later changes nothing.
        """
        self.h.machine.stop()
        self.assertEqual((self.h.state(), self.h.confirmed), ("HandedOver", self.h.children))
        self.assertEqual(self.h.children[0].terminated, 0)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(self.d).pid, 4243)
        self.h.drains[-1].callback(None)
        self.h.machine._childFailed(died())
        self.assertEqual((self.h.state(), self.h.rolledBack), ("HandedOver", []))

    def test_diedAfterConfirmed(self) -> None:
        """
        A death after the confirmation is only logged: nothing to roll back
        to.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = inState("HandedOver")
        h.machine._childFailed(died())
        self.assertEqual((h.state(), h.rolledBack), ("HandedOver", []))
        [event] = [e for e in events if e.get("phase") == "child-died"]
        self.assertIn("Nothing serves", formatEvent(event))

    def test_lifelineLetGoAfterConfirmed(self) -> None:
        """
        After the confirmation, a "death" of a successor that still runs
        (this process, stopping, let go of the lifeline of a daemonized
        successor, which is not its child) is not reported.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = inState("HandedOver")
        h.living.add(4243)
        h.machine._childFailed(died())
        self.assertEqual([e for e in events if e.get("phase") == "child-died"], [])
