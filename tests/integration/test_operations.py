"""
Operating a real server: the control command, systemd's notify protocol, and
the readiness endpoint with a drain delay.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue

from ._client import connectRaw, freshPool, portOf
from ._procs import alive, waitUntilGone
from ._server import ROOT, startServer, stopServer, withDeadline
from .test_restart_process import Cluster

CONTROL_DEADLINE = 60


async def control(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """
    Run C{python -m twisted_graceful ARGS}; return its status and output.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    d = getProcessOutputAndValue(sys.executable, ["-m", "twisted_graceful", *args], env=env, path=str(tmp_path))
    out, err, code = await withDeadline(d, CONTROL_DEADLINE, f"twisted-graceful {args} did not finish")
    return code, out.decode(), err.decode()




@pytest_twisted.ensureDeferred
async def test_reloadSucceeds(cluster: Cluster, tmp_path: Path) -> None:
    """
    C{reload} exits 0 and prints the new pid once the successor serves and
    the old process has exited; the pid file names the new pid.
    """
    cluster.start()
    ready = await cluster.ready(1)
    code, out, err = await control(tmp_path, "reload", "--pidfile", "app.pid", "--timeout", "30")
    assert (code, err) == (0, "")
    newPID = int(out.strip())
    cluster.pids.add(newPID)
    assert newPID != ready["pid"]
    assert not alive(ready["pid"])
    assert cluster.pidFile() == newPID


@pytest_twisted.ensureDeferred
async def test_reloadFails(cluster: Cluster, tmp_path: Path) -> None:
    """
    A reload to a broken release exits non-zero with the reason, and the
    old pid still serves.
    """
    cluster.start()
    ready = await cluster.ready(1)
    cluster.setMode("start-error")
    code, out, err = await control(tmp_path, "reload", "--pidfile", "app.pid", "--timeout", "30")
    assert code == 1
    assert "Reload failed: The successor" in out and "exit status 1" in out
    assert f"pid {ready['pid']} is still serving" in out
    response = await treq.get(f"http://127.0.0.1:{portOf(ready)}/", pool=freshPool(), timeout=10)
    assert (await response.content()).decode() == str(ready["pid"])


@pytest_twisted.ensureDeferred
async def test_statusDuringUpgrade(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start(SLOW_START="3")
    ready = await cluster.ready(1)
    code, out, _ = await control(tmp_path, "status", "--pidfile", "app.pid")
    assert code == 0
    assert f"pid: {ready['pid']}" in out and "state: serving" in out and "generation: 1" in out
    cluster.setMode("slow-start")
    os.kill(ready["pid"], signal.SIGUSR2)
    assert cluster.server is not None
    starting = await cluster.server.waitFor(
        "the successor to start", lambda e: e.get("testEvent") == "fault-start" and e["pid"] != ready["pid"]
    )
    cluster.pids.add(starting["pid"])
    code, out, _ = await control(tmp_path, "status", "--pidfile", "app.pid")
    assert code == 0
    assert "state: upgrading (an upgrade is in progress)" in out
    assert f"endpoint: tcp:0:interface=127.0.0.1 at 127.0.0.1:{portOf(ready)}" in out


@pytest.mark.parametrize("outlast", [False, True])
@pytest_twisted.ensureDeferred
async def test_stop(cluster: Cluster, tmp_path: Path, outlast: bool) -> None:
    """
    C{stop} waits for the exit and says whether the drain finished (exit 0)
    or was cut at its deadline (exit 5).
    """
    cluster.start(SHUTDOWN_TIMEOUT="0.5")
    ready = await cluster.ready(1)
    if outlast:
        client = await connectRaw(portOf(ready))
        client.get("/forever")
        await client.waitForData(b"never ends")
    code, out, _ = await control(tmp_path, "stop", "--pidfile", "app.pid", "--timeout", "30")
    if outlast:
        assert code == 5
        assert "the drain was cut at its deadline (1 requests aborted" in out
    else:
        assert code == 0
        assert "the drain finished" in out
    assert not (tmp_path / "app.pid").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No pid file at"),
        ("garbage", "holds 'garbage', not a pid"),
        ("999999999", "which is not running"),
        ("OWN", "is not a twisted-graceful server"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_badPidFile(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "app.pid").write_text(str(os.getpid()) if content == "OWN" else content)
    for command in ("reload", "stop", "status"):
        code, out, err = await control(tmp_path, command, "--pidfile", "app.pid")
        assert code == 3
        assert message in err
        assert len(err.strip().splitlines()) == 1


class NotifyListener(DatagramProtocol):
    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        fields = dict(line.split("=", 1) for line in datagram.decode().splitlines())
        self.messages.append(fields)


@pytest_twisted.ensureDeferred
async def test_notifySequence(cluster: Cluster, tmp_path: Path) -> None:
    """
    Over a full upgrade and a stop, systemd hears READY=1, RELOADING=1,
    MAINPID=successor, READY=1, STOPPING=1, each with a STATUS.
    """
    listener = NotifyListener()
    path = str(tmp_path / "notify.sock")
    port = reactor.listenUNIXDatagram(path, listener)  # type: ignore[attr-defined]
    try:
        server = cluster.start(NOTIFY_SOCKET=path)
        ready = await cluster.ready(1)
        os.kill(ready["pid"], signal.SIGUSR2)
        successor = await cluster.ready(2)
        await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
        os.kill(successor["pid"], signal.SIGTERM)
        await server.waitFor("the stop", lambda e: e.get("phase") == "stopped" and e["pid"] == successor["pid"])
        await waitUntilGone(successor["pid"])
    finally:
        await port.stopListening()
    keys = [[k for k in m if k not in ("STATUS", "MONOTONIC_USEC")] for m in listener.messages]
    assert keys == [["READY"], ["RELOADING"], ["MAINPID"], ["READY"], ["STOPPING"], []], listener.messages
    assert listener.messages[2]["MAINPID"] == str(successor["pid"])
    assert all("STATUS" in m for m in listener.messages)
    assert "generation 2" in listener.messages[3]["STATUS"]
    assert listener.messages[5]["STATUS"].startswith("Stopped: 0 requests completed")


@pytest_twisted.ensureDeferred
async def test_healthDuringDrainDelay(tmp_path: Path) -> None:
    """
    After SIGTERM, during --drain-delay, the health path answers 503 while
    every other request still gets 200 on a new connection; then the
    process drains and exits.
    """
    server = startServer(
        tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--health", "/healthz", "--drain-delay", "2",
    )
    try:
        ready = await server.waitForPhase("ready")
        base = f"http://127.0.0.1:{portOf(ready)}"
        response = await treq.get(f"{base}/healthz", pool=freshPool(), timeout=10)
        assert (response.code, await response.content()) == (200, b"serving\n")
        server.signal(signal.SIGTERM)
        await server.waitForPhase("drain-delay")
        health = await treq.get(f"{base}/healthz", pool=freshPool(), timeout=10)
        assert (health.code, await health.content()) == (503, b"draining\n")
        normal = await treq.get(f"{base}/", pool=freshPool(), timeout=10)
        assert normal.code == 200
        assert not any(e.get("phase") == "drain-started" for e in server.events)
        await server.waitForExit()
        assert server.phases().index("drain-delay") < server.phases().index("drain-started")
    finally:
        stopServer(server)
