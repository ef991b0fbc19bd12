"""
C{twistd graceful --workers N}: a supervisor and its worker processes,
seen by real HTTP clients.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted
import treq
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from ._client import freshPool, portOf
from ._load import LoadLoop
from ._procs import alive, killAll, waitUntilGone
from ._server import ServerProcess, startServer, stopServer

APP = ("--app", "tests.integration.workers_app.root")
LOCAL = ("--port", "tcp:0:interface=127.0.0.1")
REQUEST_CAP = 5000


@pytest.fixture
def servers() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started  # type: ignore[misc]
    for server in started:
        pids = {e["workerPID"] for e in server.events if e.get("phase") == "worker-spawned"}
        stopServer(server)
        killAll(pids)


async def startSupervisor(
    servers: list[ServerProcess], tmp_path: Path, *args: str, workers: int = 2
) -> tuple[ServerProcess, int]:
    server = startServer(tmp_path, *LOCAL, *APP, "--workers", str(workers), *args, twistdArgs=("--pidfile=twistd.pid",))
    servers.append(server)
    ready = await server.waitFor("the supervisor's ready", lambda e: e.get("phase") == "ready" and e["pid"] == server.pid)
    return server, portOf(ready)


def workerPids(server: ServerProcess) -> set[int]:
    """
    The workers that reported ready and have not exited, from the events.
    """
    ready = {e["workerPID"] for e in server.events if e.get("phase") == "worker-ready"}
    gone = {e["workerPID"] for e in server.events if e.get("phase") in ("worker-exited", "worker-lost")}
    return ready - gone


def status(tmp_path: Path) -> dict[str, object]:
    return json.loads((tmp_path / "twistd.pid.status").read_text())  # type: ignore[no-any-return]


@define
class FreshLoop:
    """
    Requests one after another, each on a new connection, recording when
    each began and how it ended.
    """

    url: str
    results: list[tuple[float, str]] = field(factory=list)
    _stopped: bool = False
    _done: Deferred[None] | None = None

    def start(self) -> None:
        self._done = Deferred.fromCoroutine(self._loop())

    async def _loop(self) -> None:
        pool = freshPool()
        while not self._stopped and len(self.results) < REQUEST_CAP:
            began = reactor.seconds()  # type: ignore[attr-defined]
            try:
                response = await treq.get(self.url, pool=pool, timeout=10)
                body = await response.content()
                self.results.append((began, body.decode() if response.code == 200 else f"status {response.code}"))
            except Exception as e:
                self.results.append((began, f"{type(e).__name__}: {e}"))

    async def stop(self) -> None:
        self._stopped = True
        assert self._done is not None
        await self._done

    def failedSince(self, when: float) -> list[str]:
        return [r for began, r in self.results if began >= when and not r.isdigit()]

    def pidsSince(self, when: float) -> set[int]:
        return {int(r) for began, r in self.results if began >= when and r.isdigit()}


async def until(what: str, predicate: object, timeout: float = 15.0) -> None:
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while not predicate():  # type: ignore[operator]
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_twoWorkersServeAndStop(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    Two workers serve the supervisor's socket; the pid file names the
    supervisor, the status file lists the workers; SIGTERM stops all of them.
    """
    server, port = await startSupervisor(servers, tmp_path)
    await until("the pid file", lambda: (tmp_path / "twistd.pid").exists())
    assert (tmp_path / "twistd.pid").read_text().strip() == str(server.pid)
    loop = FreshLoop(f"http://127.0.0.1:{port}/")
    loop.start()
    workers = workerPids(server)
    assert len(workers) == 2 and server.pid not in workers
    await until("both workers answering", lambda: loop.pidsSince(0) == workers)
    await loop.stop()
    assert loop.failedSince(0) == []
    listed = status(tmp_path)["workers"]
    assert sorted((w["pid"], w["state"]) for w in listed) == sorted((p, "ready") for p in workers)  # type: ignore[attr-defined,index]
    server.signal(signal.SIGTERM)
    await server.waitForExit()
    for pid in workers:
        await waitUntilGone(pid, timeout=5)


