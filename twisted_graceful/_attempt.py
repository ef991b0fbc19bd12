# -*- test-case-name: tests.test_restart -*-
"""
What the restart machine's states carry: the restart under way
(L{Attempt}), the restart waiting for the predecessor to exit
(L{QueuedRestart}), and the outcome of one that worked (L{RestartOutcome}).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ._child import ChildProcess


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


@dataclass
class QueuedRestart:
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


@dataclass
class Attempt:
    """
    The restart under way: its successor, when it was asked, its outcome
    once the successor is ready, and the probation's timer.
    """

    child: ChildProcess
    started: float
    result: Deferred[RestartOutcome] = field(default_factory=Deferred)
    outcome: RestartOutcome | None = None
    probation: IDelayedCall | None = None

    def endProbation(self) -> None:
        if self.probation is not None and self.probation.active():
            self.probation.cancel()
        self.probation = None
