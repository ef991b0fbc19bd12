"""
The traffic matrix: every request shape on every connection state and
transport, through a SIGTERM drain and a SIGUSR2 restart, sent by clients
nobody here wrote (httpx, with h2 for HTTP/2; websockets; wsproto on a raw
socket; plain sockets for pipelining).

Each case runs in a thread of its own: it opens its connection and sends
what it must before the signal, waits until the old process has begun to
drain, then sends the rest.  A case records what its client saw; the test
asserts that every request got its full response, that kept-alive
connections were told C{Connection: close} (or GOAWAY) in a stop, or over
TLS, and in a restart moved to the new process on plain sockets (the same
connection goes on after the old process is gone), that nothing was reset,
and that the drain ended soon after the last response instead of at its
deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from ._client import insecure
from ._procs import freePort, waitUntilGone
from ._server import ServerProcess, startServer, withDeadline
from .test_long_lived import hasIPv6, selfSignedCertificate

httpx = pytest.importorskip("httpx")
websockets = pytest.importorskip("websockets.sync.client")
pytest.importorskip("h2", reason="HTTP/2 needs twisted[http2]")

IDLE_GRACE = 1.0
SHUTDOWN_TIMEOUT = 20.0
WAIT = 20.0
BODY = bytes(range(256)) * 256  # 64 KiB


class Drain:
    """
    What every case waits for: the old process began to drain.
    """

    def __init__(self) -> None:
        self.signalled = 0.0
        self.began = threading.Event()
        self.ended = threading.Event()

    def wait(self) -> None:
        if not self.began.wait(WAIT):
            raise AssertionError(f"the drain did not begin within {WAIT} s")


class Case:
    """
    One client scenario: C{run(case)} runs in a thread, calls
    C{case.prepared.set()} once its connection is in the state the scenario
    needs, and records each outcome with L{ok} or L{failed}.
    """

    def __init__(self, name: str, run: Callable[[Case], None]) -> None:
        self.name = name
        self._run = run
        self.prepared = threading.Event()
        self.outcomes: list[str] = []
        self.lastActivity = 0.0
        self.drain: Drain

    def ok(self, what: str) -> None:
        self.outcomes.append(f"ok: {what}")
        self.lastActivity = time.time()

    def failed(self, what: str) -> None:
        self.outcomes.append(f"FAILED: {what}")
        self.lastActivity = time.time()

    def check(self, condition: bool, what: str) -> None:
        (self.ok if condition else self.failed)(what)

    def run(self) -> None:
        try:
            self._run(self)
        except Exception as e:
            self.failed(f"{type(e).__name__}: {e}")
        finally:
            self.prepared.set()


class Targets:
    """
    Where each transport of the server listens, and clients for them.
    """

    def __init__(self, ready: dict[str, Any], sock: Path) -> None:
        self.addresses: dict[str, Any] = {}
        for description, address in ready["endpoints"].items():
            kind = description.split(":", 1)[0]
            if kind == "unix":
                self.addresses[kind] = str(sock)
            else:
                host, port = address.rsplit(":", 1)
                self.addresses[kind] = (host.strip("[]"), int(port))

    def kinds(self) -> list[str]:
        return list(self.addresses)

    def url(self, kind: str, path: str = "/", scheme: str = "http") -> str:
        if kind == "unix":
            return f"{scheme}://localhost{path}"
        host, port = self.addresses[kind]
        if kind == "ssl":
            scheme = scheme.replace("http", "https").replace("ws", "wss")
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}{path}"

    def client(self, kind: str, http2: bool = False) -> Any:
        """
        An httpx client that keeps one connection alive.
        """
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        if kind == "unix":
            transport = httpx.HTTPTransport(uds=self.addresses[kind], limits=limits)
            return httpx.Client(transport=transport, timeout=WAIT)
        return httpx.Client(verify=False, http1=not http2, http2=http2, limits=limits, timeout=WAIT)

    def socket(self, kind: str) -> socket.socket:
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.addresses[kind])
        else:
            host, port = self.addresses[kind]
            s = socket.create_connection((host, port), timeout=WAIT)
        if kind == "ssl":
            context = insecure()
            context.set_alpn_protocols(["http/1.1"])
            s = context.wrap_socket(s, server_hostname="localhost")
        s.settimeout(WAIT)
        return s


def shapes() -> dict[str, Callable[[Any, str], Any]]:
    """
    Each request shape, sent by an httpx client to a URL.
    """

    def chunks() -> Any:
        for i in range(0, 3000, 1000):
            yield BODY[i : i + 1000]

    return {
        "GET": lambda c, url: c.get(url),
        "HEAD": lambda c, url: c.head(url),
        "POST Content-Length": lambda c, url: c.post(url, content=b"x" * 10),
        "POST chunked": lambda c, url: c.post(url, content=chunks()),
        "PUT 64 KiB": lambda c, url: c.put(url, content=BODY),
        "POST Expect: 100-continue": lambda c, url: c.post(
            url, content=BODY, headers={"Expect": "100-continue"}
        ),
    }


EXPECTED = {
    "GET": None,
    "HEAD": b"",
    "POST Content-Length": b"got 10 bytes",
    "POST chunked": b"got 3000 bytes",
    "PUT 64 KiB": b"got 65536 bytes",
    "POST Expect: 100-continue": b"got 65536 bytes",
}


def keptAliveBusy(targets: Targets, kind: str, shape: str, moves: bool) -> Case:
    """
    A kept-alive connection whose next request (of C{shape}) arrives within
    the idle grace after the drain began: it gets its full response with
    C{Connection: close}; or, when it C{moves} to the new process, its
    requests go on being answered on the same connection after the old
    process is gone.
    """
    send = shapes()[shape]

    def run(case: Case) -> None:
        if moves:
            return runMoving(case)
        expected = EXPECTED[shape]
        with targets.client(kind) as client:
            # Busy: a request every 0.3 s until one is answered with
            # Connection: close, the first sent after the drain began.
            for sent in range(int(WAIT / 0.3)):
                response = send(client, targets.url(kind, "/"))
                if sent == 0:
                    case.prepared.set()
                if response.status_code != 200 or not (expected is None or response.content == expected):
                    case.failed(f"status {response.status_code}, body {response.content[:40]!r}")
                    return
                if response.headers.get("connection") == "close":
                    break
                time.sleep(0.3)
            case.check(case.drain.signalled > 0, "Connection: close only once the drain began")
            case.check(response.headers.get("connection") == "close", f"Connection: close after {sent + 1}")

    def runMoving(case: Case) -> None:
        expected = EXPECTED[shape]
        sockets = set()
        after = 0
        with targets.client(kind) as client:
            for sent in range(int(2 * WAIT / 0.3)):
                response = send(client, targets.url(kind, "/"))
                if sent == 0:
                    case.prepared.set()
                if response.status_code != 200 or not (expected is None or response.content == expected):
                    case.failed(f"status {response.status_code}, body {response.content[:40]!r}")
                    return
                if response.headers.get("connection") == "close":
                    case.failed(f"Connection: close on response {sent + 1}")
                    return
                # httpx reconnects silently: the socket under it says
                # whether the connection is the same.
                sockets.add(id(response.extensions["network_stream"].get_extra_info("socket")))
                after += case.drain.ended.is_set()
                if after == 3:
                    break
                time.sleep(0.3)
            case.check(after == 3, "answered after the old process was gone")
            case.check(len(sockets) == 1, f"one connection throughout, not {len(sockets)}")

    return Case(f"{kind} kept-alive busy {shape}", run)


def keptAliveIdle(targets: Targets, kind: str, moves: bool) -> Case:
    """
    A kept-alive connection that stays idle is closed by the server (an
    orderly close, not a reset) once the idle grace has passed; or, when it
    C{moves}, the new process answers it once the old one is gone.
    """

    def run(case: Case) -> None:
        with targets.socket(kind) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            first = readResponse(s)
            case.check(first.startswith(b"HTTP/1.1 200"), "first response")
            case.prepared.set()
            case.drain.wait()
            if moves:
                case.check(case.drain.ended.wait(WAIT), "the old process exited")
                s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                case.check(readResponse(s).startswith(b"HTTP/1.1 200"), "answered by the new process")
                return
            try:
                rest = s.recv(65536)
            except ConnectionResetError:
                case.failed("the idle connection was reset")
                return
            case.check(rest == b"", f"orderly close, got {rest[:40]!r}")

    return Case(f"{kind} kept-alive idle", run)


def pipelined(targets: Targets, kind: str, moves: bool) -> Case:
    """
    Three requests pipelined in one write after the drain began: all three
    are answered, the last with C{Connection: close}, then the server closes;
    or, when the connection C{moves}, batches go on being answered on it
    after the old process is gone, none with C{Connection: close}.
    """

    batch = (
        b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc"
        b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
    )

    def run(case: Case) -> None:
        with targets.socket(kind) as s:
            # Busy: a batch every 0.3 s until one is answered with
            # Connection: close, the first sent after the drain began (or,
            # moving, until three were answered after the old process is
            # gone).
            after = 0
            for sent in range(int(2 * WAIT / 0.3)):
                s.sendall(batch)
                if sent == 0:
                    case.prepared.set()
                data = b"".join(readResponse(s) for _ in range(3))
                if data.count(b"HTTP/1.1 200 OK") != 3 or b"got 3 bytes" not in data:
                    case.failed(f"batch {sent + 1}: {data[:80]!r}")
                    return
                if b"Connection: close" in data:
                    break
                after += case.drain.ended.is_set()
                if moves and after == 3:
                    case.ok("answered on the same connection after the old process was gone")
                    return
                time.sleep(0.3)
            case.check(not moves, "Connection: close on a connection that moves")
            case.check(case.drain.signalled > 0, "Connection: close only once the drain began")
            last = data.split(b"HTTP/1.1 ")[1:]
            case.check(
                [b"Connection: close" in r for r in last] == [False, False, True],
                "only the last response of the batch says Connection: close",
            )
            case.check(readAll(s) == b"", "then the server closes")

    return Case(f"{kind} pipelined", run)


def uploadInProgress(targets: Targets, kind: str, moves: bool) -> Case:
    """
    A PUT whose body is still arriving when the drain begins is read to its
    end and answered (with C{Connection: close}, unless the connection
    C{moves} once answered).
    """

    def run(case: Case) -> None:
        def body() -> Any:
            yield BODY[:30000]
            case.prepared.set()
            case.drain.wait()
            time.sleep(0.3)
            yield BODY[30000:]

        with targets.client(kind) as client:
            response = client.put(targets.url(kind, "/"), content=body())
            case.check(response.status_code == 200, f"status {response.status_code}")
            case.check(response.content == b"got 65536 bytes", f"body {response.content[:40]!r}")
            closed = response.headers.get("connection") == "close"
            case.check(closed != moves, f"Connection: close is {closed}")

    return Case(f"{kind} upload in progress", run)


def inFlight(targets: Targets, kind: str) -> Case:
    """
    A slow request in flight when the drain begins completes.
    """

    def run(case: Case) -> None:
        with targets.client(kind) as client:
            threading.Timer(0.3, case.prepared.set).start()
            response = client.get(targets.url(kind, "/slow?seconds=1"))
            case.check(response.status_code == 200, f"status {response.status_code}")
            case.check(response.content.startswith(b"slow response"), "whole body")

    return Case(f"{kind} in flight", run)


def newPerRequest(targets: Targets, kind: str, restarting: bool) -> Case:
    """
    A new connection per request, from before the signal until the old
    process has exited: every request is answered; in a stop, once the
    listener is closed, connections are refused (never reset).
    """

    def run(case: Case) -> None:
        answered = refused = 0
        deadline = time.time() + WAIT
        while time.time() < deadline and not (case.drain.ended.is_set() and answered > 3):
            if answered == 3:
                case.prepared.set()
            try:
                with targets.client(kind) as client:
                    response = client.get(targets.url(kind, "/"), headers={"Connection": "close"})
            except httpx.ConnectError:
                refused += 1
                if restarting:
                    case.failed("refused during a restart")
                    return
                if case.drain.began.is_set():
                    break
                continue
            if response.status_code != 200:
                case.failed(f"status {response.status_code}")
                return
            answered += 1
            if refused and not restarting:
                case.failed("answered after a refusal")
        case.ok(f"{answered} answered, {refused} refused")

    return Case(f"{kind} new connection per request", run)


def http2(targets: Targets) -> Case:
    """
    HTTP/2 by ALPN (httpx with h2, asynchronous so that its streams really
    run side by side): a slow stream in flight when the drain begins
    completes, and a stream opened while it runs is answered at once, on the
    same connection.

    (httpx, through httpcore, fails a stream it opened just as a GOAWAY
    arrived, even one the server accepts; the drain sends no GOAWAY while a
    stream is open, so this case does not race.)
    """

    def run(case: Case) -> None:
        asyncio.run(exchange(case))

    async def exchange(case: Case) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(http2=True, verify=False, limits=limits, timeout=WAIT) as client:
            first = await client.get(targets.url("ssl", "/"))
            case.check(first.http_version == "HTTP/2", f"negotiated {first.http_version}")
            slow = asyncio.ensure_future(client.get(targets.url("ssl", "/slow?seconds=5")))
            await asyncio.sleep(0.3)
            case.prepared.set()
            await asyncio.to_thread(case.drain.wait)
            await asyncio.sleep(0.1)
            try:
                second = await client.get(targets.url("ssl", "/"))
                case.check(second.status_code == 200, f"second stream: status {second.status_code}")
                case.check(not slow.done(), "the second stream was answered while the slow one ran")
            except Exception as e:
                case.failed(f"second stream: {e!r} at {time.time() - case.drain.signalled:.3f} s")
            try:
                response = await slow
                case.check(
                    response.status_code == 200 and response.content.startswith(b"slow"),
                    f"the slow stream: {response.status_code} {response.content[:20]!r}",
                )
            except Exception as e:
                case.failed(f"the slow stream: {e!r} at {time.time() - case.drain.signalled:.3f} s")

    return Case("ssl HTTP/2", run)


def serverSentEvents(targets: Targets, kind: str) -> Case:
    """
    An event stream gets the drain event, and ends cleanly.
    """

    def run(case: Case) -> None:
        with targets.client(kind) as client:
            with client.stream("GET", targets.url(kind, "/events")) as response:
                seen = b""
                for chunk in response.iter_bytes():
                    seen += chunk
                    if b"data: tick" in seen:
                        case.prepared.set()
                case.check(b"event: drain" in seen, "the drain event")

    return Case(f"{kind} server-sent events", run)


def webSocketOpen(targets: Targets, kind: str, restarting: bool) -> Case:
    """
    An open WebSocket is closed by the server with 1001 (stop) or 1012
    (restart), a clean close.
    """
    from websockets.exceptions import ConnectionClosed

    def run(case: Case) -> None:
        context = insecure() if kind == "ssl" else None
        with websockets.connect(targets.url(kind, "/ws", "ws"), ssl=context, open_timeout=WAIT) as ws:
            case.check(ws.recv(timeout=WAIT) == "hello", "hello")
            case.prepared.set()
            try:
                while True:
                    ws.recv(timeout=WAIT)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                case.check(code == (1012 if restarting else 1001), f"close code {code}")

    return Case(f"{kind} WebSocket open", run)


def webSocketClosingByClient(targets: Targets, kind: str) -> Case:
    """
    A client that closes its WebSocket just as the drain begins gets a
    clean close.
    """

    def run(case: Case) -> None:
        context = insecure() if kind == "ssl" else None
        with websockets.connect(targets.url(kind, "/ws", "ws"), ssl=context, open_timeout=WAIT) as ws:
            case.check(ws.recv(timeout=WAIT) == "hello", "hello")
            case.prepared.set()
            case.drain.wait()
            ws.close()
            case.check(ws.close_code in (1000, 1001, 1012), f"close code {ws.close_code}")

    return Case(f"{kind} WebSocket closed by the client", run)


def webSocketClosedSocketOpen(targets: Targets, kind: str) -> Case:
    """
    A WebSocket whose close handshake is done before the drain, but whose
    socket the client keeps open (it never answers the server's TLS close):
    it does not stop the drain of anything else; the server ends it.
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request

    def run(case: Case) -> None:
        with targets.socket(kind) as s:
            ws = WSConnection(ConnectionType.CLIENT)
            s.sendall(ws.send(Request(host="localhost", target="/ws")))
            events: list[Any] = []
            while not any(isinstance(e, AcceptConnection) for e in events):
                ws.receive_data(s.recv(65536))
                events += list(ws.events())
            s.sendall(ws.send(CloseConnection(code=1000)))
            while not any(isinstance(e, CloseConnection) for e in events):
                data = s.recv(65536)
                if not data:
                    break
                ws.receive_data(data)
                events += list(ws.events())
            case.check(any(isinstance(e, CloseConnection) for e in events), "close handshake done")
            case.prepared.set()
            case.drain.wait()
            # Keep the socket open, answer nothing, until the server ends it.
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, ssl.SSLError, OSError):
                pass
            case.ok("the server ended the connection")

    return Case(f"{kind} WebSocket closed, socket open", run)


