"""
Zero-downtime restarts of real processes under a client loop, and the
failures a broken release can bring.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.error import ProcessDone

from ._client import freshPool, portOf
from ._load import LoadLoop
from ._procs import freePort, killAll, listeningSockets, waitUntilGone, zombieChildren
from ._server import ROOT, TWISTD, Event, ServerProcess

TAC = str(ROOT / "tests" / "integration" / "restartable.tac")


class Cluster:
    """
    A restartable server started from the test's C{.tac}, and every pid it
    has had, so teardown can end them all.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.pids: set[int] = set()
        self.server: ServerProcess | None = None

    def setMode(self, mode: str) -> None:
        (self.tmp_path / "mode").write_text(mode)

    def setPorts(self, *ports: str) -> None:
        (self.tmp_path / "ports").write_text("\n".join(ports))

    def start(self, **env: str) -> ServerProcess:
        environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **env)
        server = ServerProcess(self.tmp_path / "twistd.log")
        argv = [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "-y", TAC]
        reactor.spawnProcess(server, TWISTD, argv, env=environ, path=str(self.tmp_path))  # type: ignore[attr-defined]
        self.server = server
        return server

    async def ready(self, generation: int, timeout: float = 20) -> Event:
        assert self.server is not None
        event = await self.server.waitForPhase("ready", timeout=timeout, generation=generation)
        self.pids.add(event["pid"])
        return event

    def pidFile(self) -> int:
        return int((self.tmp_path / "app.pid").read_text())

    def kill(self) -> None:
        killAll(self.pids)




@pytest_twisted.ensureDeferred
async def test_fiveRestartsUnderLoad(cluster: Cluster) -> None:
    """
    Across five restarts, with requests looping on kept-alive connections
    and on a new connection per request: no request fails, the slow request
    in flight at the first signal gets 200 from the old pid, later responses
    come from the new pid, each old pid is gone after its drain, the pid file
    follows, and no process leaks a zombie or a listening socket.
    """
    server = cluster.start()
    ready = await cluster.ready(1)
    port = portOf(ready)
    url = f"http://127.0.0.1:{port}/"
    loops = [LoadLoop(url, keepAlive=True), LoadLoop(url, keepAlive=False)]
    for loop in loops:
        loop.start()
    current = ready["pid"]
    slow = None
    try:
        for generation in range(2, 7):
            if generation == 2:
                slow = treq.get(f"{url}slow?seconds=1", pool=freshPool(), timeout=10)
                await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
            os.kill(current, signal.SIGUSR2)
            successor = await cluster.ready(generation)
            await server.waitFor(
                f"generation {generation} to see its predecessor exit",
                lambda e, pid=successor["pid"]: e.get("phase") == "parent-gone" and e.get("pid") == pid,
            )
            await waitUntilGone(current)
            if generation == 2:
                exited = await server.waitForDirectExit()
                assert isinstance(exited, ProcessDone), f"the first process exited with {exited}"
            assert cluster.pidFile() == successor["pid"]
            current = successor["pid"]
        assert slow is not None
        response = await slow
        assert response.code == 200
        body = await response.content()
        assert body.endswith(f"from pid {ready['pid']} after 1 s\n".encode())
    finally:
        for loop in loops:
            await loop.stop(servedBy=current)
    for loop in loops:
        assert loop.failures == [], loop.failures[:5]
        assert len(loop.responses) > 50
        assert loop.pids()[-1] == current
    assert zombieChildren(current) == []
    assert listeningSockets(current) == 1
    os.kill(current, signal.SIGTERM)
    await server.waitFor("the last generation to stop", lambda e: e.get("phase") == "stopped" and e.get("pid") == current)
    await server.waitForExit()
    assert not (cluster.tmp_path / "app.pid").exists()


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("import-error", "exit status 1"),
        ("start-error", "exit status 1"),
        ("exit-after-adopt", "exit status 3"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_brokenSuccessor(cluster: Cluster, mode: str, expected: str) -> None:
    """
    A successor that cannot start leaves the old process serving, which
    logs why; a later restart with a fixed release works.
    """
    server = cluster.start()
    ready = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    loop = LoadLoop(url, keepAlive=True)
    loop.start()
    try:
        cluster.setMode(mode)
        os.kill(ready["pid"], signal.SIGUSR2)
        failed = await server.waitForPhase("restart-failed")
        assert failed["error"] == "ChildExitedEarly"
        assert expected in failed["reason"]
        assert cluster.pidFile() == ready["pid"]
        response = await treq.get(url, pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(ready["pid"])
        cluster.setMode("ok")
        os.kill(ready["pid"], signal.SIGUSR2)
        successor = await cluster.ready(2)
        await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
        assert cluster.pidFile() == successor["pid"]
    finally:
        await loop.stop()
    assert loop.failures == []


@pytest_twisted.ensureDeferred
async def test_hungSuccessorKilledAtDeadline(cluster: Cluster) -> None:
    """
    A successor that never gets ready, and ignores SIGTERM, is killed after
    the ready deadline; the old process keeps serving.
    """
    # The deadline must outlast the successor's start on a loaded machine
    # (over 2 s seen), or it is terminated before it hangs.
    server = cluster.start(READY_TIMEOUT="5")
    ready = await cluster.ready(1)
    cluster.setMode("hang")
    os.kill(ready["pid"], signal.SIGUSR2)
    hung = await server.waitFor(
        "the successor to hang", lambda e: e.get("testEvent") == "fault-start" and e["pid"] != ready["pid"]
    )
    cluster.pids.add(hung["pid"])
    failed = await server.waitForPhase("restart-failed")
    assert failed["error"] == "ChildReadyTimeout"
    await server.waitForPhase("child-killed", timeout=15)
    response = await treq.get(f"http://127.0.0.1:{portOf(ready)}/", pool=freshPool(), timeout=10)
    assert (await response.content()).decode() == str(ready["pid"])


@pytest_twisted.ensureDeferred
async def test_secondSignalDuringUpgrade(cluster: Cluster) -> None:
    """
    A second SIGUSR2 during an upgrade is refused and logged, and the upgrade
    in progress completes.  A SIGUSR2 sent to the successor while it starts
    does not kill it.
    """
    server = cluster.start(SLOW_START="2")
    ready = await cluster.ready(1)
    cluster.setMode("slow-start")
    os.kill(ready["pid"], signal.SIGUSR2)
    starting = await server.waitFor(
        "the successor to start", lambda e: e.get("testEvent") == "fault-start" and e["pid"] != ready["pid"]
    )
    cluster.pids.add(starting["pid"])
    os.kill(ready["pid"], signal.SIGUSR2)
    refused = await server.waitForPhase("restart-refused")
    assert "already in progress" in refused["reason"]
    os.kill(starting["pid"], signal.SIGUSR2)
    successor = await cluster.ready(2)
    assert successor["pid"] == starting["pid"]
    await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
    assert cluster.pidFile() == successor["pid"]


@pytest_twisted.ensureDeferred
async def test_releaseChangesPorts(cluster: Cluster, tmp_path: Path) -> None:
    """
    A release that removes one port and adds another keeps the shared one,
    binds the new one and closes the one it no longer serves.
    """
    keep, drop, add = freePort(), freePort(), freePort()
    spec = "tcp:{}:interface=127.0.0.1".format
    cluster.setPorts(spec(keep), spec(drop))
    server = cluster.start()
    ready = await cluster.ready(1)
    cluster.setPorts(spec(keep), spec(add))
    os.kill(ready["pid"], signal.SIGUSR2)
    successor = await cluster.ready(2)
    await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
    assert sorted(successor["endpoints"]) == sorted([spec(keep), spec(add)])
    for port in (keep, add):
        response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(successor["pid"])
    with pytest.raises(Exception):
        await treq.get(f"http://127.0.0.1:{drop}/", pool=freshPool(), timeout=10)
    assert listeningSockets(successor["pid"]) == 2


@pytest_twisted.ensureDeferred
async def test_restartQueuedDuringDrain(tmp_path: Path) -> None:
    """
    A restart asked while the previous process still drains a 5 s request
    is queued, not refused, and runs once that process has exited: the slow
    request gets its response, a fresh-connection loop sees no failure, and
    generation 3 serves.
    """
    from ._server import startServer

    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root")
    pids: list[int] = []
    try:
        first = await server.waitForPhase("ready")
        pids.append(first["pid"])
        url = f"http://127.0.0.1:{portOf(first)}"
        loop = LoadLoop(url + "/", keepAlive=False)
        loop.start()
        slow = treq.get(url + "/slow?seconds=5", pool=freshPool(), timeout=30)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        os.kill(first["pid"], signal.SIGUSR2)
        second = await server.waitForPhase("ready", generation=2)
        pids.append(second["pid"])
        await server.waitFor(
            "the first process to drain", lambda e: e.get("phase") == "drain-started" and e["pid"] == first["pid"]
        )
        os.kill(second["pid"], signal.SIGUSR2)
        queued = await server.waitFor(
            "the restart to be queued", lambda e: e.get("phase") == "restart-queued" and e["pid"] == second["pid"]
        )
        assert not [e for e in server.events if e.get("phase") == "restart-refused"]
        third = await server.waitForPhase("ready", generation=3, timeout=30)
        pids.append(third["pid"])
        gone = [e for e in server.events if e.get("phase") == "parent-gone" and e["pid"] == second["pid"]]
        assert gone and gone[0]["log_time"] <= third["log_time"], "generation 3 started beside generation 1"
        assert queued["log_time"] < gone[0]["log_time"]
        response = await slow
        assert response.code == 200
        assert (await response.content()).startswith(b"slow response")
        await waitUntilGone(second["pid"])
        await loop.stop(servedBy=third["pid"])
        assert loop.failures == [], loop.failures[:3]
    finally:
        killAll(pids)
