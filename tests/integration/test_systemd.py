"""
systemd socket activation, with real inherited descriptors, and distrust of
inherited-socket variables not meant for the process.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from ._client import freshPool
from ._procs import freePort, killAll, waitUntilGone
from ._server import ROOT, TWISTD, ServerProcess

LAUNCHER = str(Path(__file__).with_name("systemd_launcher.py"))



def launch(tmp_path: Path, port: int, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(env or {}))
    server = ServerProcess(tmp_path / "twistd.log")
    argv = [sys.executable, LAUNCHER, "web", "127.0.0.1", str(port),
            TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful", "--probation", "0.2",
            "--app", "tests.integration.app.root", *args]
    reactor.spawnProcess(server, sys.executable, argv, env=environ, path=str(tmp_path))  # type: ignore[attr-defined]
    return server


@pytest.mark.parametrize("how", ["by-name", "by-address"])
@pytest_twisted.ensureDeferred
async def test_socketActivationAndRestart(tmp_path: Path, how: str) -> None:
    """
    The socket systemd passed is served (named with C{systemd:...name=web},
    or matched by its address), and survives restarts.
    """
    port = freePort()
    spec = "systemd:domain=INET:name=web" if how == "by-name" else f"tcp:{port}:interface=127.0.0.1"
    server = launch(tmp_path, port, "--port", spec)
    pids: list[int] = []
    try:
        ready = await server.waitForPhase("ready", generation=1)
        pids.append(ready["pid"])
        listening = [e for e in server.events if e.get("how") == "inherited"]
        assert len(listening) == 1, "the systemd socket was not adopted"
        response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(ready["pid"])
        for generation in (2, 3):
            os.kill(pids[-1], signal.SIGUSR2)
            successor = await server.waitForPhase("ready", generation=generation)
            pids.append(successor["pid"])
            await waitUntilGone(pids[-2])
            response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
            assert (await response.content()).decode() == str(successor["pid"])
    finally:
        killAll(pids)


@pytest_twisted.ensureDeferred
async def test_garbageInheritanceIgnored(tmp_path: Path) -> None:
    """
    Inherited-socket variables naming another parent, or holding garbage,
    and systemd variables naming another process (LISTEN_PID), are ignored
    with a warning, and the server starts on its own sockets.
    """
    env = {
        "TWISTED_GRACEFUL_SOCKETS": "{not json",
        "TWISTED_GRACEFUL_PARENT_PID": "1",
        "TWISTED_GRACEFUL_READY_FD": "-7",
        "LISTEN_PID": "1",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "web",
    }
    environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **env)
    server = ServerProcess(tmp_path / "twistd.log")
    argv = [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful", "--probation", "0.2",
            "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root"]
    reactor.spawnProcess(server, TWISTD, argv, env=environ, path=str(tmp_path))  # type: ignore[attr-defined]
    try:
        ready = await server.waitForPhase("ready")
        assert any(e.get("phase") == "inherit-ignored" for e in server.events)
        address = next(iter(ready["endpoints"].values()))
        response = await treq.get(f"http://{address}/", pool=freshPool(), timeout=10)
        assert response.code == 200
    finally:
        server.signal(signal.SIGKILL)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is not installed (Debian package systemd)",
)
@pytest_twisted.ensureDeferred
async def test_systemdSocketActivate(tmp_path: Path) -> None:
    """
    The recipe of docs/operations.md, with systemd's own
    C{systemd-socket-activate}: the server starts on the first connection,
    serves it on the passed socket, restarts on it, and stops.
    """
    port = freePort()
    environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    server = ServerProcess(tmp_path / "twistd.log")
    argv = [
        "systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web",
        "-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED",
        TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful", "--probation", "0.2",
        "--port", "systemd:domain=INET:name=web", "--app", "tests.integration.app.root",
    ]
    activate = shutil.which("systemd-socket-activate")
    assert activate is not None
    reactor.spawnProcess(server, activate, argv, env=environ, path=str(tmp_path))  # type: ignore[attr-defined]
    pids: list[int] = []
    try:
        # The first connection starts the server (systemd-socket-activate
        # waits for one), and is served once it is ready.  Until
        # systemd-socket-activate listens, connections are refused.
        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.task import deferLater

        deadline = reactor.seconds() + 10  # type: ignore[attr-defined]
        while True:
            try:
                first = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=30)
                break
            except ConnectionRefusedError:
                assert reactor.seconds() < deadline, "systemd-socket-activate did not listen within 10 s"  # type: ignore[attr-defined]
                await deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        ready = await server.waitForPhase("ready")
        pids.append(ready["pid"])
        assert (await first.content()).decode() == str(ready["pid"])
        os.kill(ready["pid"], signal.SIGUSR2)
        successor = await server.waitForPhase("ready", generation=2)
        pids.append(successor["pid"])
        await waitUntilGone(ready["pid"])
        response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(successor["pid"])
        os.kill(successor["pid"], signal.SIGTERM)
        await waitUntilGone(successor["pid"])
    finally:
        killAll(pids)
