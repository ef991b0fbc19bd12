"""
The drain of a real C{twistd graceful} process, seen by real HTTP clients.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol

from ._client import connectRaw, freshPool, portOf
from ._server import ServerProcess, startServer, stopServer

APP = ("--app", "tests.integration.app.root")
LOCAL = ("--port", "tcp:0:interface=127.0.0.1")


@pytest.fixture
def servers() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started  # type: ignore[misc]
    for server in started:
        stopServer(server)


async def start(servers: list[ServerProcess], tmp_path: Path, *args: str) -> tuple[ServerProcess, int]:
    server = startServer(tmp_path, *LOCAL, *APP, *args)
    servers.append(server)
    ready = await server.waitForPhase("ready")
    return server, portOf(ready)


@pytest_twisted.ensureDeferred
async def test_slowRequestCompletesAndNewConnectionsRefused(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A slow request in flight at SIGTERM completes with 200, new connections
    are refused meanwhile, and the process exits once it has answered.
    """
    server, port = await start(servers, tmp_path)
    pool = freshPool()
    slow = treq.get(f"http://127.0.0.1:{port}/slow?seconds=1", pool=pool, timeout=10)
    await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
    server.signal(signal.SIGTERM)
    await server.waitForPhase("drain-started")
    with pytest.raises(ConnectionRefusedError):
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
    response = await slow
    assert response.code == 200
    assert b"slow response" in await response.content()
    await server.waitForExit()
    finished = await server.waitForPhase("drain-finished")
    assert (finished["completed"], finished["abortedRequests"]) == (1, 0)
    assert any(e.get("phase") == "stopped" for e in server.events)


@pytest_twisted.ensureDeferred
async def test_idleKeepAliveClosed(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A kept-alive connection that is idle at SIGTERM is closed by the server.
    """
    server, port = await start(servers, tmp_path)
    client = await connectRaw(port)
    client.get("/")
    await client.waitForResponses(1)
    server.signal(signal.SIGTERM)
    await client.waitForClose()
    assert client.received.count(b"HTTP/1.1 200") == 1
    await server.waitForExit()
    assert server.exitSignal == signal.SIGTERM, "twistd re-raises the stop signal on itself at exit"


@pytest_twisted.ensureDeferred
async def test_requestOnKeptAliveConnectionAnswered(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A request that arrives on a kept-alive connection during the drain gets
    a response with C{Connection: close}, not a reset.
    """
    server, port = await start(servers, tmp_path, "--idle-grace", "30")
    client = await connectRaw(port)
    client.get("/")
    await client.waitForResponses(1)
    server.signal(signal.SIGTERM)
    await server.waitForPhase("drain-started")
    client.get("/during-drain")
    data = await client.waitForResponses(2)
    second = data.split(b"HTTP/1.1 ")[2]
    assert second.startswith(b"200")
    assert b"Connection: close" in second
    await client.waitForClose()
    await server.waitForExit()


@pytest_twisted.ensureDeferred
async def test_deadlineAbortsNeverEndingResponse(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    At the deadline a never-ending response is aborted, the cut is logged
    with the endpoint and the count, and the process exits.
    """
    server, port = await start(servers, tmp_path, "--shutdown-timeout", "0.5")
    client = await connectRaw(port)
    client.get("/forever")
    await client.waitForData(b"never ends")
    server.signal(signal.SIGTERM)
    aborted = await server.waitForPhase("drain-aborted")
    assert aborted["requests"] == 1
    assert aborted["endpoint"] == LOCAL[1]
    await client.waitForClose()
    await server.waitForExit()


@pytest_twisted.ensureDeferred
async def test_secondSignalStopsAtOnce(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A second SIGTERM during a long drain stops the process at once.
    """
    server, port = await start(servers, tmp_path)
    slow = treq.get(f"http://127.0.0.1:{port}/slow?seconds=60", pool=freshPool(), timeout=10)
    slow.addErrback(lambda f: None)
    await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
    server.signal(signal.SIGTERM)
    await server.waitForPhase("drain-started")
    server.signal(signal.SIGINT)
    await server.waitForPhase("cut-short", signal="SIGINT", timeout=5)
    await server.waitForExit(timeout=5)
    finished = await server.waitForPhase("drain-finished")
    assert finished["abortedRequests"] == 1


@pytest_twisted.ensureDeferred
async def test_hooksRunInOrderWithTimeouts(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    Shutdown hooks run in the order given, after the drain; a stuck hook is
    cancelled at its timeout and a failing one is logged, and the rest run.
    """
    server, port = await start(
        servers,
        tmp_path,
        "--hook-timeout", "0.5",
        "--shutdown-hook", "tests.integration.app.hookFirst",
        "--shutdown-hook", "tests.integration.app.hookStuck",
        "--shutdown-hook", "tests.integration.app.hookFails",
        "--shutdown-hook", "tests.integration.app.hookLast",
    )
    server.signal(signal.SIGTERM)
    await server.waitForExit()
    ran = [e["testHook"] for e in server.events if "testHook" in e]
    assert ran == ["first", "stuck", "fails", "last"]
    outcomes = [(e["hook"], e["outcome"]) for e in server.events if e.get("phase") == "hook"]
    assert [o for _, o in outcomes] == ["ok", "timeout", "failed", "ok"]
    drained = server.phases().index("drain-finished")
    assert drained < server.phases().index("hook")
