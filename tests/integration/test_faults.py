"""
Fault injection: real servers under client loops, with the faults a
deployment meets.  No request is lost but those a case cuts on purpose, and
those are counted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet.error import ProcessDone

from ._client import connectRaw, freshPool, portOf
from ._load import LoadLoop
from ._procs import alive, freePort, listeningSockets, waitUntilGone, zombieChildren
from ._server import startServer, stopServer
from .test_restart_process import Cluster





def footprint(pid: int) -> tuple[int, int]:
    """
    (open descriptors, resident KiB) of C{pid}.
    """
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return len(os.listdir(f"/proc/{pid}/fd")), rss


@pytest_twisted.ensureDeferred
async def test_successorCannotBindNewPort(cluster: Cluster) -> None:
    """
    A release adding a port that another process holds fails to start; the
    old process keeps serving, with no request lost.
    """
    spec = "tcp:{}:interface=127.0.0.1".format
    keep, taken = freePort(), freePort()
    holder = socket.socket()
    holder.bind(("127.0.0.1", taken))
    holder.listen(1)
    try:
        cluster.setPorts(spec(keep))
        server = cluster.start()
        ready = await cluster.ready(1)
        loop = LoadLoop(f"http://127.0.0.1:{keep}/", keepAlive=False)
        loop.start()
        cluster.setPorts(spec(keep), spec(taken))
        os.kill(ready["pid"], signal.SIGUSR2)
        failed = await server.waitForPhase("restart-failed")
        await loop.stop()
    finally:
        holder.close()
    assert "exit status 1" in failed["reason"]
    assert loop.failures == [] and set(loop.pids()) == {ready["pid"]}


@pytest_twisted.ensureDeferred
async def test_oldProcessKilledMidDrain(cluster: Cluster) -> None:
    """
    The old process SIGKILLed in the middle of its drain: only its request
    in flight is lost (counted), the successor serves on and takes the pid
    file, and can restart again.
    """
    server = cluster.start()
    ready = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    slow = treq.get(f"{url}slow?seconds=30", pool=freshPool(), timeout=60)
    await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
    os.kill(ready["pid"], signal.SIGUSR2)
    successor = await cluster.ready(2)
    draining = await server.waitFor(
        "the drain", lambda e: e.get("phase") == "drain-started" and e["pid"] == ready["pid"]
    )
    assert draining["inFlight"] == 1, "only the slow request is in flight in the old process"
    loop = LoadLoop(url, keepAlive=False)
    loop.start()
    os.kill(ready["pid"], signal.SIGKILL)
    await server.waitFor("the successor to see it", lambda e: e.get("phase") == "parent-gone")
    cut = 0
    try:
        await slow
    except Exception:
        cut += 1
    assert cut == 1
    assert cluster.pidFile() == successor["pid"]
    os.kill(successor["pid"], signal.SIGUSR2)
    third = await cluster.ready(3)
    await waitUntilGone(successor["pid"])
    await loop.stop(servedBy=third["pid"])
    assert loop.failures == []
    assert loop.pids()[-1] == third["pid"]


@pytest_twisted.ensureDeferred
async def test_fiveSignalsWithin100ms(cluster: Cluster) -> None:
    """
    Five SIGUSR2 in a burst make one upgrade, and lose nothing.
    """
    server = cluster.start()
    ready = await cluster.ready(1)
    loop = LoadLoop(f"http://127.0.0.1:{portOf(ready)}/", keepAlive=True)
    loop.start()
    for _ in range(5):
        os.kill(ready["pid"], signal.SIGUSR2)
    successor = await cluster.ready(2)
    await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
    await loop.stop(servedBy=successor["pid"])
    assert server.phases().count("child-spawned") == 1
    assert not any(e.get("generation") == 3 for e in server.events)
    assert loop.failures == []
    assert loop.pids()[-1] == successor["pid"]


@pytest_twisted.ensureDeferred
async def test_twentyRestartsStayFlat(cluster: Cluster) -> None:
    """
    Twenty restarts in a row under load: no failure, and the serving
    process's descriptors, memory and the number of processes stay flat,
    with no zombie.
    """
    cluster.start()
    ready = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    loops = [LoadLoop(url, keepAlive=True), LoadLoop(url, keepAlive=False)]
    for loop in loops:
        loop.start()
    current, samples = ready["pid"], []
    try:
        for generation in range(2, 22):
            os.kill(current, signal.SIGUSR2)
            successor = await cluster.ready(generation)
            await waitUntilGone(current)
            current = successor["pid"]
            samples.append(footprint(current))
    finally:
        for loop in loops:
            await loop.stop()
    for loop in loops:
        assert loop.failures == [], loop.failures[:3]
    fds = [f for f, _ in samples]
    rss = [r for _, r in samples]
    assert max(fds[1:]) - min(fds[1:]) <= 2, fds
    assert rss[-1] <= rss[1] * 1.2, rss
    assert [pid for pid in cluster.pids if alive(pid)] == [current]
    assert zombieChildren(current) == []


@pytest_twisted.ensureDeferred
async def test_slowClientsCutAtDeadline(tmp_path: Path) -> None:
    """
    A request whose body trickles in, a client that never reads its
    response, and a never-ending stream are all cut at the deadline,
    counted and logged; a normal request in flight completes.
    """
    server = startServer(
        tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--shutdown-timeout", "1",
    )
    try:
        ready = await server.waitForPhase("ready")
        port = portOf(ready)
        trickle = await connectRaw(port)
        trickle.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")  # type: ignore[union-attr]
        deaf = await connectRaw(port)
        deaf.transport.pauseProducing()  # type: ignore[union-attr]
        deaf.get("/big")
        stream = await connectRaw(port)
        stream.get("/forever")
        await stream.waitForData(b"never ends")
        slow = treq.get(f"http://127.0.0.1:{port}/slow?seconds=0.3", pool=freshPool(), timeout=10)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        server.signal(signal.SIGTERM)
        started = await server.waitForPhase("drain-started")
        assert started["inFlight"] == 4
        assert (await slow).code == 200
        aborted = await server.waitForPhase("drain-aborted")
        assert (aborted["connections"], aborted["requests"]) == (3, 3)  # trickle, deaf, stream
        finished = await server.waitForPhase("drain-finished")
        assert (finished["completed"], finished["abortedRequests"]) == (1, 3)
        for client in (trickle, stream):
            await client.waitForClose()
        deaf.transport.resumeProducing()  # type: ignore[union-attr]
        await deaf.waitForClose()
        await server.waitForExit()
    finally:
        stopServer(server)


async def _waitForFile(path: Path, text: str, timeout: float = 10.0) -> str:
    """
    Wait (with a deadline) until C{path} holds C{text}.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert reactor.seconds() < deadline, f"{path} did not get {text!r} within {timeout} s: {content!r}"  # type: ignore[attr-defined]
        await deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_usr1ReopensLogsHupRestarts(tmp_path: Path) -> None:
    """
    SIGUSR1 reopens the access log that logrotate renamed, and SIGHUP starts
    a zero-downtime restart; neither kills the server or cuts the request
    in flight.
    """
    server = startServer(
        tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--access-log", "access.log",
    )
    try:
        ready = await server.waitForPhase("ready")
        url = f"http://127.0.0.1:{portOf(ready)}/"
        slow = treq.get(f"{url}slow?seconds=1", pool=freshPool(), timeout=20)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        await (await treq.get(f"{url}before", pool=freshPool(), timeout=10)).content()
        await _waitForFile(tmp_path / "access.log", "GET /before")
        (tmp_path / "access.log").rename(tmp_path / "access.log.1")
        server.signal(signal.SIGUSR1)
        await server.waitForPhase("logs-reopened", signal="SIGUSR1")
        await (await treq.get(f"{url}after", pool=freshPool(), timeout=10)).content()
        rotated = await _waitForFile(tmp_path / "access.log", "GET /after")
        assert "GET /before" not in rotated
        assert "GET /after" not in (tmp_path / "access.log.1").read_text()
        loop = LoadLoop(url, keepAlive=True)
        loop.start()
        server.signal(signal.SIGHUP)
        await server.waitForPhase("restart-signal", signal="SIGHUP")
        successor = await server.waitForPhase("ready", generation=2)
        response = await slow
        assert response.code == 200
        assert (await response.content()).endswith(f"from pid {ready['pid']} after 1 s\n".encode())
        exited = await server.waitForDirectExit()
        assert isinstance(exited, ProcessDone), f"the old process exited with {exited}"
        await loop.stop(servedBy=successor["pid"])
        assert loop.failures == []
        os.kill(successor["pid"], signal.SIGTERM)
        await waitUntilGone(successor["pid"])
    finally:
        stopServer(server)
        for event in server.events:
            if event.get("phase") == "ready" and alive(event["pid"]):
                os.kill(event["pid"], signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_forgedControlFiles(tmp_path: Path) -> None:
    """
    Pid and status files written to name an unrelated live process make
    C{stop} and C{reload} refuse (exit 3) without signalling it, even with
    the process's true start time when the files belong to another user
    (exit 7); each refusal is one line.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import ProcessProtocol

    from twisted_graceful._pidfile import processStartTime
    from twisted_graceful._status import StatusFile

    from .test_operations import control

    victim = ProcessProtocol()
    transport = reactor.spawnProcess(  # type: ignore[attr-defined]
        victim, sys.executable, [sys.executable, "-c", "import time; time.sleep(120)"], env=None
    )
    pid = transport.pid
    try:
        (tmp_path / "x.pid").write_text(f"{pid}\n")
        status = StatusFile(str(tmp_path / "x.pid.status"))
        status.update(pid=pid, state="serving", startTime=1)
        for command in ("stop", "reload"):
            code, out, err = await control(tmp_path, command, "--pidfile", "x.pid", "--timeout", "2")
            assert (code, out) == (3, ""), err
            assert "is not the server that wrote" in err and len(err.strip().splitlines()) == 1
            assert alive(pid)
        if os.geteuid() == 0:
            status.update(startTime=processStartTime(pid))
            os.chown(status.path, 65534, 65534)
            code, out, err = await control(tmp_path, "stop", "--pidfile", "x.pid", "--timeout", "2")
            assert (code, out) == (7, ""), err
            assert "it is owned by uid 65534" in err and len(err.strip().splitlines()) == 1
            assert alive(pid)
    finally:
        transport.signalProcess("KILL")


@pytest_twisted.ensureDeferred
async def test_bogusInheritance(tmp_path: Path) -> None:
    """
    Inheritance variables naming the real parent but closed or garbage
    pipe descriptors are ignored with a warning: the server starts fresh,
    writes its pid and status files, and serves.
    """
    from twisted_graceful._inherit import ENV_GENERATION, ENV_LIFELINE_FD, ENV_PARENT_PID, ENV_READY_FD, ENV_SOCKETS

    port = freePort()
    # Low descriptors are the twistd process's own (its reactor's waker
    # pipe among them): none may be taken for the hand-over pipes.
    for ready, lifeline in [("7", "8"), ("8", "7"), ("6", "5"), ("4", "5"), ("x", "-1")]:
        directory = tmp_path / f"run-{ready}-{lifeline}"
        directory.mkdir()
        env = {ENV_PARENT_PID: str(os.getpid()), ENV_READY_FD: ready, ENV_LIFELINE_FD: lifeline,
               ENV_SOCKETS: "{}", ENV_GENERATION: "2"}
        server = startServer(directory, "--port", f"tcp:{port}:interface=127.0.0.1", "--app",
                             "tests.integration.app.root", twistdArgs=("--pidfile=app.pid",), env=env)
        try:
            ignored = await server.waitForPhase("inherit-ignored")
            assert (ignored["variable"], ignored["value"]) in [(ENV_READY_FD, ready), (ENV_LIFELINE_FD, lifeline)]
            served = await server.waitForPhase("ready")
            assert served["generation"] == 1
            await _waitForFile(directory / "app.pid", str(served["pid"]))
            assert int((directory / "app.pid").read_text()) == served["pid"]
            assert f'"pid": {served["pid"]}' in (directory / "app.pid.status").read_text()
            response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
            assert (await response.content()).decode() == str(served["pid"])
            server.signal(signal.SIGTERM)
            await server.waitForExit()
        finally:
            stopServer(server)


@pytest_twisted.ensureDeferred
async def test_inheritedSocketOfAnotherAddress(tmp_path: Path) -> None:
    """
    A listening socket announced under an identity it is not bound to is
    refused and closed; the server binds the announced address itself.
    """
    from twisted_graceful._inherit import ENV_LIFELINE_FD, ENV_PARENT_PID, ENV_READY_FD, ENV_SOCKETS

    wanted = freePort()
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    identity = f"tcp:{wanted}:interface=127.0.0.1"
    env = {ENV_PARENT_PID: str(os.getpid()), ENV_READY_FD: "4", ENV_LIFELINE_FD: "5",
           ENV_SOCKETS: json.dumps({identity: 3})}
    server = startServer(tmp_path, "--port", identity, "--app", "tests.integration.app.root", env=env,
                         childFDs={0: 0, 1: "r", 2: "r", 3: other.fileno(), 4: "r", 5: "w"})
    try:
        refused = await server.waitForPhase("inherit-ignored")
        assert (refused["identity"], refused["bound"]) == (identity, f"tcp:{other.getsockname()[1]}:interface=127.0.0.1")
        served = await server.waitForPhase("ready")
        assert served["endpoints"] == {identity: f"127.0.0.1:{wanted}"}
        assert listeningSockets(served["pid"]) == 1
        response = await treq.get(f"http://127.0.0.1:{wanted}/", pool=freshPool(), timeout=10)
        assert (await response.content()).decode() == str(served["pid"])
    finally:
        other.close()
        stopServer(server)


@pytest_twisted.ensureDeferred
async def test_loopBlockedPastReadyTimeout(cluster: Cluster, tmp_path: Path) -> None:
    """
    The old process's loop blocked past --ready-timeout while its successor
    got ready: on waking it reads the ready report and hands over instead of
    killing the successor, and the control command sees the new server.
    """
    from .test_operations import control

    server = cluster.start(READY_TIMEOUT="2")
    ready = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    os.kill(ready["pid"], signal.SIGUSR2)
    await server.waitForPhase("child-spawned")
    blocked = treq.get(f"{url}block?seconds=4", pool=freshPool(), timeout=20)
    successor = await cluster.ready(2)
    assert (await blocked).code == 200
    await server.waitFor("the old process to exit", lambda e: e.get("phase") == "parent-gone")
    assert "restart-failed" not in server.phases()
    assert cluster.pidFile() == successor["pid"]
    code, out, err = await control(tmp_path, "status", "--pidfile", "app.pid")
    assert (code, err) == (0, ""), err
    assert f"pid: {successor['pid']}" in out and "state: serving" in out


@pytest_twisted.ensureDeferred
async def test_pidFileCannotBeWritten(cluster: Cluster, tmp_path: Path) -> None:
    """
    A successor that cannot write the pid file logs an error, records it in
    the status file and serves on; while the old process still drains, a
    restart of the successor is queued, and runs only once the old process
    has exited, so there are never three processes.
    """
    from .test_operations import control

    server = cluster.start(SHUTDOWN_TIMEOUT="20")
    ready = await cluster.ready(1)
    url = f"http://127.0.0.1:{portOf(ready)}/"
    slow = treq.get(f"{url}slow?seconds=3", pool=freshPool(), timeout=20)
    await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
    (tmp_path / "app.pid").unlink()
    (tmp_path / "app.pid").mkdir()  # No file can be renamed over it.
    os.kill(ready["pid"], signal.SIGUSR2)
    successor = await cluster.ready(2)
    failed = await server.waitForPhase("pidfile-failed", pid=successor["pid"])
    assert "Cannot write the pid file" in failed["error"] and failed["log_level"]["name"] == "error"
    assert alive(ready["pid"]), "the old process still drains its slow request"
    os.kill(successor["pid"], signal.SIGUSR2)
    await server.waitForPhase("restart-queued", pid=successor["pid"])
    assert "parent-gone" not in [e.get("phase") for e in server.events if e.get("pid") == successor["pid"]]
    assert (await slow).code == 200
    third = await cluster.ready(3)
    await waitUntilGone(ready["pid"])
    [gone] = [e for e in server.events if e.get("phase") == "parent-gone" and e.get("pid") == successor["pid"]]
    [spawned] = [e for e in server.events if e.get("phase") == "child-spawned" and e.get("pid") == successor["pid"]]
    assert gone["log_time"] <= spawned["log_time"], "the queued restart ran beside the old process"
    await waitUntilGone(successor["pid"])
    status = json.loads((tmp_path / "app.pid.status").read_text())
    assert (status["pid"], status["pidFileError"]) == (third["pid"], failed["error"])
    response = await treq.get(url, pool=freshPool(), timeout=10)
    assert (await response.content()).decode() == str(third["pid"])
    code, _, err = await control(tmp_path, "status", "--pidfile", "app.pid")
    assert code == 3 and "Cannot read the pid file" in err, err


@pytest_twisted.ensureDeferred
async def test_oldProcessKilledAsSuccessorStarts(cluster: Cluster) -> None:
    """
    The old process SIGKILLed just after it spawned its successor (before
    the successor read what it inherits): the successor takes the sockets
    and serves on the same port, and takes the pid file.
    """
    port = freePort()
    cluster.setPorts(f"tcp:{port}:interface=127.0.0.1")
    server = cluster.start()
    ready = await cluster.ready(1)
    os.kill(ready["pid"], signal.SIGUSR2)
    spawned = await server.waitForPhase("child-spawned")
    os.kill(ready["pid"], signal.SIGKILL)
    early = await server.waitForPhase("parent-gone-early")
    assert early["parentPID"] == ready["pid"] and early["pid"] == spawned["childPID"]
    successor = await cluster.ready(2)
    assert successor["endpoints"] == {f"tcp:{port}:interface=127.0.0.1": f"127.0.0.1:{port}"}
    response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
    assert (await response.content()).decode() == str(successor["pid"])
    await server.waitFor("the successor to see it", lambda e: e.get("phase") == "parent-gone")
    assert cluster.pidFile() == successor["pid"]
    assert listeningSockets(successor["pid"]) == 1


@pytest_twisted.ensureDeferred
async def test_outOfDescriptorsAtSpawn(cluster: Cluster, tmp_path: Path) -> None:
    """
    A server out of descriptors cannot start its successor: C{reload}
    exits 1 with the reason (the status file is still written), and the
    server serves on once descriptors are free again.
    """
    from twisted.internet import reactor

    from ._server import ROOT, TWISTD, ServerProcess
    from .test_operations import control
    from .test_restart_process import TAC

    environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    server = ServerProcess(tmp_path / "twistd.log")
    argv = ["/bin/sh", "-c", 'ulimit -n 64 && exec "$0" "$@"', TWISTD, "-n", "--pidfile=",
            "--logger=twisted_graceful.jsonlog.observer", "-y", TAC]
    reactor.spawnProcess(server, "/bin/sh", argv, env=environ, path=str(tmp_path))  # type: ignore[attr-defined]
    cluster.server = server
    ready = await cluster.ready(1)
    port = portOf(ready)
    hogs = []
    try:
        for _ in range(80):
            hogs.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        await server.waitFor("the server to run out of descriptors",
                             lambda e: "EMFILE encountered" in e.get("log_format", ""))
        code, out, err = await control(tmp_path, "reload", "--pidfile", "app.pid", "--timeout", "20")
        assert code == 1, (code, out, err)
        assert "Reload failed" in out and "Too many open files" in out
        assert f"pid {ready['pid']} is still serving" in out
    finally:
        for hog in hogs:
            hog.close()
    response = await treq.get(f"http://127.0.0.1:{port}/", pool=freshPool(), timeout=10)
    assert (await response.content()).decode() == str(ready["pid"])


@pytest_twisted.ensureDeferred
async def test_bodyOverLimit(tmp_path: Path) -> None:
    """
    With --max-request-body, a client announcing a 10 GB body gets 413 at
    once and is disconnected, and nothing is spooled to disk; bodies under
    the limit are served.
    """
    server = startServer(
        tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--max-request-body", "64K",
    )
    try:
        ready = await server.waitForPhase("ready")
        port = portOf(ready)
        liar = await connectRaw(port)
        liar.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 65536)  # type: ignore[union-attr]
        await liar.waitForData(b"413 Payload Too Large")
        await liar.waitForClose()
        assert not [f for f in os.listdir(f"/proc/{ready['pid']}/fd")
                    if "tmp" in os.readlink(f"/proc/{ready['pid']}/fd/{f}")]
        response = await treq.post(f"http://127.0.0.1:{port}/", data=b"y" * 65536, pool=freshPool(), timeout=10)
        assert (await response.content()) == b"got 65536 bytes"
        server.signal(signal.SIGTERM)
        await server.waitForExit()
    finally:
        stopServer(server)
