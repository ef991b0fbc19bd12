"""
`twistd graceful --workers N` next to gunicorn (`-k gthread`) and uvicorn
(`--workers`), in one sitting, all serving a small fixed body:

- requests per second with 1 and 2 workers (wrk, 50 kept-alive connections);
- how evenly 2 workers share the load (requests per worker from the status
  file: max/min share);
- failed requests while SIGHUP (and, for twistd graceful and gunicorn,
  SIGUSR2) restarts the workers under wrk; the hand-over (signal to the first
  answer from a new worker, seen by a probe on fresh connections every 10 ms)
  and how long until the old workers are gone; the peak process count and
  memory (PSS: shared pages counted in part) of the whole tree meanwhile.
  gunicorn's SIGUSR2 needs the operator to end the old master: this script
  sends it SIGTERM as soon as a new worker answers.

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

from _common import ROOT, TWISTD, askPid, env, freePort, stop, wrk

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
    # app.slow answers / as app.root does, and /pid for the probe.
    proc = subprocess.Popen(
        [TWISTD, "-n", f"--pidfile={pidfile}", "--logfile=/dev/null", "graceful", "--port",
         f"tcp:{port}:interface=127.0.0.1", "--app", "app.slow", "--no-access-log",
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


def readPid(pidfile: str) -> int | None:
    """
    The pid in C{pidfile}: the master serving now, a new one after SIGUSR2.
    """
    try:
        return int(Path(pidfile).read_text())
    except (OSError, ValueError):
        return None


def children(pid: int) -> set[int]:
    """
    The worker processes of C{pid}: its children, less the resource tracker
    that uvicorn's multiprocessing keeps for the master's whole life.
    """
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split() if b"resource_tracker" not in cmdline(int(p))}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


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


def parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return found


def tree(roots: set[int]) -> set[int]:
    """
    C{roots} and their descendants that are alive.
    """
    ppid = parents()
    found = {r for r in roots if r in ppid}
    grew = True
    while grew:
        more = {pid for pid, parent in ppid.items() if parent in found} - found
        grew = bool(more)
        found |= more
    return {pid for pid in found if alive(pid)}


def pss(pid: int) -> int:
    """
    The proportional set size of C{pid} in bytes: its resident memory, each
    page shared with other processes (after a fork) counted in part.
    """
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def probePid(port: int) -> int | None:
    try:
        return askPid(port, timeout=2)
    except (OSError, ValueError):
        return None


def restartUnderLoad(start, signum: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """
    wrk for C{seconds}; C{signum} to the master a third of the way in.
    """
    port, tmp = freePort(), tempfile.mkdtemp()
    pidfile = os.path.join(tmp, "app.pid")
    proc = start(port, 2, pidfile)
    result: dict[str, float] = {}
    wholeTree = signum == signal.SIGUSR2
    try:
        wrk(port, 1)
        master = readPid(pidfile) or proc.pid
        # Our workers are the fork server's children: the status file
        # names them.
        workers = {w["pid"] for w in readStatus(pidfile).get("workers", [])} if start is graceful else children(master)
        old = workers | ({master} if wholeTree else set())
        runner = threading.Thread(target=lambda: result.update(wrk(port, seconds)))
        runner.start()
        time.sleep(seconds / 3)
        peakCount = peakMemory = 0
        sent = time.monotonic()
        os.kill(master, signum)
        gone = handoff = None
        probeFailures = 0
        while runner.is_alive() or gone is None:
            now = time.monotonic()
            members = tree({proc.pid, master, readPid(pidfile) or master})
            peakCount = max(peakCount, len(members))
            peakMemory = max(peakMemory, sum(pss(p) for p in members))
            if handoff is None:
                pid = probePid(port)
                if pid is None:
                    probeFailures += 1
                elif pid not in old:
                    handoff = now - sent
                    if start is gunicorn and wholeTree:
                        # What gunicorn's docs ask of the operator: end the old
                        # master (TERM: a graceful stop of it and its workers).
                        os.kill(master, signal.SIGTERM)
            if gone is None and not any(alive(p) for p in old):
                gone = now - sent
            if now - sent > seconds + 30:
                break
            time.sleep(0.01)
        runner.join()
        result.update(
            oldGone=gone if gone is not None else float("nan"),
            handoff=handoff if handoff is not None else float("nan"),
            peakProcesses=peakCount,
            peakMemoryMB=round(peakMemory / 2**20, 1),
            probeFailures=probeFailures,
        )
    finally:
        # The master that serves now may be a new one (SIGUSR2), no longer
        # a child of the one started: the pid file names it.
        for pid in tree({proc.pid, master, readPid(pidfile) or master}):
            if pid != proc.pid:
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
                          (gunicorn, signal.SIGUSR2), (uvicorn, signal.SIGHUP)]:
        figures = restartUnderLoad(start, signum, args.seconds)
        print(json.dumps({"server": start.__name__, "signal": signal.Signals(signum).name,
                          "failed": figures.get("socket_errors", 0) + figures.get("non2xx", 0),
                          "probeFailures": figures["probeFailures"], "rps": figures.get("rps"),
                          "handoffSeconds": round(figures["handoff"], 2),
                          "oldGoneSeconds": round(figures["oldGone"], 2),
                          "peakProcesses": figures["peakProcesses"], "peakMemoryMB": figures["peakMemoryMB"]}),
              flush=True)


if __name__ == "__main__":
    main()
