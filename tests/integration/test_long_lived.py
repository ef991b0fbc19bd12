"""
Long-lived connections, TLS, UNIX sockets and IPv6 through drains and
restarts, with real clients.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from zope.interface import implementer
from twisted.web.iweb import IAgentEndpointFactory

from ._client import connectRaw, insecure, portOf
from ._load import LoadLoop
from ._procs import killAll, waitUntilGone
from ._server import Event, ServerProcess, startServer, stopServer, withDeadline

STREAMING = ("--app", "tests.integration.app.streaming")
RESTARTS = 5


async def restartUnderLoad(server: ServerProcess, ready: Event, loops: list[LoadLoop]) -> int:
    """
    Restart C{RESTARTS} times while C{loops} run; return the last pid.
    """
    for loop in loops:
        loop.start()
    current = ready["pid"]
    try:
        for generation in range(2, RESTARTS + 2):
            os.kill(current, signal.SIGUSR2)
            successor = await server.waitForPhase("ready", generation=generation)
            await waitUntilGone(current)
            current = successor["pid"]
    finally:
        for loop in loops:
            await loop.stop(servedBy=current)
    for loop in loops:
        assert loop.failures == [], loop.failures[:3]
        assert len(loop.responses) > 20
        assert loop.pids()[-1] == current
    return int(current)


@pytest.fixture
def servers() -> Any:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        stopServer(server)
        killAll(event["pid"] for event in server.events if event.get("phase") == "ready")


@pytest_twisted.ensureDeferred
async def test_serverSentEventsGetDrainNotice(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    An SSE stream hears the drain begin (through whenDraining) and ends
    cleanly, nothing cut.
    """
    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", *STREAMING)
    servers.append(server)
    ready = await server.waitForPhase("ready")
    client = await connectRaw(portOf(ready))
    client.get("/events")
    await client.waitForData(b"data: tick")
    server.signal(signal.SIGTERM)
    await client.waitForData(b"event: drain")
    await client.waitForData(b"0\r\n\r\n")
    await client.waitForClose()
    finished = await server.waitForPhase("drain-finished")
    assert (finished["completed"], finished["abortedRequests"]) == (1, 0)


class WebSocketClient(Protocol):
    """
    A WebSocket client (wsproto over a TCP connection) that records the
    close code it receives.
    """

    def __init__(self) -> None:
        from wsproto import ConnectionType, WSConnection

        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[str] = []
        self.closeCode: Any = None
        self.greeted: Any = None
        self.closed: Any = None

    def connectionMade(self) -> None:
        from twisted.internet.defer import Deferred
        from wsproto.events import Request

        self.greeted, self.closed = Deferred(), Deferred()
        self.transport.write(self.ws.send(Request(host="127.0.0.1", target="/ws")))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        from wsproto.events import CloseConnection, TextMessage

        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.messages.append(event.data)
                if not self.greeted.called:
                    self.greeted.callback(None)
            elif isinstance(event, CloseConnection):
                self.closeCode = event.code
                self.transport.write(self.ws.send(event.response()))  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if self.closed is not None and not self.closed.called:
            self.closed.callback(self.closeCode)


async def webSocket(port: int) -> WebSocketClient:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), WebSocketClient())
    await withDeadline(client.greeted, 10, "the WebSocket did not open")
    return client


@pytest.mark.parametrize("how, code", [("stop", 1001), ("restart", 1012)])
@pytest_twisted.ensureDeferred
async def test_webSocketClosedWithCode(servers: list[ServerProcess], tmp_path: Path, how: str, code: int) -> None:
    """
    An open WebSocket gets a clean close with 1001 on stop and 1012 on
    restart, at the start of the drain, not at its deadline.
    """
    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", *STREAMING, "--shutdown-timeout", "30")
    servers.append(server)
    ready = await server.waitForPhase("ready")
    client = await webSocket(portOf(ready))
    assert client.messages == ["hello"]
    server.signal(signal.SIGTERM if how == "stop" else signal.SIGUSR2)
    received = await withDeadline(client.closed, 10, "the WebSocket was not closed")
    assert received == code
    finished = await server.waitFor(
        "the drain", lambda e: e.get("phase") == "drain-finished" and e["pid"] == ready["pid"]
    )
    assert finished["abortedConnections"] == 0


