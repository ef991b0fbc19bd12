"""
Daemon mode, the pid file and the log file across restarts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from ._procs import alive, killAll, waitUntilGone
from ._server import ROOT, TWISTD

RESTARTS = 10


async def waitForPidFile(path: Path, other: int | None, timeout: float = 20.0) -> int:
    """
    Wait until C{path} names a live process other than C{other}.
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while True:
        try:
            pid = int(path.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid != other and alive(pid):
            return pid
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"{path} did not name a new live process within {timeout} s")
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_daemonRestartsTenTimes(tmp_path: Path) -> None:
    """
    C{kill -USR2 $(cat app.pid)} works ten times in a row on a daemon; the
    pid file always names the serving process, the log keeps every
    generation's lines, and a final SIGTERM removes the pid file.
    """
    pidfile, logfile = tmp_path / "app.pid", tmp_path / "app.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "graceful", "--probation", "0.2",
         "--port", "tcp:0:interface=127.0.0.1", "--app", "tests.integration.app.root"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    pids = [await waitForPidFile(pidfile, None)]
    try:
        for _ in range(RESTARTS):
            os.kill(pids[-1], signal.SIGUSR2)
            pids.append(await waitForPidFile(pidfile, pids[-1]))
            await waitUntilGone(pids[-2])
        assert len(set(pids)) == RESTARTS + 1
        os.kill(pids[-1], signal.SIGTERM)
        await waitUntilGone(pids[-1])
    finally:
        killAll(pids)
    assert not pidfile.exists()
    log = logfile.read_text()
    for pid in pids:
        assert re.search(rf"\[pid {pid}\] .*Serving .* as pid {pid}", log), f"pid {pid} lost its ready line"
        assert re.search(rf"\[pid {pid}\] .*Stopped in", log), f"pid {pid} lost its stop line"
    assert log.count("Handed over to pid") == RESTARTS
