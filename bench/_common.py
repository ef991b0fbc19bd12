"""
Shared pieces of the benchmark scripts: start servers, wait for them, run wrk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).parent / "twistd")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'bench'}", PYTHONUNBUFFERED="1")


def startGraceful(port: int, *extra: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """
    Start twistd graceful with JSON logs on stdout; return once it is ready.
    """
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful",
         "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "app.root", "--no-access-log", *extra],
        stdout=subprocess.PIPE, cwd=cwd or ROOT, env=env(),
    )
    waitForEvent(proc, lambda e: e.get("phase") == "ready", 30)
    return proc


def startPlain(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_site.py"), str(port)],
                            stdout=subprocess.PIPE, env=env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"ready" not in line:
        raise SystemExit(f"plain site did not start: {line!r}")
    return proc


def waitForEvent(proc: subprocess.Popen[bytes], predicate, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"server exited early ({proc.poll()})")
        text = line.strip(b"\x1e \r\n")
        if text.startswith(b"{"):
            event = json.loads(text)
            if predicate(event):
                return event
    raise SystemExit("timed out waiting for the server")


class Events:
    """
    The JSON log events of a server started with its stdout piped, read in
    a thread as they come.
    """

    def __init__(self, proc: subprocess.Popen[bytes], name: str = "the server") -> None:
        import queue
        import threading

        self._name = name
        self._queue: queue.Queue[dict] = queue.Queue()  # type: ignore[type-arg]
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            text = line.strip(b"\x1e \r\n")
            if text.startswith(b"{"):
                self._queue.put(json.loads(text))

    def waitFor(self, predicate, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def,type-arg]
        """
        The next event for which C{predicate} is true; the events before it
        are dropped.
        """
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if predicate(event):
                return event
        raise SystemExit(f"timed out waiting for {self._name}")


def askPid(port: int, timeout: float) -> int:
    """
    The pid that answers C{GET /pid} on a new connection to C{port}.

    @raise OSError: The connection failed.
    @raise ValueError: The answer is not a pid.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.rsplit(b"\r\n\r\n", 1)[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(port: int, seconds: float, connections: int = 50, threads: int = 2, path: str = "/") -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }
