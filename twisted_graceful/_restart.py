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
  - once the successor is ready, this process stops accepting, tells the
    successor, and drains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from attrs import frozen
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._child import ChildProcess, ReadyMessage
from ._errors import NotReadyToRestart, RestartInProgress

_log = Logger(namespace="twisted_graceful.restart")


@frozen
class RestartOutcome:
    """
    A restart that worked.

    @ivar pid: The successor's serving pid.
    @ivar elapsed: Seconds from the request to the successor's ready.
    @ivar fields: What the successor reported (generation, endpoints).
    """

    pid: int
    elapsed: float
    fields: dict[str, object]


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


@dataclass
class RestartCore:
    """
    The effects of the machine, passed in.

    @ivar clock: Times restarts.
    @ivar spawn: Starts a successor; the L{ChildProcess} calls the machine's
        C{_childReady} or C{_childFailed}.
    @ivar handOver: Stops accepting, tells the successor, and begins the
        drain.
    @ivar parentPID: The predecessor, while it lives.
    @ivar attempt: The restart under way, if any.
    @ivar queued: The restart waiting for the predecessor to exit, if any.
    """

    clock: IReactorTime
    spawn: Callable[[Restarter], ChildProcess]
    handOver: Callable[[ChildProcess], None]
    parentPID: int | None = None
    attempt: _Attempt | None = None
    queued: _Queued | None = None


@dataclass
class _Queued:
    """
    A restart waiting for the predecessor to exit: each request for it gets
    its outcome.
    """

    waiters: list[Deferred[RestartOutcome]] = field(default_factory=list)

    def wait(self) -> Deferred[RestartOutcome]:
        d: Deferred[RestartOutcome] = Deferred()
        self.waiters.append(d)
        return d

    def tell(self, result: Deferred[RestartOutcome]) -> None:
        """
        Give every waiter the outcome of C{result}, which has no other
        reader.
        """

        def fanOut(outcome: object) -> None:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if isinstance(outcome, Failure):
                    waiter.errback(outcome)
                else:
                    waiter.callback(outcome)  # type: ignore[arg-type]

        result.addBoth(fanOut)


def _queue(restarter: Restarter, core: RestartCore) -> _Queued:
    _log.info(
        "Restart queued: the previous process is still draining; the restart runs once it has exited",
        phase="restart-queued",
    )
    core.queued = _Queued()
    return core.queued


@dataclass
class _Attempt:
    child: ChildProcess
    started: float
    result: Deferred[RestartOutcome] = field(default_factory=Deferred)


def _refuse(error: Exception) -> Callable[..., Deferred[RestartOutcome]]:
    def refuse(restarter: Restarter, core: RestartCore, *args: object) -> Deferred[RestartOutcome]:
        _log.warn("Restart refused: {reason}", reason=str(error), phase="restart-refused")
        return fail(error)

    return refuse


def _ignore(restarter: Restarter, core: RestartCore, *args: Any) -> None:
    return None


def _startAttempt(restarter: Restarter, core: RestartCore) -> _Attempt:
    _log.info("Restart requested: starting a successor", phase="restart-requested")
    core.attempt = _Attempt(core.spawn(restarter), core.clock.seconds())
    return core.attempt


def _makeMachine() -> tuple[Callable[..., Restarter], Any, Any]:
    builder = TypeMachineBuilder(Restarter, RestartCore)
    StartingBesideParent = builder.state("StartingBesideParent")
    Starting = builder.state("Starting")
    ServingBesideParent = builder.state("ServingBesideParent")
    Serving = builder.state("Serving")
    Queued = builder.state("Queued", _queue)
    AwaitingChild = builder.state("AwaitingChild", _startAttempt)
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
    def joinQueued(restarter: Restarter, core: RestartCore, queue: _Queued) -> Deferred[RestartOutcome]:
        _log.info("Restart already queued: this request waits for it", phase="restart-queued")
        return queue.wait()

    @Queued.upon(Restarter._parentGone).to(AwaitingChild)
    def runQueued(restarter: Restarter, core: RestartCore, queue: _Queued) -> None:
        assert core.attempt is not None
        core.queued = None
        queue.tell(core.attempt.result)

    @Queued.upon(Restarter.stop).to(Stopping)
    def stopWhileQueued(restarter: Restarter, core: RestartCore, queue: _Queued) -> None:
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
    def inProgress(restarter: Restarter, core: RestartCore, attempt: _Attempt) -> Deferred[RestartOutcome]:
        return _refuseInProgress(attempt)

    HandedOver.upon(Restarter.restart).loop()(
        _refuse(NotReadyToRestart("this process has handed over to its successor and is draining"))
    )
    Stopping.upon(Restarter.restart).loop()(_refuse(NotReadyToRestart("this process is stopping")))

    # The successor's fate.
    @AwaitingChild.upon(Restarter._childReady).to(HandedOver)
    def childReady(restarter: Restarter, core: RestartCore, attempt: _Attempt, message: ReadyMessage) -> None:
        outcome = RestartOutcome(message.pid, core.clock.seconds() - attempt.started, message.fields)
        _log.info(
            "Successor {childPID} is ready after {elapsed:.3f} s: handing over",
            childPID=message.pid,
            elapsed=outcome.elapsed,
            phase="child-ready",
        )
        core.handOver(attempt.child)
        attempt.result.callback(outcome)

    @AwaitingChild.upon(Restarter._childFailed).to(Serving)
    def childFailed(restarter: Restarter, core: RestartCore, attempt: _Attempt, reason: Failure) -> None:
        _log.error(
            "Restart failed: {reason}",
            reason=reason.getErrorMessage(),
            error=type(reason.value).__name__,
            childPID=attempt.child.servingPID or attempt.child.spawnedPID,
            phase="restart-failed",
        )
        attempt.result.errback(reason)

    @AwaitingChild.upon(Restarter.stop).to(Stopping)
    def stopWhileAwaiting(restarter: Restarter, core: RestartCore, attempt: _Attempt) -> None:
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
        _log.error(
            "The successor failed after it was ready: {reason}",
            reason=reason.getErrorMessage(),
            phase="child-died",
        )

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


def _refuseInProgress(attempt: _Attempt) -> Deferred[RestartOutcome]:
    error = RestartInProgress(
        f"a restart is already in progress (successor pid "
        f"{attempt.child.servingPID or attempt.child.spawnedPID}); it is left to finish"
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
