"""
Requests per second of `twistd graceful` next to a plain twisted.web Site
serving the same resource, same access-log setting, in the same sitting.
Rounds alternate the two servers so drift on the machine hits both alike.

    python bench/throughput.py [--rounds 3] [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import freePort, startGraceful, startPlain, stop, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"graceful": [], "plain": []}
    for _ in range(args.rounds):
        for name, start in [("graceful", startGraceful), ("plain", startPlain)]:
            port = freePort()
            proc = start(port)
            try:
                wrk(port, 1, args.connections)  # warm up
                figures = wrk(port, args.seconds, args.connections)
            finally:
                stop(proc)
            if figures["socket_errors"] or figures["non2xx"]:
                raise SystemExit(f"{name}: errors during the run: {figures}")
            results[name].append(figures["rps"])
    graceful = statistics.median(results["graceful"])
    plain = statistics.median(results["plain"])
    # Each round runs the two servers back to back: the ratio within a round
    # is the least exposed to the machine's drift.
    paired = statistics.median(g / p for g, p in zip(results["graceful"], results["plain"]))
    summary = {
        "bench": "throughput",
        "graceful_rps": results["graceful"],
        "plain_rps": results["plain"],
        "median_graceful_rps": graceful,
        "median_plain_rps": plain,
        "ratio": round(graceful / plain, 3),
        "paired_ratio": round(paired, 3),
    }
    print(json.dumps(summary))
    print()
    print("| server | req/s per round | median |")
    print("|---|---|---|")
    print(f"| twistd graceful | {', '.join(f'{r:.0f}' for r in results['graceful'])} | {graceful:.0f} |")
    print(f"| plain Site | {', '.join(f'{r:.0f}' for r in results['plain'])} | {plain:.0f} |")
    print(f"| ratio of medians | | {summary['ratio']} |")
    print(f"| median ratio within a round | | {summary['paired_ratio']} |")


if __name__ == "__main__":
    main()
