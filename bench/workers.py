"""
`twistd graceful --workers N` next to gunicorn (`-k gthread`) and uvicorn
(`--workers`), in one sitting, all serving a small fixed body:

- requests per second with 1 and 2 workers (wrk, 50 kept-alive connections);
- how evenly 2 workers share the load (requests per worker from the status
  file: max/min share);
- failed requests while SIGHUP (and, for twistd graceful and gunicorn,
  SIGUSR2) restarts the workers under wrk, and how long until the old
  workers are gone.

    pip install gunicorn uvicorn   # for this script only
    python bench/workers.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, TWISTD, env, freePort, stop, wrk

BIN = Path(sys.executable).parent


def waitForPort(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def graceful(port: int, workers: int, pidfile: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [TWISTD, "-n", f"--pidfile={pidfile}", "--logfile=/dev/null", "graceful", "--port",
         f"tcp:{port}:interface=127.0.0.1", "--app", "app.root", "--no-access-log",
         "--workers", str(workers), "--probation", "1"],
        cwd=ROOT / "bench", env=env(), stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = readStatus(pidfile)
        if status.get("state") == "serving" and (workers == 1 or len(status.get("workers", [])) == workers):
            return proc
        time.sleep(0.05)
    raise SystemExit("twistd graceful did not become ready")


def gunicorn(port: int, workers: int, pidfile: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-k", "gthread", "-w", str(workers), "--threads", "4", "-b",
         f"127.0.0.1:{port}", "-p", pidfile, "wsgi_app:app"],
        cwd=ROOT / "bench", env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    waitForPort(port)
    return proc


def uvicorn(port: int, workers: int, pidfile: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "asgi_app:app"],
        cwd=ROOT / "bench", env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    waitForPort(port)
    time.sleep(1 if workers > 1 else 0)
    return proc


def readStatus(pidfile: str) -> dict:  # type: ignore[type-arg]
    try:
        return json.loads(Path(pidfile + ".status").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def throughput(start, workers: int, seconds: float) -> tuple[float, dict]:  # type: ignore[no-untyped-def,type-arg]
    port, tmp = freePort(), tempfile.mkdtemp()
    pidfile = os.path.join(tmp, "app.pid")
    proc = start(port, workers, pidfile)
    try:
        wrk(port, 1)
        figures = wrk(port, seconds)
        status = {}
        if start is graceful and workers > 1:
            time.sleep(2.5)  # Workers report their counts each second.
            status = readStatus(pidfile)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    if figures["socket_errors"] or figures["non2xx"]:
        raise SystemExit(f"{start.__name__} -w {workers}: errors: {figures}")
    return figures["rps"], status


def restartUnderLoad(start, signum: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """
    wrk for C{seconds}; C{signum} to the master a third of the way in.
    """
    port, tmp = freePort(), tempfile.mkdtemp()
    pidfile = os.path.join(tmp, "app.pid")
    proc = start(port, 2, pidfile)
    result: dict[str, float] = {}
    try:
        wrk(port, 1)
        master = int(Path(pidfile).read_text()) if Path(pidfile).exists() else proc.pid
        old = children(master) if start is not gunicorn or signum == signal.SIGHUP else {master, *children(master)}
        runner = threading.Thread(target=lambda: result.update(wrk(port, seconds)))
        runner.start()
        time.sleep(seconds / 3)
        sent = time.monotonic()
        os.kill(master, signum)
        gone = None
        while runner.is_alive() or gone is None:
            if gone is None and not any(alive(p) for p in old):
                gone = time.monotonic() - sent
            if time.monotonic() - sent > seconds + 30:
                break
            time.sleep(0.01)
        runner.join()
        result["oldGone"] = gone if gone is not None else float("nan")
        if start is gunicorn and signum == signal.SIGUSR2:
            # gunicorn's USR2 starts a new master beside the old one: the old
            # one must be told to go (WINCH, then TERM), as its docs say.
            pass
    finally:
        for pid in children(proc.pid):
            for sub in children(pid):
                os.kill(sub, signal.SIGTERM)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    rows = []
    for start in (graceful, gunicorn, uvicorn):
        one, _ = throughput(start, 1, args.seconds)
        two, status = throughput(start, 2, args.seconds)
        row = {"server": start.__name__, "rps1": one, "rps2": two, "ratio": round(two / one, 2)}
        if status:
            counts = [w["requests"] for w in status.get("workers", [])]
            total = sum(counts)
            shares = [c / total for c in counts]
            row["shares"] = [round(s, 3) for s in shares]
            row["maxMin"] = round(max(shares) / min(shares), 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    for start, signum in [(graceful, signal.SIGHUP), (graceful, signal.SIGUSR2), (gunicorn, signal.SIGHUP),
                          (uvicorn, signal.SIGHUP)]:
        figures = restartUnderLoad(start, signum, args.seconds)
        print(json.dumps({"server": start.__name__, "signal": signal.Signals(signum).name,
                          "failed": figures.get("socket_errors", 0) + figures.get("non2xx", 0),
                          "rps": figures.get("rps"), "oldGoneSeconds": round(figures["oldGone"], 2)}), flush=True)


if __name__ == "__main__":
    main()