@pytest_twisted.ensureDeferred
async def test_killedWorkerReplaced(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    SIGKILL to a worker under a loop of new connections: no request begun
    after it died fails (the other worker accepts), and a new worker
    replaces it within seconds.
    """
    server, port = await startSupervisor(servers, tmp_path)
    loop = FreshLoop(f"http://127.0.0.1:{port}/")
    loop.start()
    await until("requests answered", lambda: len(loop.results) >= 20)
    workers = workerPids(server)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    await waitUntilGone(victim, timeout=5)
    gone = reactor.seconds()  # type: ignore[attr-defined]
    replaced = await server.waitFor(
        "a replacement ready", lambda e: e.get("phase") == "worker-ready" and e["workerPID"] != victim
        and e["workerPID"] not in workers, timeout=10
    )
    await until("the replacement answering", lambda: replaced["workerPID"] in loop.pidsSince(gone))
    await loop.stop()
    assert loop.failedSince(gone) == []
    assert len(loop.results) - len(loop.failedSince(0)) > 40
    lost = [e for e in server.events if e.get("phase") == "worker-lost"]
    assert [e["workerPID"] for e in lost] == [victim]
    await until("the status listing the replacement", lambda: replaced["workerPID"] in {w["pid"] for w in status(tmp_path)["workers"]})  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_rollingRestartsUnderLoad(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    Three SIGHUPs under load (kept-alive and new connections): no request
    fails, each rollout replaces both workers, the old ones exit.
    """
    server, port = await startSupervisor(servers, tmp_path, "--probation", "0.5")
    url = f"http://127.0.0.1:{port}/"
    fresh = FreshLoop(url)
    fresh.start()
    kept = LoadLoop(url, keepAlive=True, concurrency=2)
    kept.start()
    old = workerPids(server)
    for rollout in range(1, 4):
        server.signal(signal.SIGHUP)
        done = await server.waitFor(
            f"rollout {rollout}",
            lambda e: e.get("phase") in ("rollout-done", "rollout-failed") and e.get("generation", 0) == rollout + 1
            or e.get("phase") == "rollout-failed",
            timeout=20,
        )
        assert done["phase"] == "rollout-done" and done["replaced"] == 2
        for pid in old:
            await waitUntilGone(pid, timeout=10)
        new = workerPids(server)
        assert len(new) == 2 and not new & old
        old = new
    await kept.stop()
    await fresh.stop()
    assert kept.failures == [] and fresh.failedSince(0) == []
    assert set(kept.pids()) | fresh.pidsSince(0) >= old
    assert alive(server.pid or 0)


@pytest_twisted.ensureDeferred
async def test_brokenRolloutStops(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A rollout to a release whose workers cannot start stops at the first
    new worker: the old workers serve on, the status file says it failed,
    and why, in the worker's words.
    """
    server, port = await startSupervisor(servers, tmp_path)
    old = workerPids(server)
    (tmp_path / "release").write_text("broken")
    server.signal(signal.SIGHUP)
    failed = await server.waitForPhase("rollout-failed", timeout=20)
    assert "before it was ready" in failed["reason"]
    assert "this release is broken" in failed["reason"]
    loop = FreshLoop(f"http://127.0.0.1:{port}/")
    loop.start()
    await until("both old workers answering", lambda: loop.pidsSince(0) == old)
    await loop.stop()
    assert loop.failedSince(0) == []
    assert workerPids(server) == old
    rollout = status(tmp_path)["rollout"]
    assert rollout["outcome"] == "failed"  # type: ignore[index]
    assert "this release is broken" in rollout["reason"]  # type: ignore[index]


@pytest_twisted.ensureDeferred
async def test_newWorkerDiesOnProbation(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    A rollout to a release whose workers die soon after they are ready
    stops within C{--probation}: the old worker not yet replaced serves on,
    and the status file says the rollout failed and why.
    """
    # Three workers, so that one old worker is left whatever the timing.
    server, port = await startSupervisor(servers, tmp_path, "--probation", "4", workers=3)
    old = workerPids(server)
    (tmp_path / "release").write_text("dies-soon")
    server.signal(signal.SIGHUP)
    failed = await server.waitForPhase("rollout-failed", timeout=20)
    (tmp_path / "release").unlink()
    assert "within the probation of 4 s" in failed["reason"]
    survivors = workerPids(server) & old
    assert survivors
    assert not any(e.get("phase") == "rollout-done" for e in server.events)
    loop = FreshLoop(f"http://127.0.0.1:{port}/")
    loop.start()
    await until("the old worker answering", lambda: survivors <= loop.pidsSince(0))
    await loop.stop()
    await until("the status saying the rollout failed",
                lambda: status(tmp_path)["rollout"]["outcome"] == "failed")  # type: ignore[index]
    assert "within the probation" in status(tmp_path)["rollout"]["reason"]  # type: ignore[index]


@pytest_twisted.ensureDeferred
async def test_treeUpgradeUnderLoad(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    SIGUSR2 upgrades the whole tree under load: a new supervisor starts its
    own workers, the pid file names it once they are ready, the old
    supervisor and its workers exit; no request fails.
    """
    server, port = await startSupervisor(servers, tmp_path, "--probation", "0.5")
    await until("the pid file", lambda: (tmp_path / "twistd.pid").exists())
    old = workerPids(server)
    url = f"http://127.0.0.1:{port}/"
    fresh = FreshLoop(url)
    fresh.start()
    kept = LoadLoop(url, keepAlive=True, concurrency=2)
    kept.start()
    server.signal(signal.SIGUSR2)
    spawned = await server.waitForPhase("child-spawned", pid=server.pid)
    successor = await server.waitFor(
        "the new supervisor's ready", lambda e: e.get("phase") == "ready" and e["pid"] == spawned["childPID"],
        timeout=20,
    )
    await server.waitForDirectExit(timeout=20)
    for pid in old:
        await waitUntilGone(pid, timeout=10)
    await until("the pid file naming the new supervisor",
                lambda: (tmp_path / "twistd.pid").read_text().strip() == str(successor["pid"]))
    new = {e["workerPID"] for e in server.events if e.get("phase") == "worker-ready" and e["pid"] == successor["pid"]}
    assert len(new) == 2
    await until("the new workers answering", lambda: fresh.pidsSince(0) & new == new)
    await kept.stop()
    await fresh.stop()
    assert kept.failures == [] and fresh.failedSince(0) == []
    os.kill(successor["pid"], signal.SIGTERM)
    for pid in {successor["pid"], *new}:
        await waitUntilGone(pid, timeout=10)


@pytest_twisted.ensureDeferred
async def test_recycledUnderLoad(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    C{--max-requests 50} under load (kept-alive and new connections): each
    worker past 50 requests is replaced by a new one, started first, and no
    request fails.
    """
    server, port = await startSupervisor(servers, tmp_path, "--max-requests", "50")
    first = workerPids(server)
    url = f"http://127.0.0.1:{port}/"
    fresh = FreshLoop(url)
    fresh.start()
    kept = LoadLoop(url, keepAlive=True, concurrency=2)
    kept.start()
    recycled = await server.waitForPhase("worker-recycled", timeout=20)
    assert recycled["workerPID"] in first and recycled["reason"] == "requests" and recycled["requests"] >= 50
    await waitUntilGone(recycled["workerPID"], timeout=10)
    await until("the replacement answering", lambda: recycled["newPID"] in set(kept.pids()) | fresh.pidsSince(0))
    await kept.stop()
    await fresh.stop()
    served = len(kept.responses) + len(fresh.results) - len(fresh.failedSince(0))
    recycles = [e for e in server.events if e.get("phase") == "worker-recycled"]
    seen = set(kept.pids()) | fresh.pidsSince(0)
    print(f"served {served}, recycles {len(recycles)}, failed {len(kept.failures) + len(fresh.failedSince(0))}, "
          f"pids seen {len(seen)}")
    assert kept.failures == [] and fresh.failedSince(0) == []
    assert seen - first, "no response came from a new worker"
    starting = [e for e in server.events if e.get("phase") == "worker-recycling"]
    assert starting and starting[0]["workerPID"] == recycled["workerPID"]
    # The other worker may be being recycled too (N + 1 then): once the
    # load has stopped, N again.
    assert len(workerPids(server)) in (2, 3)
    await until("the recycles over, 2 workers", lambda: len(workerPids(server)) == 2, timeout=10)
    assert alive(server.pid or 0)


VERSIONED = '''
from twisted.web.resource import Resource


class Versioned(Resource):
    isLeaf = True

    def render_GET(self, request):
        return {answer!r}


def root():
    return Versioned()
'''


def parentOf(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


@pytest.mark.parametrize("forked", [True, False], ids=["fork-server", "fresh-interpreters"])
@pytest_twisted.ensureDeferred
async def test_rollingRestartLoadsNewCode(servers: list[ServerProcess], tmp_path: Path, forked: bool) -> None:
    """
    Workers are forked by the fork server, which has not loaded the
    application (or, with C{--no-fork-server}, are fresh interpreters): the
    workers of a SIGHUP run the application's new code.
    """
    (tmp_path / "versioned.py").write_text(VERSIONED.format(answer=b"first release"))
    server = startServer(
        tmp_path, *LOCAL, "--app", "versioned.root", "--workers", "2", "--probation", "0",
        *(() if forked else ("--no-fork-server",)), twistdArgs=("--pidfile=twistd.pid",),
    )
    servers.append(server)
    ready = await server.waitFor("the supervisor's ready", lambda e: e.get("phase") == "ready" and e["pid"] == server.pid)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    parents = {parentOf(pid) for pid in workerPids(server)}
    if forked:
        assert len(parents) == 1 and server.pid not in parents, "forked by one fork server"
    else:
        assert parents == {server.pid}
    (tmp_path / "versioned.py").write_text(VERSIONED.format(answer=b"the second release"))
    server.signal(signal.SIGHUP)
    done = await server.waitFor("the rollout", lambda e: e.get("phase") in ("rollout-done", "rollout-failed"), timeout=20)
    assert done["phase"] == "rollout-done"
    answers = set()
    for _ in range(20):
        response = await treq.get(url, pool=freshPool(), timeout=10)
        answers.add(await response.content())
    assert answers == {b"the second release"}


@pytest_twisted.ensureDeferred
async def test_forkServerLost(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    With its fork server killed, the supervisor still sees a worker die (its
    pipes close, its status unknown) and replaces it with a fresh
    interpreter; no request begun after the death fails.
    """
    server, port = await startSupervisor(servers, tmp_path)
    workers = workerPids(server)
    (forkServer,) = {parentOf(pid) for pid in workers}
    assert forkServer != server.pid
    os.kill(forkServer, signal.SIGKILL)
    lost = await server.waitForPhase("fork-server-lost", timeout=10)
    assert lost["count"] == 2
    loop = FreshLoop(f"http://127.0.0.1:{port}/")
    loop.start()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    await waitUntilGone(victim, timeout=5)
    gone = reactor.seconds()  # type: ignore[attr-defined]
    replaced = await server.waitFor(
        "a replacement ready", lambda e: e.get("phase") == "worker-ready" and e["workerPID"] not in workers, timeout=10
    )
    assert parentOf(replaced["workerPID"]) == server.pid, "a fresh interpreter, the supervisor's child"
    await until("the replacement answering", lambda: replaced["workerPID"] in loop.pidsSince(gone))
    await loop.stop()
    assert loop.failedSince(gone) == []
    assert [e["workerPID"] for e in server.events if e.get("phase") == "worker-lost"] == [victim]


@pytest_twisted.ensureDeferred
async def test_ctrlC(servers: list[ServerProcess], tmp_path: Path) -> None:
    """
    Ctrl-C reaches the supervisor and every worker at once (the terminal's
    process group): the workers leave it to the supervisor, which drains
    them; none is taken for crashed and replaced.  A worker sent SIGINT
    alone serves on.
    """
    server, port = await startSupervisor(servers, tmp_path)
    workers = workerPids(server)
    os.kill(min(workers), signal.SIGINT)
    response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
    assert response.code == 200
    for pid in [server.pid or 0, *workers]:
        os.kill(pid, signal.SIGINT)
    exited = await server.waitForDirectExit(timeout=20)
    assert isinstance(exited, Exception)
    for pid in workers:
        await waitUntilGone(pid, timeout=5)
    after = [e.get("phase") for e in server.events]
    assert "worker-lost" not in after and after.count("worker-spawned") == 2, after
