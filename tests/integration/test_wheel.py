"""
The wheel installs into fresh virtualenvs, alone and with each extra, brings
the twistd plugin with it without breaking Twisted's own packages, and each
extra's feature works from the installed wheel: an C{ssl:} request (C{tls}),
an HTTP/2 request by ALPN (C{http2}), a WebSocket echo (C{websocket}), a
scrape of C{--metrics} (C{metrics}).
Without an extra, using its feature ends the command with one line naming it.

The wheel is built once; the virtualenvs are made at once, in parallel.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..test_tap import CLI_DOCS, optionDrift
from ._server import ROOT
from .test_long_lived import selfSignedCertificate

DEADLINE = 240
START_DEADLINE = 30

#: The virtualenvs: what is installed in each (C{""}: the wheel alone).
EXTRAS = ["", "tls", "http2", "websocket", "metrics"]

def docsExample(name: str) -> str:
    """
    The Python example that starts with C{# name} in the docs.
    """
    for page in (ROOT / "docs").glob("*.md"):
        found = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", page.read_text(), re.DOTALL)
        if found:
            return found.group(1)
    raise AssertionError(f"no example {name} in docs/")


class Installed:
    """
    The wheel installed in a fresh virtualenv, with the extra C{extra}.
    """

    def __init__(self, directory: Path, extra: str) -> None:
        self.directory = directory
        self.extra = extra
        self.bin = directory / "bin"

    def twistd(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bin / "twistd", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
            env=_environment(cwd),
        )


def _environment(appDirectory: Path) -> dict[str, str]:
    """
    The environment of a server from a virtualenv: only C{appDirectory} on
    the path, so that the installed package is the one imported.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(appDirectory)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=DEADLINE,
    )
    [built] = dist.glob("twisted_graceful-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Installed]:
    """
    One fresh virtualenv per entry of L{EXTRAS}, installed in parallel (by
    this interpreter's pip, into virtualenvs made without pip).
    """
    root = tmp_path_factory.mktemp("venvs")
    envs = {extra: Installed(root / (extra or "plain"), extra) for extra in EXTRAS}
    installs = []
    for extra, env in envs.items():
        venv.create(env.directory, with_pip=False)
        target = f"{wheel}[{extra}]" if extra else str(wheel)
        installs.append((extra, subprocess.Popen(
            [sys.executable, "-m", "pip", "--python", str(env.bin / "python"), "install", "--quiet", target],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )))
    deadline = time.monotonic() + DEADLINE
    for extra, process in installs:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert process.returncode == 0, f"installing the wheel with [{extra}] failed:\n{output}"
    return envs


class Server:
    """
    C{twistd -n graceful} from a virtualenv, logging JSON events to stdout.
    """

    def __init__(self, env: Installed, cwd: Path, *args: str) -> None:
        (cwd / "echo.py").write_text(docsExample("echo.py"))
        self.logPath = cwd / f"twistd-{env.extra or 'plain'}.log"
        self.process = subprocess.Popen(
            [env.bin / "twistd", "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful", *args],
            cwd=cwd, env=_environment(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []

    def waitReady(self) -> dict[str, Any]:
        """
        The C{ready} event, read from standard output within the deadline.
        """
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_DEADLINE
        buffer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stdout], [], [], deadline - time.monotonic())
            if not readable:
                break
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip("\x1e \r")
                self.lines.append(line)
                if line.startswith("{"):
                    event = json.loads(line)
                    if event.get("phase") == "ready":
                        return event  # type: ignore[no-any-return]
        raise AssertionError(f"the server did not report ready within {START_DEADLINE} s:\n" + "\n".join(self.lines))

    def port(self, ready: dict[str, Any]) -> int:
        [address] = ready["endpoints"].values()
        return int(address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout.read().decode(errors="replace").splitlines())
        self.process.stdout.close()
        self.logPath.write_text("\n".join(self.lines))


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _tlsClient(port: int, alpn: list[str]) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    return context.wrap_socket(raw, server_hostname="localhost")


def _http11(sock: socket.socket, path: str) -> tuple[int, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    response = b""
    while chunk := sock.recv(65536):
        response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_wheelInFreshVirtualenv(wheel: Path, installed: dict[str, Installed], tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/twisted_graceful_plugin.py" in names
    assert "twisted_graceful/py.typed" in names
    for forbidden in ["twisted/__init__.py", "twisted/plugins/__init__.py"]:
        assert forbidden not in names
    assert not [n for n in names if n.endswith("dropin.cache") or "__pycache__" in n]

    plain = installed[""]
    version = subprocess.run(
        [plain.bin / "python", "-c", "import twisted_graceful; print(twisted_graceful.__version__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True,
    ).stdout.strip()
    assert wheel.name.startswith(f"twisted_graceful-{version}-")
    result = plain.twistd(tmp_path, "graceful", "--help")
    assert result.returncode == 0, result.stderr
    assert optionDrift(result.stdout, CLI_DOCS.read_text()) == []
    listed = plain.twistd(tmp_path, "--help")
    assert "graceful" in listed.stdout
    # Twisted's own plugins are still found next to ours.
    assert "web" in listed.stdout


def test_withoutExtras(installed: dict[str, Installed], tmp_path: Path) -> None:
    """
    Without its extra, an C{ssl:} port, a WebSocket application and
    C{--metrics} each end the command with one line naming the extra to
    install.
    """
    key, cert, _ = selfSignedCertificate(tmp_path)
    (tmp_path / "echo.py").write_text(docsExample("echo.py"))
    plain = installed[""]
    for args, line in [
        (["--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
         f"twistd graceful: --port: 'ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}' needs TLS "
         "(ssl: ports), which is not installed (no module named 'OpenSSL'): pip install 'twisted-graceful[tls]'"),
        (["--port", "tcp:0:interface=127.0.0.1", "--app", "echo.root"],
         "twistd graceful: --app: 'echo' needs WebSockets (twisted.web.websocket), which is not "
         "installed (no module named 'wsproto'): pip install 'twisted-graceful[websocket]'"),
        (["--port", "tcp:0:interface=127.0.0.1", "--metrics", "/metrics"],
         "twistd graceful: --metrics needs Prometheus metrics (prometheus_client), which is not installed "
         "(no module named 'prometheus_client'): pip install 'twisted-graceful[metrics]'"),
    ]:
        result = plain.twistd(tmp_path, "-n", "--pidfile=", "graceful", *args)
        assert result.returncode == 1, result
        assert (result.stdout + result.stderr).strip().splitlines() == [line]


def test_tls(installed: dict[str, Installed], servers: list[Server], tmp_path: Path) -> None:
    """
    With C{[tls]}, an C{ssl:} port answers a client that offers ALPN (as
    browsers and curl do) with HTTP/1.1, and says what to install for
    HTTP/2.
    """
    key, cert, _ = selfSignedCertificate(tmp_path)
    server = Server(installed["tls"], tmp_path, "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    servers.append(server)
    ready = server.waitReady()
    with _tlsClient(server.port(ready), ["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert _http11(tls, "/pid") == (200, str(ready["pid"]).encode())
    output = "\n".join(server.lines)
    assert "pip install 'twisted-graceful[http2]'" in output
    # Twisted warns at import when service_identity is missing: it is not.
    assert "service_identity" not in output


def test_http2(installed: dict[str, Installed], servers: list[Server], tmp_path: Path) -> None:
    """
    With C{[http2]} alone (which brings TLS), an C{ssl:} port answers an
    HTTP/2 request chosen by ALPN.
    """
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, ResponseReceived, StreamEnded

    key, cert, _ = selfSignedCertificate(tmp_path)
    server = Server(installed["http2"], tmp_path, "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    servers.append(server)
    ready = server.waitReady()
    status, body = None, b""
    with _tlsClient(server.port(ready), ["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        connection = H2Connection(H2Configuration(client_side=True))
        connection.initiate_connection()
        connection.send_headers(
            1, [(":method", "GET"), (":path", "/pid"), (":scheme", "https"), (":authority", "localhost")],
            end_stream=True,
        )
        tls.sendall(connection.data_to_send())
        ended = False
        while not ended:
            data = tls.recv(65536)
            assert data, "the server closed the HTTP/2 connection before the response ended"
            for event in connection.receive_data(data):
                if isinstance(event, ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamEnded):
                    ended = True
            tls.sendall(connection.data_to_send())
    assert (status, body) == (b"200", str(ready["pid"]).encode())
    assert "twisted-graceful[http2]" not in "\n".join(server.lines)


def test_websocket(installed: dict[str, Installed], servers: list[Server], tmp_path: Path) -> None:
    """
    With C{[websocket]}, the WebSocket example of the docs echoes a
    message.
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    server = Server(installed["websocket"], tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "echo.root")
    servers.append(server)
    ready = server.waitReady()
    received: list[str] = []
    with socket.create_connection(("127.0.0.1", server.port(ready)), timeout=15) as sock:
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host="localhost", target="/ws")))
        while not received:
            data = sock.recv(65536)
            assert data, "the server closed the WebSocket before it echoed"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    sock.sendall(ws.send(TextMessage(data="from the wheel")))
                elif isinstance(event, TextMessage):
                    received.append(event.data)
                elif isinstance(event, CloseConnection):
                    raise AssertionError(f"the server closed the WebSocket: {event}")
        sock.sendall(ws.send(CloseConnection(code=1000)))
    assert received == ["from the wheel"]


def test_metrics(installed: dict[str, Installed], servers: list[Server], tmp_path: Path) -> None:
    """
    With C{[metrics]}, C{--metrics /metrics} answers Prometheus text.
    """
    server = Server(installed["metrics"], tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--metrics", "/metrics")
    servers.append(server)
    ready = server.waitReady()
    with socket.create_connection(("127.0.0.1", server.port(ready)), timeout=15) as sock:
        status, body = _http11(sock, "/metrics")
    assert status == 200
    assert b"\ntwisted_graceful_generation 1.0\n" in body
