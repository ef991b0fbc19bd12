"""
The library composes into an existing application from a C{.tac} file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor

from ._client import freshPool
from ._server import ROOT, TWISTD, ServerProcess


@pytest_twisted.ensureDeferred
async def test_tacFile(tmp_path: Path) -> None:
    """
    Two graceful endpoints from a C{.tac} serve, and drain and run the hook
    on SIGTERM.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), EXAMPLE_PORT="tcp:0:interface=127.0.0.1",
               EXAMPLE_ADMIN_PORT="unix:admin.sock")
    server = ServerProcess(tmp_path / "tac.log")
    argv = [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "-y", str(ROOT / "examples" / "graceful.tac")]
    reactor.spawnProcess(server, TWISTD, argv, env=env, path=str(tmp_path))  # type: ignore[attr-defined]
    try:
        ready = await server.waitForPhase("ready")
        addresses = list(ready["endpoints"].values())
        assert len(addresses) == 2
        response = await treq.get(f"http://{addresses[0]}/", pool=freshPool(), timeout=10)
        assert await response.content() == b"hello from a .tac\n"
        server.signal(signal.SIGTERM)
        await server.waitForExit()
        assert [e["testHook"] for e in server.events if "testHook" in e] == ["flush"]
        assert server.phases().count("drain-finished") == 2
    finally:
        if not server.finished:
            server.signal(signal.SIGKILL)
