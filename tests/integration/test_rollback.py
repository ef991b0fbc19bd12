"""
A successor that reports ready, then crashes: the old process, which kept its
listening sockets paused, takes the service back without refusing a
connection, and a later restart to a good release works.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from ._client import freshPool, portOf
from ._load import LoadLoop
from ._procs import alive, waitUntilGone
from ._server import ROOT, Event, ServerProcess
from .test_restart_process import Cluster

CRASH_AFTER = 1.5


async def crashedSuccessor(cluster: Cluster, server: ServerProcess, old: Event) -> Event:
    """
    Wait for the successor started in C{crash-after-ready} mode to report
    ready and crash, and for the old process to roll back; return the
    rollback's event.
    """
    successor = await server.waitFor(
        "the successor to report ready", lambda e: e.get("phase") == "ready" and e["pid"] != old["pid"]
    )
    cluster.pids.add(successor["pid"])
    await server.waitFor("the successor to crash", lambda e: e.get("testEvent") == "crash")
    rolledBack = await server.waitForPhase("rolled-back", timeout=10)
    assert rolledBack["pid"] == old["pid"]
    assert rolledBack["childPID"] == successor["pid"]
    assert rolledBack["exitStatus"] == "exit status 1"
    assert CRASH_AFTER - 0.5 < rolledBack["served"] < CRASH_AFTER + 2
    assert not alive(successor["pid"])
    return rolledBack


def status(cluster: Cluster) -> dict[str, object]:
    result: dict[str, object] = json.loads((cluster.tmp_path / "app.pid.status").read_text())
    return result


async def restartToGoodRelease(cluster: Cluster, server: ServerProcess, old: Event) -> Event:
    """
    Restart once more with a release that works: the old process hands over
    for good and exits; the pid file names the new pid.
    """
    cluster.setMode("ok")
    os.kill(old["pid"], signal.SIGUSR2)
    good = await server.waitFor(
        "the good successor to report ready",
        lambda e: e.get("phase") == "ready" and e["pid"] not in cluster.pids,
    )
    cluster.pids.add(good["pid"])
    await server.waitFor("the old process to be confirmed out", lambda e: e.get("phase") == "confirmed")
    await waitUntilGone(old["pid"])
    assert cluster.pidFile() == good["pid"]
    return good


@pytest_twisted.ensureDeferred
async def test_crashWhileDraining(cluster: Cluster) -> None:
    """
    A successor that crashes 1.5 s after ready, while a 6 s request drains
    on the old process: no request on a fresh-connection loop fails, the
    old pid answers again (the pid file and the status file name it), the
    slow request gets 200, and its hooks have not run; a later restart to
    a good release works.
    """
    server = cluster.start()
    old = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(old)}/"
    loop = LoadLoop(url, keepAlive=False)
    loop.start()
    try:
        slow = treq.get(f"{url}slow?seconds=6", pool=freshPool(), timeout=30)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        cluster.setMode("crash-after-ready")
        os.kill(old["pid"], signal.SIGUSR2)
        await crashedSuccessor(cluster, server, old)
        response = await treq.get(url, pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(old["pid"])
        assert cluster.pidFile() == old["pid"]
        assert status(cluster)["state"] == "serving"
        assert not [e for e in server.events if e.get("phase") == "stopping" and e["pid"] == old["pid"]]
        good = await restartToGoodRelease(cluster, server, old)
        response = await slow
        assert response.code == 200
        assert (await response.content()).endswith(f"from pid {old['pid']} after 6 s\n".encode())
        await loop.stop(servedBy=good["pid"])
    finally:
        await loop.stop()
    assert loop.failures == [], loop.failures[:5]
    assert old["pid"] in loop.pids()[len(loop.pids()) // 4 :], "the old pid never answered after the rollback"


@pytest_twisted.ensureDeferred
async def test_crashOnProbation(cluster: Cluster) -> None:
    """
    With nothing in flight and a 3 s probation, a successor that crashes
    1.5 s after ready is rolled back though the old process's drain is
    over: no request on a fresh-connection loop fails, the old pid answers
    again, C{twisted-graceful reload} exits 1 naming the rollback, and the
    status file says how the successor ended; a later restart to a good
    release works.
    """
    server = cluster.start(PROBATION="3")
    old = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(old)}/"
    loop = LoadLoop(url, keepAlive=False)
    loop.start()
    try:
        cluster.setMode("crash-after-ready")
        reload = getProcessOutputAndValue(
            sys.executable, ["-m", "twisted_graceful", "reload", "--pidfile", "app.pid", "--timeout", "30"],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), path=str(cluster.tmp_path), reactor=reactor,
        )
        await crashedSuccessor(cluster, server, old)
        out, err, code = await reload
        assert code == 1, (out, err)
        assert out.decode().startswith("Reload rolled back: successor pid "), out
        assert f"pid {old['pid']} serves again." in out.decode()
        last = status(cluster)["lastRestart"]
        assert isinstance(last, dict)
        assert (last["outcome"], last["exitStatus"]) == ("rolled-back", "exit status 1")
        response = await treq.get(url, pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(old["pid"])
        drained = [e for e in server.events if e.get("phase") == "drain-finished" and e["pid"] == old["pid"]]
        assert drained, "the drain was over before the rollback"
        good = await restartToGoodRelease(cluster, server, old)
        await loop.stop(servedBy=good["pid"])
    finally:
        await loop.stop()
    assert loop.failures == [], loop.failures[:5]
