"""
Helpers for driving a drained L{Site} in memory: a resource that holds its
requests open, and a raw HTTP client wired to the server with L{iosim}.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twisted_graceful._drain import DrainingFactory

AT_LEAST_IDLE_GRACE = 1.0


class HeldResource(Resource):
    """
    C{/held} keeps each request open until the test finishes it; any other
    path answers C{fast} at once.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/held":
            self.held.append(request)
            return NOT_DONE_YET
        return b"fast"

    def finishAll(self, body: bytes = b"done") -> None:
        held, self.held = self.held, []
        for request in held:
            request.write(body)
            request.finish()


class RawClient(Protocol):
    """
    Records every byte the server sends, and whether the connection closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.closed = reason

    def responses(self) -> list[bytes]:
        """
        The status line and headers of each response received so far.
        """
        return [chunk for chunk in self.received.split(b"HTTP/1.1 ")[1:]]


def request(path: str = "/", headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()


class DrainHarness:
    """
    A L{DrainingFactory} over a L{Site} of L{HeldResource}, and a way to
    connect raw clients to it, all on one L{MemoryReactorClock}.
    """

    def __init__(
        self, idleGrace: float = 0.1, site: Site | None = None, resource: HeldResource | None = None
    ) -> None:
        self.clock = MemoryReactorClock()
        self.resource = resource if resource is not None else HeldResource()
        self.site = site if site is not None else Site(self.resource, reactor=self.clock)
        self.factory = DrainingFactory(self.site, self.clock, name="test", idleGrace=idleGrace)
        self.factory.doStart()
        self.pumps: list[iosim.IOPump] = []

    def connect(self) -> tuple[RawClient, iosim.IOPump]:
        server = self.factory.buildProtocol(iosim.FakeAddress())
        assert server is not None, "the factory refused the connection"
        client = RawClient()
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            clock=self.clock,
        )
        self.pumps.append(pump)
        return client, pump

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def send(self, pump: iosim.IOPump, data: bytes) -> None:
        pump.client.transport.write(data)
        self.flush()


class EchoResource(HeldResource):
    """
    Like L{HeldResource}, and any other method answers with the length of
    the request body it read, so a test sees that the whole body arrived.
    """

    def render(self, request: Request) -> bytes | int:  # type: ignore[override]
        if request.method in (b"GET", b"HEAD"):
            return super().render_GET(request)
        assert request.content is not None
        return b"read %d" % (len(request.content.read()),)


def rawRequest(method: str, path: str = "/", headers: str = "", body: bytes = b"") -> bytes:
    """
    A whole HTTP/1.1 request: C{headers} are extra header lines, each ending
    in CRLF; a body gets a C{Content-Length} unless C{headers} frame it.
    """
    if body and "Content-Length" not in headers and "chunked" not in headers:
        headers += f"Content-Length: {len(body)}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode() + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    """
    C{body} in the chunked transfer coding.
    """
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"
