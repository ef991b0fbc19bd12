"""
Tests for L{twisted_graceful._metrics}.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import prometheus_client.values
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import GracefulMetrics, MissingExtra
from twisted_graceful._metrics import ENV_DIRECTORY, ENV_OWNED, SAMPLE_INTERVAL, prepareDirectory, requirePrometheus


class FakeFactory:
    def __init__(self, inFlight: int, connections: int) -> None:
        self.inFlight, self.connections = inFlight, connections

    def inFlightCount(self) -> int:
        return self.inFlight

    def connectionCount(self) -> int:
        return self.connections


class FakeEndpoint:
    def __init__(self, inFlight: int, connections: int) -> None:
        self.factory = FakeFactory(inFlight, connections)


class FakeService:
    """
    What the metrics ask of a L{GracefulService}.
    """

    def __init__(self) -> None:
        self.generation = 3
        self.list = [FakeEndpoint(2, 5), FakeEndpoint(1, 1)]

    def endpoints(self) -> list[FakeEndpoint]:
        return self.list


class MetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # prometheus_client reads its directory from os.environ, and keeps
        # its files per process: a fresh directory and value class per test.
        self.directory = str(Path("metrics").absolute())
        os.mkdir(self.directory)
        self.environ = {ENV_DIRECTORY: self.directory}
        self.patch(os, "environ", dict(os.environ, **self.environ))
        self.patch(prometheus_client.values, "ValueClass", prometheus_client.values.MultiProcessValue())
        self.clock = Clock()
        self.service = FakeService()
        self.metrics = GracefulMetrics(self.service, self.clock, environ=self.environ)

    def samples(self) -> dict[str, float]:
        found = {}
        for family in text_string_to_metric_families(self.metrics.exposition().decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "pid")
                found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return found

    def test_events(self) -> None:
        """
        Drains, restarts by outcome and sockets handed over are counted from
        the service's log events.
        """
        for event in [
            {"phase": "drain-finished", "completed": 3, "abortedRequests": 1, "elapsed": 0.2},
            {"phase": "restart-refused"},
            {"phase": "restart-failed"},
            {"phase": "child-spawned", "endpoints": ["tcp:80:interface=0.0.0.0", "unix:/run/a.sock"]},
            {"phase": "handed-over"},
            {"phase": "drain-finished", "completed": 2, "abortedRequests": 0, "elapsed": 7.0},
            {"phase": "stopped"},
        ]:
            self.metrics(event)
        samples = self.samples()
        expected = {
                "twisted_graceful_drain_requests_completed_total": 5.0,
                "twisted_graceful_drain_requests_cut_total": 1.0,
                "twisted_graceful_drain_duration_seconds_sum": 7.2,
                "twisted_graceful_drain_duration_seconds_count": 2.0,
                "twisted_graceful_restarts_total{outcome=ok}": 1.0,
                "twisted_graceful_restarts_total{outcome=failed}": 1.0,
                "twisted_graceful_restarts_total{outcome=refused}": 1.0,
                "twisted_graceful_handover_sockets_total": 2.0,
        }
        self.assertEqual({k: samples.get(k) for k in expected}, expected)
        self.assertEqual(samples["twisted_graceful_drain_duration_seconds_bucket{le=0.25}"], 1.0)
        self.assertEqual(samples["twisted_graceful_drain_duration_seconds_bucket{le=10.0}"], 2.0)

    def test_sampled(self) -> None:
        """
        Requests in flight, open connections and the generation are sampled
        from the endpoints every second, from the start.
        """
        self.metrics.start()
        self.addCleanup(self.metrics.stop)
        samples = self.samples()
        self.assertEqual(
            (samples["twisted_graceful_requests_in_flight"], samples["twisted_graceful_connections_open"],
             samples["twisted_graceful_generation"]),
            (3.0, 6.0, 3.0),
        )
        self.service.list = []
        self.clock.advance(SAMPLE_INTERVAL)
        self.assertEqual(self.samples()["twisted_graceful_requests_in_flight"], 0.0)

    def test_namesPrefixed(self) -> None:
        self.metrics.start()
        self.addCleanup(self.metrics.stop)
        names = {family.name for family in text_string_to_metric_families(self.metrics.exposition().decode())}
        self.assertTrue(names)
        self.assertEqual({n for n in names if not n.startswith("twisted_graceful_")}, set())

    def test_finalStopRemovesOwnDirectory(self) -> None:
        """
        A stop with no successor removes the directory the library made; a
        stop after a hand-over leaves it to the successor; a directory of the
        user's is never removed.
        """
        for owned, handedOver, kept in [(True, False, False), (True, True, True), (False, False, True)]:
            directory = Path(self.mktemp())
            directory.mkdir()
            environ = {ENV_DIRECTORY: str(directory), **({ENV_OWNED: str(directory)} if owned else {})}
            self.patch(os, "environ", dict(os.environ, **environ))
            metrics = GracefulMetrics(self.service, self.clock, environ=environ)
            metrics.start()
            if handedOver:
                metrics({"phase": "handed-over"})
            metrics.stop()
            self.assertEqual(directory.exists(), kept, (owned, handedOver))

    def test_prepareDirectory(self) -> None:
        """
        An inherited directory is kept; otherwise a new one is made and
        named for the successors.
        """
        environ = {ENV_DIRECTORY: "/srv/metrics"}
        self.assertEqual(prepareDirectory(environ), "/srv/metrics")
        self.assertEqual(environ, {ENV_DIRECTORY: "/srv/metrics"})
        environ = {}
        made = prepareDirectory(environ)
        self.addCleanup(os.rmdir, made)
        self.assertTrue(os.path.isdir(made))
        self.assertEqual(environ, {ENV_DIRECTORY: made, ENV_OWNED: made})

    def test_resource(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"metrics"])
        body = self.metrics.resource().render(request)
        assert isinstance(body, bytes)
        self.assertIn(b"twisted_graceful_generation", body)
        [contentType] = request.responseHeaders.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"text/plain; version="), contentType)


class MissingTests(SynchronousTestCase):
    def test_missing(self) -> None:
        """
        Without C{prometheus_client}, the message names the extra.
        """
        saved: dict[str, Any] = {
            name: module for name, module in sys.modules.items()
            if name == "prometheus_client" or name.startswith("prometheus_client.")
        }
        self.addCleanup(sys.modules.update, saved)
        for name in saved:
            sys.modules[name] = None  # type: ignore[assignment]
        sys.modules.setdefault("prometheus_client", None)  # type: ignore[arg-type]
        with self.assertRaises(MissingExtra) as caught:
            requirePrometheus()
        self.assertIn("pip install 'twisted-graceful[metrics]'", str(caught.exception))
        self.assertEqual(caught.exception.extra, "metrics")
