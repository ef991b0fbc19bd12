# -*- test-case-name: tests.test_stop -*-
"""
L{OrderedStop}: how a L{GracefulService} stops.  One phase after another:
the drain delay (the health check answers 503 while everything is still
served), the drain of every endpoint at once, the shutdown hooks in order,
the other child services, stopped.  Cutting it short aborts what is left of
the current phase and skips the hooks still to run.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Iterable, Sequence, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._drain import DrainResult
from ._hooks import HookOutcome, ShutdownHooks
from ._once import Once
from ._report import Reporter
from ._site import GracefulSiteService


class StopPhase(enum.Enum):
    """
    Where an L{OrderedStop} is.
    """

    NOT_STARTED = "not started"
    DELAYING = "delaying"
    DRAINING = "draining"
    HOOKS = "hooks"
    OTHERS = "others"
    STOPPED = "stopped"


class OrderedStop:
    """
    The ordered stop of one service.

    @ivar phase: The current L{StopPhase}.
    @ivar drainResults: Each endpoint's L{DrainResult}, once drained.
    @ivar hookOutcomes: Each hook's L{HookOutcome}, once run.
    @ivar cut: L{cutShort} was called.
    """

    _log = Logger()

    def __init__(
        self,
        clock: Any,
        service: MultiService,
        endpoints: Callable[[], Sequence[GracefulSiteService]],
        hooks: ShutdownHooks,
        reporter: Reporter,
        drainDelay: float = 0.0,
    ) -> None:
        """
        @param service: The service whose other children stop last.
        @param endpoints: Returns the endpoints to drain.
        @param drainDelay: Seconds to go on serving once the stop began.
        """
        self._clock = clock
        self._service = service
        self._endpoints = endpoints
        self._hooks = hooks
        self._reporter = reporter
        self._drainDelay = drainDelay
        self._delay: Deferred[None] | None = None
        self.phase = StopPhase.NOT_STARTED
        self.cut = False
        self.drainBegan: Once[None] = Once()
        self.drainResults: list[DrainResult] = []
        self.hookOutcomes: list[HookOutcome] = []

    def run(self, restarting: bool = False) -> Deferred[None]:
        """
        Stop, once.

        @param restarting: A successor serves: no drain delay, nothing
            reported (the successor reports), WebSockets closed with 1012.
        @return: A L{Deferred} that fires when everything has stopped.
        """
        assert self.phase is StopPhase.NOT_STARTED, self.phase
        stopping = Deferred.fromCoroutine(self._run(restarting))
        stopping.addErrback(lambda f: self._log.failure("Ordered stop failed", f))
        return stopping

    def cutShort(self) -> None:
        """
        Abort every connection and cancel the shutdown hooks still to run;
        a drain delay under way ends now.
        """
        self.cut = True
        if self._delay is not None:
            self._delay.cancel()
        for endpoint in self._endpoints():
            endpoint.cutShort()
        self._hooks.cutShort()

    async def _run(self, restarting: bool) -> None:
        started = self._clock.seconds()
        endpoints = self._endpoints()
        if not restarting:
            self._reporter.draining(self._drainDelay)
            if self._drainDelay > 0 and not self.cut:
                self.phase = StopPhase.DELAYING
                self._log.info(
                    "Stop requested: the health check answers 503; serving for {delay} s more",
                    delay=self._drainDelay,
                    phase="drain-delay",
                )
                self._delay = deferLater(self._clock, self._drainDelay, lambda: None)
                try:
                    await self._delay
                except CancelledError:
                    pass
                self._delay = None
        self.phase = StopPhase.DRAINING
        self._log.info(
            "Stopping: draining {count} endpoints",
            count=len(endpoints),
            connections=sum(e.factory.connectionCount() for e in endpoints),
            inFlight=sum(e.factory.inFlightCount() for e in endpoints),
            phase="stopping",
        )
        for endpoint in endpoints:
            endpoint.stopAccepting()
        self.drainBegan.happen(None)
        results = await DeferredList([e.drain(restarting) for e in endpoints], consumeErrors=True)
        self.drainResults = [r for ok, r in results if ok]
        failed = [(e, cast(Failure, r)) for e, (ok, r) in zip(endpoints, results) if not ok]
        for endpoint, failure in failed:
            self._log.failure(
                "Draining {endpoint} failed", failure, endpoint=endpoint.address.description, phase="drain-error"
            )
        self.phase = StopPhase.HOOKS
        self.hookOutcomes = await self._hooks.run()
        self.phase = StopPhase.OTHERS
        await stopOthers(self._service, endpoints)
        if not restarting:
            self._reporter.stopped(self.drainResults, failed=len(failed))
        self.phase = StopPhase.STOPPED
        self._log.info(
            "Stopped in {elapsed:.3f} s: {completed} requests completed, {aborted} cut,"
            " {abortedConnections} connections aborted",
            elapsed=self._clock.seconds() - started,
            completed=sum(r.completed for r in self.drainResults),
            aborted=sum(r.abortedRequests for r in self.drainResults),
            abortedConnections=sum(r.abortedConnections for r in self.drainResults),
            drainErrors=len(failed),
            phase="stopped",
        )


async def stopOthers(parent: MultiService, drained: Iterable[IService]) -> None:
    """
    Stop C{parent} itself and the children of C{parent} other than
    C{drained}, in reverse order as L{MultiService} does.
    """
    skip = set(map(id, drained))
    Service.stopService(parent)
    stopping = [
        d for child in reversed(list(parent)) if id(child) not in skip
        for d in [_maybeStop(child)] if d is not None
    ]
    for child in parent:
        if id(child) in skip:
            Service.stopService(child)  # type: ignore[arg-type,unused-ignore]
    await DeferredList(stopping, consumeErrors=True)


def _maybeStop(service: IService) -> Deferred[Any] | None:
    result = service.stopService()
    return result if isinstance(result, Deferred) else None
