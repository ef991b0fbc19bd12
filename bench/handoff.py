"""
Restart hand-over times of `twistd graceful`, next to the cost of starting a
bare `twistd --help` (the floor: a restart starts a new process).

A probe sends a request on a fresh connection every 5 ms for the whole run.
For each of K restarts it records:
  - handoff: SIGUSR2 to the first response from the new pid;
  - ready_to_exit: the successor reporting ready to the old process being
    gone (its successor's lifeline closing);
and counts probe failures.

    python bench/handoff.py [--restarts 10] [--probation 0]

The old process waits out its successor's probation before it exits; the
default here, 0, measures the hand-over itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import time

from _common import ROOT, TWISTD, Events, askPid, env, freePort

PROBE_INTERVAL = 0.005


def twistdHelpSeconds(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([TWISTD, "--help"], capture_output=True, check=True, env=env())
        times.append(time.monotonic() - started)
    return statistics.median(times)


def probe(port: int, stop: threading.Event, results: list) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            pid = askPid(port, timeout=5)
            results.append((time.monotonic(), pid, None))
        except Exception as e:  # noqa: BLE001
            results.append((time.monotonic(), None, repr(e)))
        time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - started)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--probation", default="0", help="the server's --probation (the old process waits it out)")
    args = parser.parse_args()
    port = freePort()
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful",
         "--port", f"tcp:{port}:interface=127.0.0.1", "--no-access-log",
         "--probation", args.probation],
        stdout=subprocess.PIPE, cwd=ROOT, env=env(),
    )
    waitFor = Events(proc).waitFor

    current = waitFor(lambda e: e.get("phase") == "ready")["pid"]
    stop, results = threading.Event(), []  # type: ignore[var-annotated]
    prober = threading.Thread(target=probe, args=(port, stop, results), daemon=True)
    prober.start()
    handoffs, readyToExit, pids = [], [], [current]
    try:
        for generation in range(2, args.restarts + 2):
            time.sleep(0.2)
            signalled = time.monotonic()
            signalledWall = time.time()
            os.kill(current, signal.SIGUSR2)
            ready = waitFor(lambda e: e.get("phase") == "child-ready" and e.get("pid") == current)
            gone = waitFor(lambda e: e.get("phase") == "parent-gone" and e.get("pid") == ready["childPID"])
            readyToExit.append(gone["log_time"] - ready["log_time"])
            new = ready["childPID"]
            first = next((t for t, pid, _ in list(results) if pid == new and t >= signalled), None)
            while first is None and time.monotonic() - signalled < 10:
                time.sleep(0.01)
                first = next((t for t, pid, _ in list(results) if pid == new and t >= signalled), None)
            assert first is not None, "the new pid never answered"
            handoffs.append(first - signalled)
            _ = signalledWall
            current = new
            pids.append(new)
    finally:
        stop.set()
        prober.join()
        os.kill(current, signal.SIGTERM)
        proc.wait(30)
    failures = [err for _, _, err in results if err is not None]
    gaps = [b[0] - a[0] for a, b in zip(results, results[1:])]
    helpSeconds = twistdHelpSeconds()
    summary = {
        "bench": "handoff",
        "restarts": args.restarts,
        "probes": len(results),
        "probe_failures": len(failures),
        "longest_probe_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "handoff_ms_median": round(statistics.median(handoffs) * 1000, 1),
        "handoff_ms_max": round(max(handoffs) * 1000, 1),
        "ready_to_exit_ms_median": round(statistics.median(readyToExit) * 1000, 1),
        "ready_to_exit_ms_max": round(max(readyToExit) * 1000, 1),
        "twistd_help_ms": round(helpSeconds * 1000, 1),
        "handoff_over_twistd_help": round(statistics.median(handoffs) / helpSeconds, 2),
    }
    print(json.dumps(summary))
    print()
    print("| figure | value |")
    print("|---|---|")
    for key, value in summary.items():
        if key != "bench":
            print(f"| {key} | {value} |")
    if failures:
        print("\nfailures:", failures[:5])


if __name__ == "__main__":
    main()
