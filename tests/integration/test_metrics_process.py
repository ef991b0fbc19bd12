"""
C{--metrics} on a real server: the successor of a restart reports what its
predecessor counted, the drain of the request that was in flight included,
as the predecessor logged it.
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
        slow = treq.get(f"{url}/slow?seconds=3", pool=freshPool(), timeout=30)
        await server.waitFor("the slow request", lambda e: e.get("testEvent") == "slow-received")
        server.signal(signal.SIGUSR2)
        successor = await server.waitFor(
            "the successor's ready", lambda e: e.get("phase") == "ready" and e.get("pid") != ready["pid"]
        )
        pids.append(successor["pid"])
        response = await slow
        assert response.code == 200
        drained = await server.waitFor(
            "the old process's drain", lambda e: e.get("phase") == "drain-finished" and e.get("pid") == ready["pid"]
        )
        await waitUntilGone(ready["pid"])
        response = await treq.get(f"{url}/metrics", pool=freshPool(), timeout=10)
        assert response.code == 200
        found = samples(await response.text())
        assert found["twisted_graceful_generation"] == 2.0
        assert found["twisted_graceful_restarts_total{outcome=ok}"] == 1.0
        assert found["twisted_graceful_restarts_total{outcome=failed}"] == 0.0
        # What the old process logged is what the successor reports (the
        # slow request completed during the drain, unless the successor took
        # longer than it to get ready).
        assert found["twisted_graceful_drain_requests_completed_total"] == drained["completed"]
        assert found["twisted_graceful_drain_requests_cut_total"] == drained["abortedRequests"] == 0
        assert found["twisted_graceful_drain_duration_seconds_count"] == 1.0
        assert found["twisted_graceful_handover_sockets_total"] == 1.0
        os.kill(successor["pid"], signal.SIGTERM)
        await waitUntilGone(successor["pid"])
    finally:
        stopServer(server)
        killAll(pids)
