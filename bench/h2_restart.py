"""
HTTP/2 through restarts: h2load (nghttp2's load tool, which does not retry
a refused stream) loads an `ssl:` port by ALPN while K restarts happen at
even intervals; prints h2load's request counts for each run.

A server that drains HTTP/2 with one GOAWAY naming the last stream it has
seen refuses the streams a client opened while that frame was on its way:
h2load counts them as failed.  The two-step GOAWAY loses none.

    python bench/h2_restart.py [--runs 3] [--seconds 30] [--restarts 3]
        [--clients 4] [--streams 10]

Restarts are spaced so that each old process has drained before the next
(a connection that always has streams open is told to go away after 5 s).
Needs h2load (Debian package `nghttp2-client`) and the `http2` extra.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, TWISTD, env, freePort, waitForEvent


def certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    return key, cert


def run(seconds: float, restarts: int, clients: int, streams: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = certificate(Path(tmp))
        port = freePort()
        server = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logger=twisted_graceful.jsonlog.observer", "graceful",
             "--port", f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
             "--app", "app.root", "--no-access-log"],
            stdout=subprocess.PIPE, cwd=ROOT, env=env(),
        )
        pids = [waitForEvent(server, lambda e: e.get("phase") == "ready", 30)["pid"]]
        load = subprocess.Popen(
            ["h2load", "-D", str(int(seconds)), "-c", str(clients), "-m", str(streams), "-t", "1",
             f"https://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE, text=True,
        )
        handOvers: list[float] = []

        def restartAll() -> None:
            for generation in range(2, restarts + 2):
                time.sleep(seconds / (restarts + 1))
                asked = time.monotonic()
                signalPid(pids[-1], signal.SIGUSR2)
                ready = waitForEvent(
                    server, lambda e: e.get("phase") == "ready" and e.get("generation") == generation, 30
                )
                handOvers.append(time.monotonic() - asked)
                pids.append(ready["pid"])

        restarter = threading.Thread(target=restartAll)
        restarter.start()
        out, _ = load.communicate()
        restarter.join()
        signalPid(pids[-1], signal.SIGTERM)
        server.wait(30)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    if counts is None:
        raise SystemExit(f"h2load printed no request counts:\n{out}")
    total, started, done, succeeded, failed, errored = map(int, counts.groups())
    return {
        "restarts": restarts, "done": done, "succeeded": succeeded, "failed": failed, "errored": errored,
        "handOverSeconds": [round(h, 3) for h in handOvers],
    }


def signalPid(pid: int, signum: int) -> None:
    import os

    os.kill(pid, signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    results = [run(args.seconds, args.restarts, args.clients, args.streams) for _ in range(args.runs)]
    for result in results:
        print(json.dumps(result))
    print()
    print("| run | restarts | requests done | succeeded | failed | errored |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['restarts']} | {r['done']} | {r['succeeded']} | {r['failed']} | {r['errored']} |")
    sys.exit(0)


if __name__ == "__main__":
    main()
