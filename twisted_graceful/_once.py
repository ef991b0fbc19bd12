# -*- test-case-name: tests.test_once -*-
"""
L{Once}: an event that happens once, that any number of callers can wait
for, before or after it happens.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

T = TypeVar("T")


@define
class Once(Generic[T]):
    """
    Hand out L{Deferred}s that fire with the event's result.  Cancelling
    one forgets it; the others are not affected.
    """

    _waiters: list[Deferred[T]] = field(factory=list)
    _result: tuple[T] | None = None

    @property
    def happened(self) -> bool:
        return self._result is not None

    def when(self) -> Deferred[T]:
        """
        @return: A L{Deferred} that fires with the result when the event
            happens (at once if it has).
        """
        if self._result is not None:
            return succeed(self._result[0])
        d: Deferred[T] = Deferred(self._waiters.remove)
        self._waiters.append(d)
        return d

    def happen(self, result: T) -> None:
        """
        The event happened: fire every waiter with C{result}.  Later calls
        do nothing.
        """
        if self._result is not None:
            return
        self._result = (result,)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result)
