"""
Restarts under load: `twistd graceful` (SIGUSR2, finished by itself) next to
gunicorn's documented upgrade (USR2 to the master, then TERM to the old
master once the new one serves), same machine, same sitting.

For each server and each workload, wrk loads the server while K restarts
happen at even intervals; a probe opens a fresh connection every 10 ms for
the whole run (so a refused port shows even where wrk would hide it).

Workloads:
  keepalive  wrk, 50 kept-alive connections
  close      wrk, `Connection: close` on every request (a new connection each)
  slow       keepalive, plus 5 requests of 1 s in flight at every signal

    python bench/restart_under_load.py [--servers graceful,gunicorn] [--runs 3]
        [--seconds 10] [--restarts 3]

Prints one JSON line per run and a Markdown table.  Needs wrk (Debian package
`wrk`) and, for the comparison, gunicorn (`pip install gunicorn`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, TWISTD, Events, env, freePort

from twisted_graceful._pidfile import isAlive as alive

PROBE_INTERVAL = 0.01
SLOW_PER_SIGNAL = 5
BIN = Path(sys.executable).parent


def request(port: int, path: str, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """
    GET over a fresh connection: (pid or None, error kind or None).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except ConnectionRefusedError:
        return None, "refused"
    except ConnectionResetError:
        return None, "reset"
    except socket.timeout:
        return None, "timeout"
    except OSError as e:
        return None, type(e).__name__
    if not data:
        return None, "no-response"
    if not data.startswith(b"HTTP/1.1 200"):
        return None, "non-2xx"
    body = data.split(b"\r\n\r\n", 1)[1]
    return (int(body) if body.strip().isdigit() else 0), None


class Probe(threading.Thread):
    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.deadline = port, time.monotonic() + seconds + 30
        self.results: list[tuple[float, int | None, str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            started = time.monotonic()
            pid, error = request(self.port, "/pid", 5)
            self.results.append((time.monotonic(), pid, error))
            time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - started)))


class Server:
    """
    Starts a server and restarts it; subclasses know how.
    """

    name = ""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir

    def servingPIDs(self) -> set[int]:
        raise NotImplementedError

    def restart(self, probe: Probe) -> dict[str, float]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def rootPID(self) -> int:
        raise NotImplementedError


