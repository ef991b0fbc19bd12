"""
Tests for L{twisted_graceful._restart}: every (state, input) pair of the
restart machine is either handled, with a test here, or deliberately left out
and refused with L{automat.NoTransition}.
"""

from __future__ import annotations

from typing import Any, Callable

from automat import NoTransition
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import ChildExitedEarly, NotReadyToRestart, RestartInProgress
from twisted_graceful._child import ReadyMessage
from twisted_graceful._restart import RestartCore, Restarter, coordinatorFor

STATES = [
    "StartingBesideParent",
    "Starting",
    "ServingBesideParent",
    "Serving",
    "Queued",
    "AwaitingChild",
    "HandedOver",
    "Stopping",
]
INPUTS = ["restart", "stop", "_ready", "_parentGone", "_childReady", "_childFailed"]

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
    ("AwaitingChild", "_childReady"): ("HandedOver", None),
    ("AwaitingChild", "_childFailed"): ("Serving", None),
    ("HandedOver", "restart"): ("HandedOver", NotReadyToRestart),
    ("HandedOver", "stop"): ("HandedOver", None),
    ("HandedOver", "_parentGone"): ("HandedOver", None),
    ("HandedOver", "_childFailed"): ("HandedOver", None),
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
    def __init__(self, parentPID: int | None = None) -> None:
        self.clock = Clock()
        self.children: list[FakeChild] = []
        self.handedOver: list[FakeChild] = []
        self.core = RestartCore(self.clock, self.spawn, self.handedOver.append, parentPID)  # type: ignore[arg-type]
        self.machine = coordinatorFor(self.core)

    def spawn(self, restarter: Restarter) -> FakeChild:
        child = FakeChild()
        self.children.append(child)
        return child

    def state(self) -> str:
        return self.machine.__automat_transitioner__._state.name  # type: ignore[attr-defined,no-any-return]


def inState(name: str) -> Harness:
    """
    A machine driven into state C{name} through its public inputs.
    """
    h = Harness(parentPID=1 if name in ("StartingBesideParent", "ServingBesideParent", "Queued") else None)
    if name in ("ServingBesideParent", "Serving", "Queued", "AwaitingChild", "HandedOver"):
        h.machine._ready()
    if name == "Queued":
        h.pending = h.machine.restart()  # type: ignore[attr-defined]
    if name in ("AwaitingChild", "HandedOver"):
        h.pending = h.machine.restart()  # type: ignore[attr-defined]
    if name == "HandedOver":
        h.machine._childReady(ReadyMessage(4243, {}))
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
        When the successor is ready, the machine hands over and the restart
        fires with the successor's pid and the time it took.
        """
        self.h.clock.advance(0.25)
        self.h.machine._childReady(ReadyMessage(4243, {"generation": 2}))
        outcome = self.successResultOf(self.h.pending)  # type: ignore[attr-defined]
        self.assertEqual((outcome.pid, outcome.elapsed, outcome.fields), (4243, 0.25, {"generation": 2}))
        self.assertEqual(self.h.handedOver, self.h.children)
        self.assertEqual(self.h.state(), "HandedOver")

    def test_elapsedFromRequest(self) -> None:
        """
        The time reported is from the restart request, not from the clock's
        origin.
        """
        h = inState("Serving")
        h.clock.advance(100)
        d = h.machine.restart()
        h.clock.advance(0.5)
        h.machine._childReady(ReadyMessage(4243, {}))
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
