"""
C{--metrics} on a real server: the successor of a restart reports what its
predecessor counted, the drain of the request that was in flight included.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from ._client import freshPool, portOf
from ._procs import killAll, waitUntilGone
from ._server import startServer, stopServer


def samples(text: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


@pytest_twisted.ensureDeferred
async def test_metricsAcrossRestart(tmp_path: Path) -> None:
    server = startServer(
        tmp_path, "--port", "tcp:0:interface=127.0.0.1", "--metrics", "/metrics", "--app", "tests.integration.app.root"
    )
    pids = []
    try:
        ready = await server.waitForPhase("ready")
        pids.append(ready["pid"])
        url = f"http://127.0.0.1:{portOf(ready)}"
        slow = treq.get(f"{url}/slow?seconds=1", pool=freshPool(), timeout=20)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        server.signal(signal.SIGUSR2)
        successor = await server.waitFor(
            "the successor's ready", lambda e: e.get("phase") == "ready" and e.get("pid") != ready["pid"]
        )
        pids.append(successor["pid"])
        response = await slow
        assert response.code == 200
        await waitUntilGone(ready["pid"])
        response = await treq.get(f"{url}/metrics", pool=freshPool(), timeout=10)
        assert response.code == 200
        found = samples(await response.text())
        assert found["twisted_graceful_generation"] == 2.0
        assert found["twisted_graceful_restarts_total{outcome=ok}"] == 1.0
        assert found["twisted_graceful_restarts_total{outcome=failed}"] == 0.0
        assert found["twisted_graceful_drain_requests_completed_total"] == 1.0
        assert found["twisted_graceful_drain_requests_cut_total"] == 0.0
        assert found["twisted_graceful_drain_duration_seconds_count"] == 1.0
        assert found["twisted_graceful_handover_sockets_total"] == 1.0
        os.kill(successor["pid"], signal.SIGTERM)
        await waitUntilGone(successor["pid"])
    finally:
        stopServer(server)
        killAll(pids)