_unread: dict[int, bytes] = {}


def readResponse(s: socket.socket) -> bytes:
    """
    Read one response with a Content-Length body, keeping what follows it
    for the next call; C{b""} if the connection closed first.
    """
    data = _unread.pop(id(s), b"")
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            return b""
        body += chunk
    _unread[id(s)] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


def readAll(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def cases(targets: Targets, restarting: bool) -> list[Case]:
    found: list[Case] = []
    for kind in targets.kinds():
        # A restart moves kept-alive connections of plain sockets to the
        # new process; TLS ones drain.
        moves = restarting and kind != "ssl"
        for shape in shapes():
            found.append(keptAliveBusy(targets, kind, shape, moves))
        found += [
            keptAliveIdle(targets, kind, moves),
            uploadInProgress(targets, kind, moves),
            inFlight(targets, kind),
            newPerRequest(targets, kind, restarting),
        ]
        if kind != "unix":
            found.append(pipelined(targets, kind, moves))
    found.append(http2(targets))
    for kind in ("tcp", "ssl"):
        found += [
            serverSentEvents(targets, kind),
            webSocketOpen(targets, kind, restarting),
            webSocketClosingByClient(targets, kind),
            webSocketClosedSocketOpen(targets, kind),
        ]
    return found


@pytest.fixture
def servers() -> Any:
    from ._procs import killAll

    started: list[ServerProcess] = []
    yield started
    for server in started:
        killAll(event["pid"] for event in server.events if event.get("phase") == "ready")


@pytest.mark.parametrize("how", ["stop", "restart"])
@pytest_twisted.ensureDeferred
async def test_trafficMatrix(servers: list[ServerProcess], tmp_path: Path, how: str) -> None:
    restarting = how == "restart"
    key, cert, _ = selfSignedCertificate(tmp_path)
    sock = tmp_path / "matrix.sock"
    ports = [
        f"tcp:{freePort()}:interface=127.0.0.1",
        f"unix:{sock}",
        f"ssl:{freePort()}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    ]
    if hasIPv6():
        ports.insert(1, r"tcp6:0:interface=\:\:1")
    args = [a for port in ports for a in ("--port", port)]
    server = startServer(
        tmp_path, *args, "--app", "tests.integration.app.streaming",
        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT), "--idle-grace", str(IDLE_GRACE),
    )
    servers.append(server)
    ready = await server.waitForPhase("ready")
    targets = Targets(ready, sock)
    drain = Drain()
    matrix = cases(targets, restarting)
    threads = []
    for case in matrix:
        case.drain = drain
        thread = threading.Thread(target=case.run, name=case.name, daemon=True)
        thread.start()
        threads.append(thread)

    def prepared() -> list[str]:
        late = [case.name for case in matrix if not case.prepared.wait(WAIT)]
        return late

    late = await deferToThread(prepared)
    assert late == [], f"cases not ready before the signal: {late}"
    oldPid = ready["pid"]
    started = drain.signalled = time.time()
    server.signal(signal.SIGUSR2 if restarting else signal.SIGTERM)
    await server.waitFor("the drain", lambda e: e.get("phase") == "drain-started" and e.get("pid") == oldPid)
    drain.began.set()
    await waitUntilGone(oldPid, timeout=WAIT)
    drain.ended.set()
    await withDeadline(
        deferToThread(lambda: [t.join(WAIT) for t in threads]), WAIT + 5, "the clients did not finish"
    )
    report = {case.name: case.outcomes for case in matrix}
    failures = {name: o for name, o in report.items() if any(x.startswith("FAILED") for x in o) or not o}
    assert failures == {}, json.dumps(failures, indent=1)

    finished = [e for e in server.events if e.get("phase") == "drain-finished" and e.get("pid") == oldPid]
    assert len(finished) == len(ports), finished
    assert [e["abortedRequests"] for e in finished] == [0] * len(ports), finished
    aborted = {e["endpoint"]: e["abortedConnections"] for e in finished}
    assert sum(aborted.values()) == 0, aborted
    moved = {e["endpoint"]: e["moved"] for e in finished}
    if restarting:
        # Each plain endpoint moved its kept-alive cases (at least six
        # busy, one idle, one upload); TLS moves nothing.
        assert all((n >= 8) == (not endpoint.startswith("ssl:")) for endpoint, n in moved.items()), moved
    else:
        assert sum(moved.values()) == 0, moved
    lastActivity = max(case.lastActivity for case in matrix if "per request" not in case.name)
    drainEnd = max(e["log_time"] for e in finished)
    assert drainEnd - lastActivity <= IDLE_GRACE + 0.2, (drainEnd - lastActivity, started)
    assert drainEnd - started < SHUTDOWN_TIMEOUT / 2
