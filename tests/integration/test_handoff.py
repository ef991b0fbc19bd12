"""
Kept-alive connections that survive restarts: clients that reuse their one
connection without checking it (the standard library's C{http.client})
lose nothing across restarts, and never reconnect.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from ._procs import freePort, killAll
from ._server import Event, ServerProcess, startServer, stopServer

CLIENTS = 60
RESTARTS = 5
MAX_PAUSE = 1.5
MAX_SECONDS = 90.0


class CountingConnection(http.client.HTTPConnection):
    """
    C{http.client}'s connection, counting how often it connects.  It sends
    each request on the connection it has, with no check: a connection the
    server closed while idle fails the request.
    """

    connects = 0

    def connect(self) -> None:
        self.connects += 1
        super().connect()


class KeepAliveClient(threading.Thread):
    """
    POSTs on one persistent connection, with random pauses, until told to
    stop (or out of time); records every failure.
    """

    def __init__(self, port: int, seed: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.connection = CountingConnection("127.0.0.1", port, timeout=10)
        self._random = random.Random(seed)
        self._stopping = stop
        self.answered = 0
        self.failures: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        while not self._stopping.is_set() and time.monotonic() - started < MAX_SECONDS:
            body = os.urandom(self._random.randint(0, 4000))
            try:
                self.connection.request("POST", "/", body=body)
                response = self.connection.getresponse()
                answer = response.read()
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                self.connection.close()
                continue
            if (response.status, answer) != (200, b"got %d bytes" % len(body)):
                self.failures.append(f"status {response.status}: {answer[:80]!r}")
            self.answered += 1
            self._stopping.wait(self._random.uniform(0, MAX_PAUSE))
        self.connection.close()


class Fleet:
    """
    C{count} L{KeepAliveClient}s (or C{kind}s) of C{port}, started and
    stopped together.
    """

    def __init__(self, port: int, count: int, kind: type[KeepAliveClient] = KeepAliveClient) -> None:
        self._stop = threading.Event()
        self.clients = [kind(port, seed, self._stop) for seed in range(count)]

    def answered(self) -> int:
        return sum(c.answered for c in self.clients)

    async def start(self, what: str = "every client to be answered") -> None:
        for client in self.clients:
            client.start()
        await waitUntil(what, lambda: all(c.answered for c in self.clients), 20)

    async def answerAgain(self, what: str) -> None:
        """
        Wait until the clients have had as many answers again as there are
        clients.
        """
        answered = self.answered()
        await waitUntil(what, lambda: self.answered() > answered + len(self.clients), 20)

    async def stop(self) -> None:
        self._stop.set()
        await waitUntil("the clients to stop", lambda: not any(c.is_alive() for c in self.clients), 20)

    def failures(self) -> list[str]:
        return [f for c in self.clients for f in c.failures]

    def assertUnbroken(self) -> None:
        """
        No request failed, and every client used one connection throughout.
        """
        assert self.failures() == [], self.failures()[:5]
        assert [c.connection.connects for c in self.clients] == [1] * len(self.clients)


async def waitUntil(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


async def restart(server: ServerProcess, pid: int, generation: int) -> Event:
    """
    Restart the server C{pid} and wait until its successor serves alone.
    """
    os.kill(pid, signal.SIGUSR2)
    ready = await server.waitForPhase("ready", generation=generation)
    await server.waitFor(
        f"pid {pid} to exit", lambda e: e.get("phase") == "parent-gone" and e.get("pid") == ready["pid"]
    )
    return ready


@pytest_twisted.ensureDeferred
async def test_connectionsSurviveRestarts(tmp_path: Path) -> None:
    """
    60 clients, each on one persistent connection, POST with random pauses
    through 5 restarts: every POST is answered, every client used exactly
    one connection, and every restart moved every connection.
    """
    port = freePort()
    server = startServer(tmp_path, "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "tests.integration.app.root")
    pids: list[int] = []
    fleet = Fleet(port, CLIENTS)
    try:
        ready = await server.waitForPhase("ready", generation=1)
        pids.append(ready["pid"])
        await fleet.start()
        for generation in range(2, 2 + RESTARTS):
            ready = await restart(server, pids[-1], generation)
            pids.append(ready["pid"])
        await fleet.answerAgain("the last process to answer")
    finally:
        try:
            await fleet.stop()
        finally:
            killAll(pids[1:])
            stopServer(server)
    fleet.assertUnbroken()
    sent = [(e["moved"], e["refused"]) for e in server.events if e.get("phase") == "handoff-sent"]
    assert sent == [(CLIENTS, 0)] * RESTARTS, sent


@pytest_twisted.ensureDeferred
async def test_offClosesConnections(tmp_path: Path) -> None:
    """
    With C{--no-connection-handoff}, a restart closes each kept-alive
    connection once idle: a client that reuses it without checking loses
    its next request, and must connect again.
    """
    port = freePort()
    server = startServer(
        tmp_path, "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--no-connection-handoff",
    )
    connection = CountingConnection("127.0.0.1", port, timeout=10)
    pids: list[int] = []
    try:
        ready = await server.waitForPhase("ready", generation=1)
        pids.append(ready["pid"])
        connection.request("GET", "/")
        assert connection.getresponse().read() == str(ready["pid"]).encode()
        successor = await restart(server, ready["pid"], 2)
        pids.append(successor["pid"])
        connection.request("GET", "/")
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
        connection.close()
        connection.request("GET", "/")
        assert connection.getresponse().read() == str(successor["pid"]).encode()
        assert connection.connects == 2
        assert [e for e in server.events if e.get("phase") == "handoff-sent"] == []
    finally:
        connection.close()
        killAll(pids[1:])
        stopServer(server)


@pytest_twisted.ensureDeferred
async def test_workersKeepConnections(tmp_path: Path) -> None:
    """
    With C{--workers 2}, rolling restarts (SIGHUP) move each old worker's
    kept-alive connections to a new worker: 20 unchecking clients lose no
    POST and never reconnect through 2 rollouts.
    """
    port = freePort()
    server = startServer(
        tmp_path, "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--workers", "2",
    )
    fleet = Fleet(port, 20)
    try:
        await server.waitFor("the supervisor's ready", lambda e: e.get("phase") == "ready" and e["pid"] == server.pid)
        await fleet.start()
        for rollout in range(1, 3):
            server.signal(signal.SIGHUP)
            done = await server.waitFor(
                f"rollout {rollout}",
                lambda e: e.get("phase") in ("rollout-done", "rollout-failed") and e.get("generation", 0) == rollout + 1
                or e.get("phase") == "rollout-failed",
            )
            assert done["phase"] == "rollout-done", done
        await fleet.answerAgain("answers after the rollouts")
    finally:
        try:
            await fleet.stop()
        finally:
            killAll({e["workerPID"] for e in server.events if e.get("phase") == "worker-spawned"})
            stopServer(server)
    fleet.assertUnbroken()
    sent = [e["moved"] for e in server.events if e.get("phase") == "handoff-sent"]
    assert len(sent) == 4 and sum(sent) >= 20, sent


@pytest_twisted.ensureDeferred
async def test_workersKeepConnectionsThroughUpgrades(tmp_path: Path) -> None:
    """
    With C{--workers 2}, upgrades of the whole tree (SIGUSR2) move the old
    workers' kept-alive connections, through both supervisors, to the new
    supervisor's workers: 20 unchecking clients lose no POST and never
    reconnect through 2 upgrades.
    """
    port = freePort()
    server = startServer(
        tmp_path, "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "tests.integration.app.root",
        "--workers", "2",
    )
    fleet = Fleet(port, 20)
    supervisors: list[int] = []
    try:
        ready = await server.waitFor("the supervisor's ready", lambda e: e.get("phase") == "ready" and e["pid"] == server.pid)
        supervisors.append(ready["pid"])
        await fleet.start()
        for generation in range(2, 4):
            ready = await restart(server, supervisors[-1], generation)
            supervisors.append(ready["pid"])
        await fleet.answerAgain("answers after the upgrades")
    finally:
        try:
            await fleet.stop()
        finally:
            killAll({e["workerPID"] for e in server.events if e.get("phase") == "worker-spawned"})
            killAll(supervisors[1:])
            stopServer(server)
    fleet.assertUnbroken()
    # Each upgrade moved every client's connection (a worker that moved
    # none logs nothing).
    sent = [e["moved"] for e in server.events if e.get("phase") == "handoff-sent" and "worker" in e]
    assert sum(sent) == 20 * 2, sent
