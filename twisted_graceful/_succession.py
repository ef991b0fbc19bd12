# -*- test-case-name: tests.test_service -*-
"""
L{Succession}: a process's place between the one it took over from and the
one it hands over to.  It serves beside its predecessor until that one
stops accepting, restarts (queued while the predecessor drains), and hands
its sockets to a ready successor; the restart machine (L{coordinatorFor})
decides, this room does and reports.

It also carries kept-alive connections across the hand-over
(L{twisted_graceful._handoff}): as the old process, it gives each successor
a hand-off channel and moves idle connections through it while it drains;
as the successor, once ready, it takes the connections its predecessor
offers and serves them on the endpoint they came from.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._child import ChildProcess
from ._errors import SuccessorDied
from ._handoff import DEFAULT_HANDOFF_LIMIT, HandoffReceiver, HandoffSender, makeChannel
from ._inherit import Inheritance
from ._launcher import SuccessorLauncher
from ._movable import EndpointMover
from ._once import Once
from ._parent import ParentProcess
from ._report import Reporter
from ._restart import DEFAULT_PROBATION, RestartCore, RestartOutcome, Restarter, coordinatorFor
from ._site import GracefulSiteService, adopterFor
from ._stop import OrderedStop


class Succession:
    """
    The restarts of one process.

    @ivar handedOver: A successor serves the sockets now.
    """

    _log = Logger()

    def __init__(
        self,
        clock: Any,
        inheritance: Inheritance,
        launcher: SuccessorLauncher,
        reporter: Reporter,
        *,
        endpoints: Callable[[], Sequence[GracefulSiteService]],
        started: float,
        stopping: Callable[[], bool],
        stopReactor: Callable[[], object],
        orderedStop: OrderedStop,
        probation: float = DEFAULT_PROBATION,
        connectionHandoff: bool = True,
        handoffLimit: int = DEFAULT_HANDOFF_LIMIT,
        adopt: Callable[[str, int, int], Any] | None = None,
        keepChannel: bool = False,
    ) -> None:
        """
        @param inheritance: What this process inherited.
        @param endpoints: Returns the endpoints, whose sockets a successor
            inherits.
        @param started: When this process started (wall clock).
        @param stopping: Tells whether the ordered stop has begun.
        @param stopReactor: Ends this process once its successor is
            confirmed.
        @param orderedStop: The stop, whose drain the hand-over begins
            early (and a rollback takes back).
        @param probation: Seconds a ready successor must live before it is
            confirmed.
        @param connectionHandoff: Move idle kept-alive connections to a
            successor, and take those a predecessor moves, instead of
            closing them.
        @param handoffLimit: Connections to take from a predecessor at most.
        @param adopt: Serves a connection a predecessor moved (identity,
            family, descriptor), returning why it was refused, L{None}, or
            a L{Deferred} of either; by default, on the endpoint of its
            identity.
        @param keepChannel: Keep the channel to the successor open once
            this process's own drain is over, until L{closeChannel} (a
            supervisor still drains its workers through it).
        """
        self._clock = clock
        self._inheritance = inheritance
        self._launcher = launcher
        self._reporter = reporter
        self._endpoints = endpoints
        self._started = started
        self._stopping = stopping
        self._stopReactor = stopReactor
        self._parent = ParentProcess(clock, inheritance)
        self._orderedStop = orderedStop
        self._core = RestartCore(
            clock, self._spawn, self._handOver, self._confirm, self._rollBack,
            probation=probation, parentPID=inheritance.parentPID,
        )
        self._restarter = coordinatorFor(self._core)
        self.handedOver = False
        self._servesAlone = False
        self._attempt = 0
        self._connectionHandoff = connectionHandoff
        self._handoffLimit = handoffLimit
        self._sender: HandoffSender | None = None
        self._adopt = adopt if adopt is not None else adopterFor(endpoints)
        self._keepChannel = keepChannel
        self._receiver: HandoffReceiver | None = None

    @property
    def generation(self) -> int:
        return self._inheritance.generation

    def starting(self) -> None:
        """
        The services have started; the reactor is not running yet.
        """
        self._parent.announce("starting", generation=self.generation)

    def ready(self) -> None:
        """
        Every endpoint listens and the reactor runs: tell the predecessor,
        and serve alone once it stops accepting.
        """
        endpoints = self._addresses()
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
        self._takeConnections()

    def stop(self) -> None:
        """
        This process stops: a successor still starting is terminated, a
        queued restart is abandoned.
        """
        if self._receiver is not None:
            self._receiver.close()
        self._restarter.stop()

    def restart(self) -> Deferred[RestartOutcome]:
        """
        See L{GracefulService.restart}.
        """
        # A restart asked for right after the predecessor exited must not be
        # refused because its lifeline's end of file is still unread in this
        # very reactor turn.
        self._parent.poll()
        attempt = self._reporter.restartRequested()
        self._attempt = attempt
        result = self._restarter.restart()
        if result.called:
            return result.addErrback(self._reportRefused, attempt)
        if self._queued():
            self._reporter.queued(attempt)
        else:
            self._reporter.upgrading(attempt)
        return result.addErrback(self._reportFailed, attempt)

    def _addresses(self) -> dict[str, str | None]:
        return {e.address.description: e.listeningAddress() for e in self._endpoints()}

    def _servingAlone(self) -> None:
        """
        The predecessor (if any) no longer accepts connections: this process
        is the one serving, so the pid file names it.
        """
        if self._servesAlone or self._stopping():
            return
        self._servesAlone = True
        self._reporter.serving(self.generation, self._addresses(), self._started)
        if self._inheritance.parentPID is not None:
            self._log.info(
                "Took over from pid {parentPID}",
                parentPID=self._inheritance.parentPID,
                generation=self.generation,
                phase="took-over",
            )

    def _parentGone(self) -> None:
        self._servingAlone()
        if self._inheritance.parentPID is not None:
            self._log.info(
                "Previous process {parentPID} has exited",
                parentPID=self._inheritance.parentPID,
                phase="parent-gone",
            )
        queued = self._queued()
        self._restarter._parentGone()
        if queued and not self._queued() and not self._stopping():
            # The queued restart runs now.
            self._reporter.upgrading(self._attempt)

    def _queued(self) -> bool:
        return self._core.queued is not None

    def _reportRefused(self, failure: Failure, attempt: int) -> Failure:
        self._reporter.refused(attempt, failure.getErrorMessage())
        return failure

    def _reportFailed(self, failure: Failure, attempt: int) -> Failure:
        if not self.handedOver and not self._stopping() and not failure.check(SuccessorDied):
            # (A rollback reported itself.)
            self._reporter.upgradeFailed(attempt, failure.getErrorMessage())
        return failure

    def _spawn(self, restarter: Restarter) -> ChildProcess:
        sockets = {e.identity: e.fileno() for e in self._endpoints() if e.port is not None}
        if self._sender is not None:
            self._sender.close("a new successor starts")
            self._sender = None
        if not self._connectionHandoff:
            return self._launcher.spawn(sockets, self.generation, restarter._childReady, restarter._childFailed)
        try:
            ours, theirs = makeChannel()
        except OSError as e:
            self._log.warn(
                "Cannot make the hand-off channel ({error}): kept-alive connections will be closed, "
                "not moved",
                error=e,
                phase="handoff-unavailable",
            )
            return self._launcher.spawn(sockets, self.generation, restarter._childReady, restarter._childFailed)
        try:
            child = self._launcher.spawn(
                sockets, self.generation, restarter._childReady, restarter._childFailed, handoff=theirs.fileno()
            )
        finally:
            theirs.close()
        self._sender = HandoffSender(self._clock, ours)
        self._sender.start()
        return child

    def _movers(self) -> dict[str, EndpointMover]:
        """
        A mover for each endpoint whose connections may move to the
        successor: plain TCP and UNIX ones.
        """
        sender = self._sender
        if sender is None:
            return {}
        return {
            e.identity: EndpointMover(sender, e.identity, e.address.family)
            for e in self._endpoints()
            if e.address.tlsContextFactory is None
        }

    def _handedOff(self, result: object) -> object:
        """
        The drain is over: no more connections move (unless the channel is
        kept for L{closeChannel}).
        """
        if self._keepChannel:
            return result
        return self.closeChannel(result)

    @property
    def channel(self) -> HandoffSender | None:
        """
        The channel to the successor that a hand-over drains through, or
        L{None}.
        """
        return self._sender if self.handedOver else None

    def closeChannel(self, result: object = None) -> object:
        """
        Close the channel to the successor, and log what moved through it.
        """
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()
            self._log.info(
                "Moved {moved} kept-alive connections to the successor; {refused} stayed to drain here",
                moved=sender.moved,
                refused=sender.refused,
                phase="handoff-sent",
            )
        return result

    def _takeConnections(self) -> None:
        """
        This process is ready: take the connections its predecessor moves,
        if it handed this process a channel.
        """
        fileno = self._inheritance.handoffFD
        if fileno is None:
            return
        channel = socket.socket(fileno=fileno)
        channel.set_inheritable(False)
        if not self._connectionHandoff:
            channel.close()  # The predecessor keeps them all.
            return
        self._receiver = HandoffReceiver(
            self._clock, channel, self._adopt, self._handoffLimit,
            parentPID=self._inheritance.parentPID,
        )
        self._receiver.start()

    def _handOver(self, child: ChildProcess) -> Deferred[Any]:
        """
        Pause the sockets (kept, for a rollback), tell the successor, and
        begin the drain; the reactor and the hooks wait for the
        confirmation.
        """
        self.handedOver = True
        endpoints = self._endpoints()
        for endpoint in endpoints:
            endpoint.listener.pause()
        assert child.servingPID is not None
        self._reporter.handedOver(self._attempt, child.servingPID)
        child.handOver()
        self._log.info(
            "Handed over to pid {childPID}: draining",
            childPID=child.servingPID,
            phase="handed-over",
        )
        self._orderedStop.drainBegan.happen(None)
        movers = self._movers()
        return DeferredList(
            [e.factory.drain(e.shutdownTimeout, restarting=True, mover=movers.get(e.identity)) for e in endpoints],
            consumeErrors=True,
        ).addBoth(self._handedOff)

    def _confirm(self, child: ChildProcess) -> None:
        """
        The successor keeps the service: close the sockets for good (it
        shares them) and stop; the ordered stop runs the hooks.
        """
        for endpoint in self._endpoints():
            endpoint.stopAccepting(handOver=True)
        self._clock.callLater(0, self._stopReactor)

    def _rollBack(self, child: ChildProcess, reason: Failure) -> None:
        """
        The successor died before it was confirmed: accept again, on the
        same sockets, take the drain back, and say so.
        """
        self.handedOver = False
        if self._sender is not None:
            self._sender.close("the successor died")
            self._sender = None
        self._orderedStop.drainBegan = Once()
        for endpoint in self._endpoints():
            endpoint.factory.resume()
            endpoint.listener.resume()
        died = reason.value
        self._reporter.rolledBack(
            self._attempt,
            getattr(died, "pid", child.servingPID),
            getattr(died, "exitStatus", ""),
            getattr(died, "served", 0.0),
        )
