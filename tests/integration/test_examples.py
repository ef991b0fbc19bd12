"""
The examples under examples/ run as documented, and WSGI requests drain.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest_twisted
import treq

from ._client import freshPool, portOf
from ._server import startServer, stopServer


@pytest_twisted.ensureDeferred
async def test_flaskExample(tmp_path: Path) -> None:
    """
    The Flask example serves through --wsgi.
    """
    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--wsgi", "examples.flask_app.app")
    try:
        ready = await server.waitForPhase("ready")
        response = await treq.get(f"http://127.0.0.1:{portOf(ready)}/", pool=freshPool(), timeout=10)
        assert await response.content() == f"hello from Flask in pid {ready['pid']}\n".encode()
    finally:
        stopServer(server)


@pytest_twisted.ensureDeferred
async def test_wsgiRequestDrains(tmp_path: Path) -> None:
    """
    A WSGI request running on the thread pool at SIGTERM completes.
    """
    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--wsgi", "tests.integration.app.wsgiApp")
    try:
        ready = await server.waitForPhase("ready")
        slow = treq.get(f"http://127.0.0.1:{portOf(ready)}/slow", pool=freshPool(), timeout=10)
        await server.waitFor("the slow WSGI request", lambda e: e.get("testEvent") == "wsgi-slow")
        server.signal(signal.SIGTERM)
        response = await slow
        assert (response.code, await response.content()) == (200, str(ready["pid"]).encode())
        await server.waitForExit()
    finally:
        stopServer(server)
