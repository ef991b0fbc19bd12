"""
Bounded client loops that keep requests going while a server restarts, and
count every failure.
"""

from __future__ import annotations

from typing import Any, Callable

import treq
from treq.client import HTTPClient
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.client import HTTPConnectionPool

MAX_REQUESTS = 20000
MAX_SECONDS = 120.0


@define
class LoadLoop:
    """
    C{concurrency} loops of GET requests to C{url}, each on one kept-alive
    connection (C{keepAlive}) or on a new connection per request.  Twisted's
    automatic retry of idempotent requests is off, so every failure counts.
    """

    url: str
    keepAlive: bool
    concurrency: int = 2
    responses: list[tuple[float, int, bytes]] = field(factory=list)
    failures: list[str] = field(factory=list)
    _stopped: bool = False
    _loops: list[Deferred[Any]] = field(factory=list)
    _pool: HTTPConnectionPool | None = None
    agentFactory: Callable[[HTTPConnectionPool], Any] | None = None
    _client: Any = None

    def start(self) -> None:
        self._pool = HTTPConnectionPool(reactor, persistent=self.keepAlive)
        self._pool.retryAutomatically = False
        self._pool.maxPersistentPerHost = self.concurrency
        if self.agentFactory is not None:
            self._client = HTTPClient(self.agentFactory(self._pool))
        started = reactor.seconds()  # type: ignore[attr-defined]
        for _ in range(self.concurrency):
            self._loops.append(Deferred.fromCoroutine(self._loop(started)))

    async def _loop(self, started: float) -> None:
        while not self._stopped and len(self.responses) + len(self.failures) < MAX_REQUESTS:
            if reactor.seconds() - started > MAX_SECONDS:  # type: ignore[attr-defined]
                self.failures.append("the loop ran out of time")
                return
            try:
                if self._client is not None:
                    response = await self._client.get(self.url, timeout=10)
                else:
                    response = await treq.get(self.url, pool=self._pool, timeout=10)
                body = await response.content()
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                continue
            self.responses.append((reactor.seconds(), response.code, body))  # type: ignore[attr-defined]
            if response.code != 200:
                self.failures.append(f"status {response.code}")

    async def stop(self, servedBy: int | None = None, timeout: float = 10.0) -> None:
        """
        Stop the loops; with C{servedBy}, first wait (up to C{timeout}) until
        the latest response came from that pid, since responses from a
        predecessor may still arrive just before it exits.
        """
        if servedBy is not None:
            from twisted.internet.task import deferLater

            deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
            while (not self.pids() or self.pids()[-1] != servedBy) and reactor.seconds() < deadline:  # type: ignore[attr-defined]
                await deferLater(reactor, 0.01, lambda: None)
        self._stopped = True
        await DeferredList(self._loops)
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    def pids(self) -> list[int]:
        return [int(body) for _, code, body in self.responses if code == 200 and body.isdigit()]