def selfSignedCertificate(directory: Path) -> tuple[Path, Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    certPath.write_bytes(pem)
    return keyPath, certPath, pem


@pytest_twisted.ensureDeferred
async def test_tlsAcrossRestarts(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A TLS client keeps getting answers across five restarts, with no
    failure, on kept-alive and new connections.
    """
    from twisted.internet.ssl import Certificate

    key, cert, pem = selfSignedCertificate(tmp_path)
    server = startServer(
        tmp_path, "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--app", "tests.integration.app.root",
    )
    servers.append(server)
    ready = await server.waitForPhase("ready")
    policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(pem))
    url = f"https://localhost:{portOf(ready)}/"
    loops = [
        LoadLoop(url, keepAlive=keepAlive, agentFactory=lambda pool: Agent(reactor, contextFactory=policy, pool=pool))
        for keepAlive in (True, False)
    ]
    await restartUnderLoad(server, ready, loops)


def tlsSocket(port: int) -> ssl.SSLSocket:
    """
    A TLS connection to C{port} on 127.0.0.1 that does not check the
    certificate, with a deadline on every read.
    """
    return insecure().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15))


def readUntilEOF(connection: ssl.SSLSocket) -> bytes:
    """
    Read until the server's TLS close (or its FIN), and keep the socket
    open: the TLS close is never answered.
    """
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


@pytest_twisted.ensureDeferred
async def test_unansweredTLSCloseDoesNotHoldTheDrain(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    TLS clients that never answer the server's TLS close (they keep the
    socket until they next use it, as connection pools do) do not hold the
    drain until its deadline: an idle kept-alive connection, and one whose
    request is answered during the drain with C{Connection: close}, are
    closed an idle grace after their close began, each with its whole
    response read, and no connection is counted as aborted.
    """
    key, cert, _ = selfSignedCertificate(tmp_path)
    server = startServer(
        tmp_path, "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--app", "tests.integration.app.root", "--idle-grace", "0.5", "--shutdown-timeout", "20",
    )
    servers.append(server)
    ready = await server.waitForPhase("ready")
    port = portOf(ready)
    idle, busy = tlsSocket(port), tlsSocket(port)
    try:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = idle.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(str(ready["pid"]).encode()), answer
        busy.sendall(b"GET /slow?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        reads = [threads.deferToThread(readUntilEOF, c) for c in (idle, busy)]
        server.signal(signal.SIGTERM)
        finished = await server.waitForPhase("drain-finished")
        idleRest, busyAnswer = [await d for d in reads]
    finally:
        idle.close()
        busy.close()
    assert idleRest == b""
    assert busyAnswer.startswith(b"HTTP/1.1 200") and b"Connection: close" in busyAnswer, busyAnswer
    assert b"slow response" in busyAnswer and busyAnswer.endswith(b"\r\n0\r\n\r\n"), busyAnswer  # The last chunk.
    assert (finished["abortedConnections"], finished["tlsCloseUnanswered"]) == (0, 2), finished
    assert finished["elapsed"] < 10, finished


@implementer(IAgentEndpointFactory)
class FixedEndpoint:
    """
    Every request goes to one endpoint, whatever its URL says (Twisted's
    Agent cannot take an IPv6 literal URL).
    """

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:
        return self.endpoint


@pytest_twisted.ensureDeferred
async def test_unixSocketAcrossRestarts(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A UNIX socket serves across five restarts with no failure; its file is
    never removed while a successor serves on it, and is removed on the final
    stop.
    """
    path = tmp_path / "app.sock"
    server = startServer(tmp_path, "--port", f"unix:{path}", "--app", "tests.integration.app.root")
    servers.append(server)
    ready = await server.waitForPhase("ready")
    loops = [
        LoadLoop("http://localhost/", keepAlive=keepAlive,
                 agentFactory=lambda pool: Agent.usingEndpointFactory(
                     reactor, FixedEndpoint(UNIXClientEndpoint(reactor, str(path))), pool=pool))
        for keepAlive in (True, False)
    ]
    last = await restartUnderLoad(server, ready, loops)
    assert path.exists()
    os.kill(last, signal.SIGTERM)
    await waitUntilGone(last)
    assert not path.exists()


def hasIPv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not hasIPv6(), reason="this machine has no IPv6 loopback (::1)")
@pytest_twisted.ensureDeferred
async def test_ipv6AcrossRestarts(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = startServer(tmp_path, "--port", r"tcp6:0:interface=\:\:1", "--app", "tests.integration.app.root")
    servers.append(server)
    ready = await server.waitForPhase("ready")
    from twisted.internet.endpoints import TCP6ClientEndpoint

    endpoint = TCP6ClientEndpoint(reactor, "::1", portOf(ready))
    loops = [
        LoadLoop("http://localhost/", keepAlive=keepAlive,
                 agentFactory=lambda pool: Agent.usingEndpointFactory(reactor, FixedEndpoint(endpoint), pool=pool))
        for keepAlive in (True, False)
    ]
    await restartUnderLoad(server, ready, loops)


def h2Exchange(port: int, opened: Any) -> dict[str, Any]:
    """
    An HTTP/2 client written with frames, not h2's state machine (which
    refuses the data of an open stream once GOAWAY arrived): open a slow
    stream, answer PINGs, and record the GOAWAYs and the stream's response.
    """
    from hpack import Decoder, Encoder
    from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

    context = insecure()
    context.set_alpn_protocols(["h2"])
    result: dict[str, Any] = {"goaway": [], "status": None, "body": b"", "ended": False, "closed": False}
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            result["alpn"] = tls.selected_alpn_protocol()
            headers = Encoder().encode([(":method", "GET"), (":path", "/slow?seconds=1"),
                                        (":scheme", "https"), (":authority", "localhost")])
            request = HeadersFrame(1, headers, flags=["END_HEADERS", "END_STREAM"])
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize() + request.serialize())
            decoder, buffer = Decoder(), b""
            while True:
                try:
                    data = tls.recv(65536)
                except TimeoutError:
                    result["timedOut"] = True
                    break
                if not data:
                    result["closed"] = True
                    break
                buffer += data
                while len(buffer) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                    if len(buffer) < 9 + length:
                        break
                    frame.parse_body(memoryview(buffer[9:9 + length]))
                    result.setdefault("frames", []).append(type(frame).__name__)
                    buffer = buffer[9 + length:]
                    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                        tls.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
                        opened.set()
                    elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                        tls.sendall(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
                    elif isinstance(frame, GoAwayFrame):
                        result["goaway"].append((frame.last_stream_id, frame.error_code))
                    elif isinstance(frame, HeadersFrame) and frame.stream_id == 1:
                        result["status"] = dict(decoder.decode(frame.data)).get(":status")
                    elif isinstance(frame, DataFrame) and frame.stream_id == 1:
                        result["body"] += frame.data
                        if "END_STREAM" in frame.flags:
                            result["ended"] = True
    return result


@pytest.mark.skipif(not __import__("twisted.web.http", fromlist=["H2_ENABLED"]).H2_ENABLED,
                    reason="HTTP/2 needs twisted[http2]")
@pytest_twisted.ensureDeferred
async def test_http2GoAwayThenStreamCompletes(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    At the drain, an HTTP/2 connection gets the two GOAWAYs (2^31-1, then
    its last stream), the stream already open completes, and the connection
    closes.
    """
    import threading

    from twisted.internet.threads import deferToThread

    key, cert, _ = selfSignedCertificate(tmp_path)
    server = startServer(
        tmp_path, "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--app", "tests.integration.app.root",
    )
    servers.append(server)
    ready = await server.waitForPhase("ready")
    opened = threading.Event()
    exchange = deferToThread(h2Exchange, portOf(ready), opened)
    await server.waitFor("the HTTP/2 stream", lambda e: e.get("testEvent") == "slow-received")
    server.signal(signal.SIGTERM)
    result = await withDeadline(exchange, 20, "the HTTP/2 exchange did not end")
    assert result["alpn"] == "h2", result
    assert "timedOut" not in result, result
    assert result["goaway"] == [(2**31 - 1, 0), (1, 0)], "GOAWAY(2^31-1), then GOAWAY(last stream 1)"
    assert (result["status"], result["ended"], result["closed"]) == ("200", True, True)
    assert result["body"].startswith(b"slow response from pid")
    finished = await server.waitForPhase("drain-finished")
    assert (finished["completed"], finished["abortedRequests"]) == (1, 0)
