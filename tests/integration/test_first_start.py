"""
A server still starting (its application still importing) survives the
signals operators send: SIGHUP, SIGUSR1 and SIGUSR2 are ignored until the
server handles them, and it then serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from ._procs import freePort
from ._server import ROOT, TWISTD

DEADLINE = 20.0

GATED_APP = '''
import os, time
from twisted.web.resource import Resource

open("waiting", "w").close()
deadline = time.monotonic() + {deadline}
while not os.path.exists("go"):
    if time.monotonic() > deadline:
        raise SystemExit("the test never opened the gate")
    time.sleep(0.01)
class Up(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"up"


root = Up()
'''


def waitUntil(what: str, check: object, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {DEADLINE} s")
        time.sleep(0.01)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    (tmp_path / "gated.py").write_text(GATED_APP.format(deadline=DEADLINE))
    port = freePort()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [TWISTD, "-n", "--logger=twisted_graceful.jsonlog.observer", "graceful", "--probation", "0.2", "--app", "gated.root",
         "--port", f"tcp:{port}:interface=127.0.0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    yield process, tmp_path, port
    if process.poll() is None:
        process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


@pytest.mark.integration
def test_signalsWhileImporting(server: tuple[subprocess.Popen[bytes], Path, int]) -> None:
    """
    SIGHUP, SIGUSR1 and SIGUSR2 sent while the application imports do not
    kill the server (their default action); it serves once imported.
    """
    process, directory, port = server
    waitUntil("the application import", (directory / "waiting").exists, process)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        process.send_signal(signum)
    (directory / "go").touch()
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read() == b"up"
        except OSError:
            return False

    waitUntil("the first answer", answers, process)
    process.send_signal(signal.SIGTERM)
    # twistd ends by the signal that stopped it, once stopped.
    assert process.wait(DEADLINE) == -signal.SIGTERM
    assert process.stdout is not None
    phases = [json.loads(line.strip(b"\x1e")).get("phase") for line in process.stdout.read().splitlines()
              if line.strip(b"\x1e").startswith(b"{")]
    assert "ready" in phases and "stopped" in phases, phases
