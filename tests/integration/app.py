"""
The application the integration tests serve under C{twistd graceful}.

C{/} answers the pid; C{/slow?seconds=N} answers after N seconds;
C{/forever} never finishes.  The hooks log an event each, so tests can see
their order.
"""

from __future__ import annotations

import os
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_graceful.demo import DemoResource

_log = Logger()


class App(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._demo = DemoResource()

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/forever":
            request.setHeader(b"Content-Type", b"text/plain")
            request.write(b"this response never ends\n")
            return NOT_DONE_YET
        if request.path == b"/big":
            # Larger than any socket buffer: a client that never reads keeps
            # this response unfinished.
            request.setHeader(b"Content-Type", b"application/octet-stream")
            return b"x" * (64 * 1024 * 1024)
        if request.path == b"/block":
            # Blocks the whole event loop, as a slow synchronous handler does.
            time.sleep(float(request.args.get(b"seconds", [b"1"])[0]))
            return b"blocked\n"
        if request.path == b"/slow":
            _log.info("slow request received", testEvent="slow-received")
            return self._demo.render_GET(request)
        request.setHeader(b"X-Pid", str(os.getpid()).encode())
        return str(os.getpid()).encode()


    def render_POST(self, request: Request) -> bytes:
        # The client's port names the connection (behind a proxy, the
        # proxy's upstream connection).
        request.setHeader(b"X-Peer-Port", str(getattr(request.getClientAddress(), "port", "")).encode())
        return b"got " + str(len(request.content.read())).encode() + b" bytes"

    render_PUT = render_POST


root = App


def hookFirst() -> None:
    _log.info("hook first ran", testHook="first")


def hookStuck() -> Deferred[None]:
    _log.info("hook stuck started", testHook="stuck")
    return Deferred()


def hookFails() -> None:
    _log.info("hook fails ran", testHook="fails")
    raise RuntimeError("this hook fails")


async def hookLast() -> None:
    _log.info("hook last ran", testHook="last")


def wsgiApp(environ: dict, start_response):  # type: ignore[no-untyped-def,type-arg]
    """
    A WSGI application: C{/slow} blocks its thread for a second.
    """
    import time

    if environ["PATH_INFO"] == "/slow":
        _log.info("wsgi slow request received", testEvent="wsgi-slow")
        time.sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


class Events(Resource):
    """
    Server-sent events: a tick every 0.2 s; when the drain begins, a C{drain}
    event, and the stream ends.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> int:
        from twisted.internet import reactor
        from twisted.internet.task import LoopingCall

        from twisted_graceful import whenDraining

        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-store")
        ticks = LoopingCall(lambda: request.write(b"data: tick\n\n"))
        ticks.clock = reactor
        ticks.start(0.2)
        draining = whenDraining(request)

        def drain(_: object) -> None:
            ticks.stop()
            request.write(b"event: drain\ndata: the server is stopping; reconnect\n\n")
            request.finish()

        draining.addCallback(drain)

        def gone(_: object) -> None:
            if ticks.running:
                ticks.stop()
            draining.cancel()

        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET


class Echo:
    """
    A WebSocket that echoes text, for twisted.web.websocket.
    """

    def negotiationStarted(self, transport: object) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self.transport.sendTextMessage("hello")  # type: ignore[attr-defined]

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.transport.sendTextMessage(message)  # type: ignore[attr-defined]

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        pass


class EchoFactory:
    def buildProtocol(self, request: Request) -> Echo:
        return Echo()


def streaming() -> Resource:
    """
    C{/events} (server-sent events), C{/ws} (a WebSocket echo), and the
    rest of L{App}.
    """
    from twisted.web.websocket import WebSocketResource

    root = _Streaming()
    root.putChild(b"events", Events())
    root.putChild(b"ws", WebSocketResource(EchoFactory()))  # type: ignore[arg-type]
    return root


class _Streaming(App):
    """
    L{App} for every path but its children.
    """

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self