class Graceful(Server):
    name = "twistd graceful"

    def __init__(self, port: int, workdir: Path) -> None:
        super().__init__(port, workdir)
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful",
             "--port", f"tcp:{port}:interface=127.0.0.1", "--app", "app.slow", "--no-access-log"],
            stdout=subprocess.PIPE, cwd=workdir, env=env(),
        )
        self._events = Events(self.proc, "twistd graceful")
        self.pid = self.waitFor(lambda e: e.get("phase") == "ready")["pid"]

    def waitFor(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        return self._events.waitFor(predicate, timeout)

    def rootPID(self) -> int:
        return int(self.pid)

    def servingPIDs(self) -> set[int]:
        return {int(self.pid)}

    def restart(self, probe: Probe) -> dict[str, float]:
        old = self.pid
        signalled = time.monotonic()
        os.kill(old, signal.SIGUSR2)
        ready = self.waitFor(lambda e: e.get("phase") == "child-ready" and e.get("pid") == old)
        drained = self.waitFor(lambda e: e.get("phase") == "drain-finished" and e.get("pid") == old)
        gone = self.waitFor(lambda e: e.get("phase") == "parent-gone" and e.get("parentPID") == old)
        self.pid = ready["childPID"]
        return {
            "handoff": firstAnswer(probe, {self.pid}, signalled) - signalled,
            "ready_to_exit": gone["log_time"] - ready["log_time"],
            "last_response_to_exit": gone["log_time"] - drained["log_time"],
        }

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(60)


class Gunicorn(Server):
    name = "gunicorn"

    def __init__(self, port: int, workdir: Path) -> None:
        super().__init__(port, workdir)
        self.pidfile = workdir / "gunicorn.pid"
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "8", "-b", f"127.0.0.1:{port}",
             "--pid", str(self.pidfile), "--graceful-timeout", "30", "--chdir", str(ROOT / "bench"), "wsgi_app:app"],
            cwd=workdir, env=env(), stdout=subprocess.DEVNULL, stderr=open(workdir / "gunicorn.log", "ab"),
        )
        self.master = self._waitForMaster(None)
        self._waitForWorkers(self.master)

    def _waitForMaster(self, old: int | None, timeout: float = 60) -> int:
        # A new master started by USR2 writes PIDFILE.2 while the old one
        # lives (gunicorn's arbiter), and renames it once promoted.
        path = self.pidfile if old is None else self.pidfile.with_name(self.pidfile.name + ".2")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(path.read_text())
                if pid != old:
                    return pid
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise SystemExit("gunicorn's master did not start")

    def workers(self, master: int) -> set[int]:
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == master and fields[0] != "Z":
                    children.add(int(entry.name))
        return children

    def _waitForWorkers(self, master: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid, _ = request(self.port, "/pid", 5)
            if pid in self.workers(master):
                return
            time.sleep(0.01)
        raise SystemExit("gunicorn's workers did not answer")

    def rootPID(self) -> int:
        return self.master

    def servingPIDs(self) -> set[int]:
        return {self.master} | self.workers(self.master)

    def restart(self, probe: Probe) -> dict[str, float]:
        old = self.master
        signalled = time.monotonic()
        os.kill(old, signal.SIGUSR2)
        new = self._waitForMaster(old)
        deadline = time.monotonic() + 60
        while not self.workers(new) and time.monotonic() < deadline:
            time.sleep(0.005)
        served = firstAnswer(probe, self.workers(new), signalled, lambda: self.workers(new))
        # The documented upgrade: once the new master serves, TERM the old.
        terminated = time.monotonic()
        os.kill(old, signal.SIGTERM)
        while alive(old) and time.monotonic() - terminated < 60:
            time.sleep(0.005)
        self.master = new
        return {
            "handoff": served - signalled,
            "ready_to_exit": time.monotonic() - terminated,
            "last_response_to_exit": float("nan"),
        }

    def stop(self) -> None:
        os.kill(self.master, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while alive(self.master) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def firstAnswer(probe: Probe, pids: set[int], since: float, refresh: Any = None, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refresh is not None:
            pids = refresh() or pids
        for when, pid, _ in list(probe.results):
            if when >= since and pid in pids:
                return when
        time.sleep(0.005)
    raise SystemExit("the new generation never answered the probe")


def footprint(server: Server) -> dict[str, int]:
    pids = server.servingPIDs()
    rss = fds = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return {"rss_kib": rss, "fds": fds, "processes": len(pids)}


def wrk(port: int, seconds: float, close: bool) -> subprocess.Popen[str]:
    command = ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if close:
        command += ["-H", "Connection: close"]
    return subprocess.Popen([*command, f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)


def parseWrk(out: str) -> dict[str, Any]:
    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeout = (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {
        "requests": int(requests.group(1)) if requests else 0,
        "connect_errors": connect,
        "read_errors": read,
        "write_errors": write,
        "timeouts": timeout,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0,  # type: ignore[union-attr]
    }


def freshDir(workdir: Path) -> Path:
    """
    A directory of its own for each server started (its pid files).
    """
    path = workdir / f"server-{len(list(workdir.iterdir()))}"
    path.mkdir()
    return path


def runWorkload(kind: type[Server], workload: str, seconds: float, restarts: int, workdir: Path) -> dict[str, Any]:
    workdir = freshDir(workdir)
    port = freePort()
    server = kind(port, workdir)
    before = footprint(server)
    probe = Probe(port, seconds)
    probe.start()
    load = wrk(port, seconds, close=workload == "close")
    started = time.monotonic()
    timings: list[dict[str, float]] = []
    slowResults: list[str | None] = []
    slowThreads: list[threading.Thread] = []
    for i in range(restarts):
        at = started + seconds * (i + 1) / (restarts + 1)
        time.sleep(max(0.0, at - time.monotonic()))
        if workload == "slow":
            for _ in range(SLOW_PER_SIGNAL):
                thread = threading.Thread(target=lambda: slowResults.append(request(port, "/slow?seconds=1", 15)[1]))
                thread.start()
                slowThreads.append(thread)
            time.sleep(0.1)
        timings.append(server.restart(probe))
    out, _ = load.communicate(timeout=seconds + 60)
    for thread in slowThreads:
        thread.join(20)
    probe.stopping.set()
    probe.join()
    after = footprint(server)
    server.stop()
    results = parseWrk(out)
    probeErrors = [e for _, _, e in probe.results if e]
    answered = [t for t, _, e in probe.results if e is None]
    gaps = [b - a for a, b in zip(answered, answered[1:])]
    return {
        "server": server.name,
        "workload": workload,
        **results,
        "slow_requests": len(slowResults),
        "slow_failed": sum(1 for e in slowResults if e),
        "probes": len(probe.results),
        "probe_failures": len(probeErrors),
        "probe_failure_kinds": sorted(set(probeErrors)),
        "longest_probe_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "handoff_ms": [round(t["handoff"] * 1000, 1) for t in timings],
        "ready_to_exit_ms": [round(t["ready_to_exit"] * 1000, 1) for t in timings],
        "last_response_to_exit_ms": [round(t["last_response_to_exit"] * 1000, 1) for t in timings],
        "before": before,
        "after": after,
    }


def baseline(kind: type[Server], seconds: float, workdir: Path, close: bool) -> dict[str, Any]:
    workdir = freshDir(workdir)
    port = freePort()
    server = kind(port, workdir)
    out, _ = wrk(port, seconds, close=close).communicate(timeout=seconds + 60)
    server.stop()
    return parseWrk(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="graceful,gunicorn")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    kinds = {"graceful": Graceful, "gunicorn": Gunicorn}
    chosen = [kinds[name] for name in args.servers.split(",")]
    if Gunicorn in chosen and not (BIN / "gunicorn").exists():
        raise SystemExit("gunicorn is missing: pip install gunicorn (or --servers graceful)")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in range(args.runs):
        for kind in chosen:
            bases = {close: baseline(kind, args.seconds, workdir, close) for close in (False, True)}
            for workload in ("keepalive", "close", "slow"):
                base = bases[workload == "close"]
                row = runWorkload(kind, workload, args.seconds, args.restarts, workdir)
                row["run"] = run + 1
                row["p99_ms_without_restarts"] = base["p99_ms"]
                row["rps_without_restarts"] = base["rps"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    print()
    print("| server | workload | run | requests | connect / read / write / timeout / non-2xx | slow failed | probes failed | longest probe gap ms | hand-over ms (median) | ready→old gone ms (median) | p99 ms (restarts / none) | RSS KiB, fds, procs before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        errors = f"{r['connect_errors']} / {r['read_errors']} / {r['write_errors']} / {r['timeouts']} / {r['non2xx']}"
        fp = f"{r['before']['rss_kib']}, {r['before']['fds']}, {r['before']['processes']} → {r['after']['rss_kib']}, {r['after']['fds']}, {r['after']['processes']}"
        print(
            f"| {r['server']} | {r['workload']} | {r['run']} | {r['requests']} | {errors} | "
            f"{r['slow_failed']}/{r['slow_requests']} | {r['probe_failures']}/{r['probes']} | {r['longest_probe_gap_ms']} | "
            f"{statistics.median(r['handoff_ms']):.0f} | {statistics.median(r['ready_to_exit_ms']):.0f} | "
            f"{r['p99_ms']:.1f} / {r['p99_ms_without_restarts']:.1f} | {fp} |"
        )


if __name__ == "__main__":
    main()
