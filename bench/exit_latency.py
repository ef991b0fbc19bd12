"""
How long after its last response a draining `twistd graceful` process is
gone: a request of 0.3 s is in flight at SIGTERM; the client notes when the
response ends, then waits for the process to exit.

    python bench/exit_latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import time

from _common import freePort, startGraceful, waitForEvent


def once() -> float:
    port = freePort()
    proc = startGraceful(port, "--app", "app.slow")
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /slow?seconds=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    proc.send_signal(signal.SIGTERM)
    started = waitForEvent(proc, lambda e: e.get("phase") == "drain-started", 10)
    if started["inFlight"] != 1:
        raise SystemExit(f"the request was not in flight at SIGTERM: {started}")
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    lastResponse = time.monotonic()
    proc.stdout.read()  # type: ignore[union-attr]
    proc.wait(10)
    exited = time.monotonic()
    client.close()
    if b"slow" not in data:
        raise SystemExit(f"incomplete response: {data!r}")
    return exited - lastResponse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    latencies = [once() * 1000 for _ in range(args.runs)]
    summary = {
        "bench": "exit_latency_ms",
        "runs": args.runs,
        "median": round(statistics.median(latencies), 1),
        "max": round(max(latencies), 1),
        "all": [round(x, 1) for x in latencies],
    }
    print(json.dumps(summary))
    print()
    print("| runs | median ms | max ms |")
    print("|---|---|---|")
    print(f"| {args.runs} | {summary['median']} | {summary['max']} |")


if __name__ == "__main__":
    main()
