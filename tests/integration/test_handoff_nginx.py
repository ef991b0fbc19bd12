"""
Behind nginx with an upstream keep-alive pool: POSTs through restarts all
succeed, and nginx keeps using the upstream connections it had.  Skipped
where nginx is not installed (CI installs it).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import pytest_twisted

from ._procs import freePort, killAll
from ._server import startServer, stopServer
from .test_handoff import CountingConnection, Fleet, KeepAliveClient, restart, waitUntil

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

CLIENTS = 20
RESTARTS = 3

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class PeerCountingClient(KeepAliveClient):
    """
    A L{KeepAliveClient} through nginx that notes the upstream connection
    (the port the server saw) of each answer.
    """

    def __init__(self, port: int, seed: int, stop: threading.Event) -> None:
        super().__init__(port, seed, stop)
        self.connection = PeerConnection("127.0.0.1", port, timeout=10)


class PeerConnection(CountingConnection):
    peers: set[str]

    def getresponse(self):  # type: ignore[no-untyped-def]
        response = super().getresponse()
        self.__dict__.setdefault("peers", set()).add(response.getheader("X-Peer-Port"))
        return response


@pytest_twisted.ensureDeferred
async def test_behindNginx(tmp_path: Path) -> None:
    """
    20 unchecking clients through nginx's upstream keep-alive pool, 3
    restarts: no POST fails (nginx does not retry a POST on a broken
    upstream connection: it answers 502), and the upstream connections
    after the restarts are those nginx had before them.
    """
    upstream, port = freePort(), freePort()
    (tmp_path / "nginx.conf").write_text(CONFIG.format(tmp=tmp_path, upstream=upstream, port=port))
    assert NGINX is not None
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "nginx-error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    server = startServer(tmp_path, "--port", f"tcp:{upstream}:interface=127.0.0.1", "--app", "tests.integration.app.root")
    pids: list[int] = []
    fleet = Fleet(port, CLIENTS, PeerCountingClient)
    clients = fleet.clients
    try:
        ready = await server.waitForPhase("ready", generation=1)
        pids.append(ready["pid"])
        await fleet.start("every client to be answered through nginx")
        await waitUntil("a few answers each", lambda: all(c.answered >= 3 for c in clients), 20)
        before = set().union(*(c.connection.__dict__.get("peers", set()) for c in clients))
        for client in clients:
            client.connection.peers = set()
        for generation in range(2, 2 + RESTARTS):
            ready = await restart(server, pids[-1], generation)
            pids.append(ready["pid"])
        await fleet.answerAgain("answers after the restarts")
    finally:
        try:
            await fleet.stop()
        finally:
            killAll(pids[1:])
            stopServer(server)
            nginx.send_signal(signal.SIGTERM)
            nginx.wait(10)
    assert fleet.failures() == [], (fleet.failures()[:5], (tmp_path / "nginx-error.log").read_text()[-2000:])
    after = set().union(*(c.connection.__dict__.get("peers", set()) for c in clients))
    assert after <= before, (sorted(after - before), len(before))
    moved = [e["moved"] for e in server.events if e.get("phase") == "handoff-sent"]
    assert len(moved) == RESTARTS and all(moved), moved
