"""
Kept-alive connections across restarts, with and without the connection
hand-off.

C clients (the standard library's http.client: it reuses its connection
without checking it, and reconnects only once it knows the connection is
closed) each POST on one persistent connection with random pauses
(0 to --max-pause s) while the server restarts R times.  For each mode it
prints: POSTs answered and lost, connections each client opened, and per
restart the hand-over time (SIGUSR2 to the successor's ready report) and the
time from the successor's ready report to the old process being gone.

    python bench/keepalive_restart.py [--clients 60] [--restarts 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time

from _common import ROOT, TWISTD, Events, env, freePort

RUN_LIMIT = 300.0


class CountingConnection(http.client.HTTPConnection):
    connects = 0

    def connect(self) -> None:
        self.connects += 1
        super().connect()


def client(port: int, seed: int, maxPause: float, stop: threading.Event, out: dict) -> None:  # type: ignore[type-arg]
    rnd = random.Random(seed)
    connection = CountingConnection("127.0.0.1", port, timeout=10)
    answered = lost = 0
    deadline = time.monotonic() + RUN_LIMIT
    while not stop.is_set() and time.monotonic() < deadline:
        body = b"x" * rnd.randint(0, 4000)
        try:
            connection.request("POST", "/", body=body)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                answered += 1
            else:
                lost += 1
        except Exception:  # noqa: BLE001
            lost += 1
            connection.close()
        stop.wait(rnd.uniform(0, maxPause))
    connection.close()
    out[seed] = (answered, lost, connection.connects)


def run(clients: int, restarts: int, maxPause: float, handoff: bool) -> dict:  # type: ignore[type-arg]
    port = freePort()
    extra = [] if handoff else ["--no-connection-handoff"]
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful",
         "--port", f"tcp:{port}:interface=127.0.0.1", "--no-access-log", "--probation", "0",
         "--app", "tests.integration.app.root", *extra],
        stdout=subprocess.PIPE, cwd=ROOT, env=env(),
    )
    waitFor = Events(proc).waitFor

    current = waitFor(lambda e: e.get("phase") == "ready")["pid"]
    stop = threading.Event()
    results: dict[int, tuple[int, int, int]] = {}
    threads = [threading.Thread(target=client, args=(port, i, maxPause, stop, results)) for i in range(clients)]
    for thread in threads:
        thread.start()
    handoffs, readyToExit, moved = [], [], []
    try:
        time.sleep(2 * maxPause)
        for _ in range(restarts):
            signalled = time.time()
            os.kill(current, signal.SIGUSR2)
            ready = waitFor(lambda e: e.get("phase") == "child-ready" and e.get("pid") == current)
            sent = waitFor(lambda e: e.get("phase") in ("handoff-sent", "confirmed") and e.get("pid") == current)
            if sent["phase"] == "handoff-sent":
                moved.append(sent["moved"])
            gone = waitFor(lambda e: e.get("phase") == "parent-gone" and e.get("pid") == ready["childPID"])
            handoffs.append(ready["log_time"] - signalled)
            readyToExit.append(gone["log_time"] - ready["log_time"])
            current = ready["childPID"]
            time.sleep(2 * maxPause)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        os.kill(current, signal.SIGTERM)
        proc.wait(30)
    connects = [c for _, _, c in results.values()]
    return {
        "mode": "hand-off" if handoff else "--no-connection-handoff",
        "clients": clients,
        "restarts": restarts,
        "posts_answered": sum(a for a, _, _ in results.values()),
        "posts_lost": sum(lost for _, lost, _ in results.values()),
        "connections_opened": sum(connects),
        "connections_per_client_per_restart": round((sum(connects) - clients) / clients / restarts, 2),
        "connections_per_client_max": max(connects),
        "moved_per_restart": moved,
        "handoff_ms_median": round(statistics.median(handoffs) * 1000, 1),
        "ready_to_exit_ms_median": round(statistics.median(readyToExit) * 1000, 1),
        "ready_to_exit_ms_max": round(max(readyToExit) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--max-pause", type=float, default=1.5)
    args = parser.parse_args()
    rows = [run(args.clients, args.restarts, args.max_pause, handoff) for handoff in (False, True)]
    for row in rows:
        print(json.dumps(row))
    print()
    keys = [k for k in rows[0] if k != "mode"]
    print("| figure | " + " | ".join(r["mode"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(r[key]) for r in rows) + " |")


if __name__ == "__main__":
    main()
