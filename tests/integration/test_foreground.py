"""
What C{twistd -n graceful} looks like from the shell after a restart, as
C{docs/restart.md} describes it: the command started exits 0, the successor
serves on in the same process group and session, with the same standard
output.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ._server import ROOT, TWISTD

DEADLINE = 30.0


class Lines:
    """
    JSON events read from a pipe, with deadlines.
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.buffer = b""
        self.seen: list[str] = []

    def waitFor(self, what: str, predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip("\x1e \r")
                self.seen.append(line)
                if line.startswith("{"):
                    event = json.loads(line)
                    if predicate(event):
                        return event  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            readable = select.select([self.pipe], [], [], max(left, 0))[0] if left > 0 else []
            chunk = os.read(self.pipe.fileno(), 65536) if readable else b""
            if not chunk:
                raise AssertionError(f"{what} did not happen within {DEADLINE} s:\n" + "\n".join(self.seen))
            self.buffer += chunk


@pytest.fixture
def pids() -> Iterator[list[int]]:
    started: list[int] = []
    yield started
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_foregroundAfterRestart(tmp_path: Path, pids: list[int]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    first = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=app.pid", "--logger=twisted_graceful.jsonlog.observer",
         "graceful", "--probation", "0.2", "--port", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0,
    )
    pids.append(first.pid)
    assert first.stdout is not None
    events = Lines(first.stdout)
    events.waitFor("the first ready", lambda e: e.get("phase") == "ready" and e.get("pid") == first.pid)
    os.kill(first.pid, signal.SIGUSR2)
    ready = events.waitFor("the successor's ready", lambda e: e.get("phase") == "ready" and e.get("pid") != first.pid)
    successor = ready["pid"]
    pids.append(successor)
    assert first.wait(timeout=DEADLINE) == 0
    assert (os.getpgid(successor), os.getsid(successor)) == (first.pid, os.getsid(0))
    stat = Path(f"/proc/{successor}/stat")
    if stat.exists():  # Its parent is gone: it was reparented.
        assert int(stat.read_text().rsplit(")", 1)[1].split()[1]) != first.pid
    events.waitFor("the pid file naming the successor", lambda e: e.get("phase") == "took-over")
    assert (tmp_path / "app.pid").read_text().strip() == str(successor)
    # Its log still reaches the pipe the first process was started with.
    os.kill(successor, signal.SIGTERM)
    events.waitFor("the successor's stop", lambda e: e.get("phase") == "stopped" and e.get("pid") == successor)
    first.stdout.close()
