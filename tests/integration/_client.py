"""
Clients for the integration tests: raw HTTP/1.1 over one TCP connection, so
keep-alive behaviour can be seen byte for byte.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from ._server import DEFAULT_WAIT, Event, withDeadline


def insecure() -> ssl.SSLContext:
    """
    A TLS client context that does not check the server's certificate (the
    tests' servers use self-signed ones).
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def portOf(ready: Event) -> int:
    """
    The TCP port of the first endpoint in a C{ready} event.
    """
    address = next(iter(ready["endpoints"].values()))
    return int(address.rsplit(":", 1)[1])


def freshPool() -> HTTPConnectionPool:
    """
    A pool that opens a new connection per request and keeps none.
    """
    return HTTPConnectionPool(reactor, persistent=False)


class RawHTTP(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self.closeReason: Failure | None = None
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for waiter in list(self._waiters):
            if waiter[0](self.received):
                self._waiters.remove(waiter)
                waiter[1].callback(self.received)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        for _, d in self._waiters:
            d.errback(AssertionError(f"connection closed first; received {self.received!r}"))
        self._waiters = []
        self.closeReason = reason
        self.closed.callback(None)

    def get(self, path: str) -> None:
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())  # type: ignore[union-attr]

    def waitForResponses(self, count: int, timeout: float = DEFAULT_WAIT) -> Deferred[bytes]:
        def enough(data: bytes) -> bool:
            return data.count(b"HTTP/1.1 ") >= count and _complete(data)

        if enough(self.received):
            d: Deferred[bytes] = Deferred()
            d.callback(self.received)
            return d
        d = Deferred()
        self._waiters.append((enough, d))
        return withDeadline(d, timeout, f"{count} responses did not arrive within {timeout} s")

    def waitForData(self, fragment: bytes, timeout: float = DEFAULT_WAIT) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if fragment in self.received:
            d.callback(self.received)
            return d
        self._waiters.append((lambda data: fragment in data, d))
        return withDeadline(d, timeout, f"{fragment!r} did not arrive within {timeout} s")

    def waitForClose(self, timeout: float = DEFAULT_WAIT) -> Deferred[Any]:
        return withDeadline(self.closed, timeout, f"the server did not close the connection within {timeout} s")


def _complete(data: bytes) -> bool:
    last = data.rsplit(b"HTTP/1.1 ", 1)[1]
    if b"\r\n\r\n" not in last:
        return False
    head, body = last.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return body.endswith(b"0\r\n\r\n")


async def connectRaw(port: int) -> RawHTTP:
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawHTTP())
