# -*- test-case-name: tests.test_restart -*-
"""
L{RestartCoordinator}: the lifecycle of one process across restarts, as an
Automat machine.

Invariants, each a state or a refused transition:
  - one restart at a time: C{restart()} while a successor starts fails with
    L{RestartInProgress};
  - a process restarts only when it serves and its own predecessor has
    exited, so at most two processes exist and at most one of them is not
    ready: a restart asked while the predecessor still drains is queued
    (at most one: a second request joins it) and runs once the predecessor
    has exited; while the process starts or stops, it is refused
    (L{NotReadyToRestart});
  - a successor that dies or misses the ready deadline is terminated and this
    process goes on serving;
  - once the successor is ready, this process pauses its listening ports
    (it keeps them, and the kernel queues what it does not accept), tells
    the successor, and drains; it is confirmed once the drain is over and
    the probation has passed with the successor alive, and only then closes
    its ports for good and stops;
  - a successor that dies before it is confirmed is rolled back: this
    process resumes accepting on the same ports and serves again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._attempt import Attempt, QueuedRestart
from ._attempt import RestartOutcome as RestartOutcome
from ._child import ChildProcess, ReadyMessage
from ._errors import NotReadyToRestart, RestartInProgress, SuccessorDied
from ._pidfile import isAlive

_log = Logger(namespace="twisted_graceful.restart")

DEFAULT_PROBATION = 5.0
"""
Seconds a ready successor must live before the old process lets go of its
listening ports; see C{docs/restart.md}.
"""


class Restarter(Protocol):
    def restart(self) -> Deferred[RestartOutcome]:
        "Start a successor and hand the listening sockets over to it."

    def stop(self) -> None:
        "This process is stopping, with no successor (or its successor took over)."

    def _ready(self) -> None:
        "This process serves: every endpoint listens and the reactor runs."

    def _parentGone(self) -> None:
        "This process's predecessor has exited."

    def _childReady(self, message: ReadyMessage) -> None:
        "The successor reported ready."

    def _childFailed(self, reason: Failure) -> None:
        "The successor died or missed its deadline."

    def _drained(self) -> None:
        "The drain begun at the hand-over is over."

    def _probationOver(self) -> None:
        "The successor has served its probation since it reported ready."


@dataclass
class RestartCore:
    """
    The effects of the machine, passed in.

    @ivar clock: Times restarts.
    @ivar spawn: Starts a successor; the L{ChildProcess} calls the machine's
        C{_childReady} or C{_childFailed}.
    @ivar handOver: Pauses the listening ports, tells the successor, and
        begins the drain; returns a L{Deferred} that fires when it is over.
    @ivar confirm: The successor is confirmed: closes the paused ports for
        good and stops this process (its hooks run then).
    @ivar rollBack: The successor died (the L{Failure} says how) before it
        was confirmed: resumes the ports and the drain, reports.
    @ivar probation: Seconds the successor must live after its ready report
        before it is confirmed.
    @ivar parentPID: The predecessor, while it lives.
    @ivar attempt: The restart under way, if any.
    @ivar queued: The restart waiting for the predecessor to exit, if any.
    @ivar stillThere: Whether a pid is a live process (L{isAlive}).
    """

    clock: IReactorTime
    spawn: Callable[[Restarter], ChildProcess]
    handOver: Callable[[ChildProcess], Deferred[object]]
    confirm: Callable[[ChildProcess], None]
    rollBack: Callable[[ChildProcess, Failure], None]
    probation: float = DEFAULT_PROBATION
    parentPID: int | None = None
    attempt: Attempt | None = None
    queued: QueuedRestart | None = None
    stillThere: Callable[[int], bool] = isAlive


def _queue(restarter: Restarter, core: RestartCore) -> QueuedRestart:
    _log.info(
        "Restart queued: the previous process is still draining; the restart runs once it has exited",
        phase="restart-queued",
    )
    core.queued = QueuedRestart()
    return core.queued


def _putOnProbation(restarter: Restarter, core: RestartCore, message: ReadyMessage) -> Attempt:
    assert core.attempt is not None
    return core.attempt


def _stillOnProbation(restarter: Restarter, core: RestartCore) -> Attempt:
    assert core.attempt is not None
    return core.attempt


def _refuse(error: Exception) -> Callable[..., Deferred[RestartOutcome]]:
    def refuse(restarter: Restarter, core: RestartCore, *args: object) -> Deferred[RestartOutcome]:
        _log.warn("Restart refused: {reason}", reason=str(error), phase="restart-refused")
        return fail(error)

    return refuse


def _ignore(restarter: Restarter, core: RestartCore, *args: Any) -> None:
    return None


def _startAttempt(restarter: Restarter, core: RestartCore) -> Attempt:
    _log.info("Restart requested: starting a successor", phase="restart-requested")
    core.attempt = Attempt(core.spawn(restarter), core.clock.seconds())
    return core.attempt


def _makeMachine() -> tuple[Callable[..., Restarter], Any, Any]:
    builder = TypeMachineBuilder(Restarter, RestartCore)
    StartingBesideParent = builder.state("StartingBesideParent")
    Starting = builder.state("Starting")
    ServingBesideParent = builder.state("ServingBesideParent")
    Serving = builder.state("Serving")
    Queued = builder.state("Queued", _queue)
    AwaitingChild = builder.state("AwaitingChild", _startAttempt)
    # Paused and draining, the successor on probation; then drained, or
    # past the probation: confirmed once both are true.
    OnProbation = builder.state("OnProbation", _putOnProbation)
    DrainedOnProbation = builder.state("DrainedOnProbation", _stillOnProbation)
    DrainingAfterProbation = builder.state("DrainingAfterProbation", _stillOnProbation)
    HandedOver = builder.state("HandedOver")
    Stopping = builder.state("Stopping")

    # Starting up.
    StartingBesideParent.upon(Restarter._ready).to(ServingBesideParent).returns(None)
    StartingBesideParent.upon(Restarter._parentGone).to(Starting).returns(None)
    Starting.upon(Restarter._ready).to(Serving).returns(None)
    Starting.upon(Restarter._parentGone).loop()(_ignore)
    ServingBesideParent.upon(Restarter._parentGone).to(Serving).returns(None)
    Serving.upon(Restarter._parentGone).loop()(_ignore)

    # Restart requests.
    for state in (StartingBesideParent, Starting):
        state.upon(Restarter.restart).loop()(_refuse(NotReadyToRestart("this process is still starting")))
    @ServingBesideParent.upon(Restarter.restart).to(Queued)
    def queued(restarter: Restarter, core: RestartCore) -> Deferred[RestartOutcome]:
        # The state's data factory, _queue, ran first.
        assert core.queued is not None
        return core.queued.wait()

    @Queued.upon(Restarter.restart).loop()
    def joinQueued(restarter: Restarter, core: RestartCore, queue: QueuedRestart) -> Deferred[RestartOutcome]:
        _log.info("Restart already queued: this request waits for it", phase="restart-queued")
        return queue.wait()

    @Queued.upon(Restarter._parentGone).to(AwaitingChild)
    def runQueued(restarter: Restarter, core: RestartCore, queue: QueuedRestart) -> None:
        assert core.attempt is not None
        core.queued = None
        queue.tell(core.attempt.result)

    @Queued.upon(Restarter.stop).to(Stopping)
    def stopWhileQueued(restarter: Restarter, core: RestartCore, queue: QueuedRestart) -> None:
        error = NotReadyToRestart("this process stopped before the queued restart could run")
        _log.warn("Queued restart abandoned: {reason}", reason=str(error), phase="restart-refused")
        core.queued = None
        queue.tell(fail(error))

    @Serving.upon(Restarter.restart).to(AwaitingChild)
    def spawned(restarter: Restarter, core: RestartCore) -> Deferred[RestartOutcome]:
        # The state's data factory, _startAttempt, ran first.
        assert core.attempt is not None
        return core.attempt.result
    @AwaitingChild.upon(Restarter.restart).loop()
    def inProgress(restarter: Restarter, core: RestartCore, attempt: Attempt) -> Deferred[RestartOutcome]:
        return _refuseInProgress(attempt)

    HandedOver.upon(Restarter.restart).loop()(
        _refuse(NotReadyToRestart("this process has handed over to its successor and is draining"))
    )
    Stopping.upon(Restarter.restart).loop()(_refuse(NotReadyToRestart("this process is stopping")))

    for trial in (OnProbation, DrainedOnProbation, DrainingAfterProbation):
        trial.upon(Restarter.restart).loop()(_refuseOnProbation)
        trial.upon(Restarter._childFailed).to(Serving)(_rollBack)
        trial.upon(Restarter.stop).to(HandedOver)(_stopOnProbation)

    # The successor's fate.
    @AwaitingChild.upon(Restarter._childReady).to(OnProbation)
    def childReady(restarter: Restarter, core: RestartCore, attempt: Attempt, message: ReadyMessage) -> None:
        attempt.outcome = RestartOutcome(message.pid, core.clock.seconds() - attempt.started, message.fields)
        _log.info(
            "Successor {childPID} is ready after {elapsed:.3f} s: handing over, on probation for {probation} s",
            childPID=message.pid,
            elapsed=attempt.outcome.elapsed,
            probation=core.probation,
            phase="child-ready",
        )
        attempt.probation = core.clock.callLater(core.probation, restarter._probationOver)
        # A drain with nothing to wait for is over at once: the machine
        # takes that input once this transition is done.
        core.handOver(attempt.child).addBoth(lambda _: restarter._drained())

    OnProbation.upon(Restarter._drained).to(DrainedOnProbation).returns(None)
    OnProbation.upon(Restarter._probationOver).to(DrainingAfterProbation).returns(None)
    DrainedOnProbation.upon(Restarter._probationOver).to(HandedOver)(_confirm)
    DrainingAfterProbation.upon(Restarter._drained).to(HandedOver)(_confirm)

    @AwaitingChild.upon(Restarter._childFailed).to(Serving)
    def childFailed(restarter: Restarter, core: RestartCore, attempt: Attempt, reason: Failure) -> None:
        _log.error(
            "Restart failed: {reason}",
            reason=reason.getErrorMessage(),
            error=type(reason.value).__name__,
            childPID=attempt.child.servingPID or attempt.child.spawnedPID,
            phase="restart-failed",
        )
        attempt.result.errback(reason)

    @AwaitingChild.upon(Restarter.stop).to(Stopping)
    def stopWhileAwaiting(restarter: Restarter, core: RestartCore, attempt: Attempt) -> None:
        _log.warn(
            "Stopping during a restart: terminating successor {childPID}",
            childPID=attempt.child.servingPID or attempt.child.spawnedPID,
            phase="restart-abandoned",
        )
        attempt.child.terminate()
        attempt.result.errback(Failure(NotReadyToRestart("this process stopped before its successor was ready")))

    AwaitingChild.upon(Restarter._parentGone, nodata=True).loop()(_ignore)
    AwaitingChild.upon(Restarter._ready, nodata=True).loop()(_ignore)

    @HandedOver.upon(Restarter._childFailed).loop()
    def childDiedAfterReady(restarter: Restarter, core: RestartCore, reason: Failure) -> None:
        pid = getattr(reason.value, "pid", None)
        if isinstance(pid, int) and core.stillThere(pid):
            # This process, stopping, let go of its end of the lifeline (its
            # reactor disconnects every descriptor): a daemonized successor,
            # not this process's child, is not reaped here and lives on.
            _log.debug("Successor {childPID} serves on; this process let go of its lifeline", childPID=pid)
            return
        _log.error(
            "The successor died after it was confirmed: {reason}. Nothing serves once this process has"
            " stopped; start the service again",
            reason=reason.getErrorMessage(),
            phase="child-died",
        )

    # A stop during the probation leaves the drain to finish.
    HandedOver.upon(Restarter._drained).loop()(_ignore)

    for state in (HandedOver, Stopping):
        state.upon(Restarter.stop).loop()(_ignore)
        state.upon(Restarter._parentGone).loop()(_ignore)
    @Stopping.upon(Restarter._childReady).loop()
    def readyWhileStopping(restarter: Restarter, core: RestartCore, message: ReadyMessage) -> None:
        "The successor was terminated when the stop began: its news is moot."

    @Stopping.upon(Restarter._childFailed).loop()
    def failedWhileStopping(restarter: Restarter, core: RestartCore, reason: Failure) -> None:
        "The successor was terminated when the stop began: its news is moot."

    Stopping.upon(Restarter._ready).loop()(_ignore)

    for state in (StartingBesideParent, Starting, ServingBesideParent, Serving):
        state.upon(Restarter.stop).to(Stopping).returns(None)

    return builder.build(), StartingBesideParent, Starting


def _refuseOnProbation(restarter: Restarter, core: RestartCore, attempt: Attempt) -> Deferred[RestartOutcome]:
    return _refuseInProgress(attempt, ", on probation")


def _stopOnProbation(restarter: Restarter, core: RestartCore, attempt: Attempt) -> None:
    _log.info(
        "Stop requested while successor {childPID} is on probation: it keeps the service;"
        " this process drains and stops",
        childPID=attempt.child.servingPID,
        phase="probation-ended",
    )
    _confirm(restarter, core, attempt)


def _confirm(restarter: Restarter, core: RestartCore, attempt: Attempt) -> None:
    """
    The successor keeps the service: let go of the ports, stop, and give
    the restart its outcome.
    """
    attempt.endProbation()
    assert attempt.outcome is not None
    _log.info(
        "Successor {childPID} confirmed: closing the listening ports and stopping",
        childPID=attempt.outcome.pid,
        phase="confirmed",
    )
    core.confirm(attempt.child)
    attempt.result.callback(attempt.outcome)


def _rollBack(restarter: Restarter, core: RestartCore, attempt: Attempt, reason: Failure) -> None:
    """
    The successor died before it was confirmed: serve again.
    """
    attempt.endProbation()
    died = reason.value if isinstance(reason.value, SuccessorDied) else SuccessorDied(reason.getErrorMessage())
    message = f"{died}; this process rolled back and serves again"
    _log.error(
        "Rolled back: {reason}",
        reason=message,
        childPID=died.pid,
        exitStatus=died.exitStatus,
        served=died.served,
        phase="rolled-back",
    )
    core.rollBack(attempt.child, reason)
    attempt.result.errback(Failure(SuccessorDied(message, died.pid, died.exitStatus, died.served)))


def _refuseInProgress(attempt: Attempt, why: str = "") -> Deferred[RestartOutcome]:
    error = RestartInProgress(
        f"a restart is already in progress (successor pid "
        f"{attempt.child.servingPID or attempt.child.spawnedPID}{why}); it is left to finish"
    )
    _log.warn("Restart refused: {reason}", reason=str(error), phase="restart-refused")
    return fail(error)


_MACHINE, _BESIDE_PARENT, _ALONE = _makeMachine()


def coordinatorFor(core: RestartCore) -> Restarter:
    """
    Build the restart machine for a process: it starts beside its
    predecessor when C{core.parentPID} is set, else alone.
    """
    return _MACHINE(core, _BESIDE_PARENT if core.parentPID is not None else _ALONE)
