# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics (the C{metrics} extra, C{prometheus_client}), named
C{twisted_graceful_*}, kept across restarts.

Every generation of a server writes its metrics in one directory
(prometheus_client's multiprocess mode, C{PROMETHEUS_MULTIPROC_DIR}, which
successors inherit), and the serving process reports them all: the requests
an old process completed or cut while it drained after a hand-over are
counted, though that process is gone when they are scraped.

The counts come from the service's own log events (C{phase} and its
fields), so that what is logged and what is counted cannot differ; gauges
are sampled from the endpoints every L{SAMPLE_INTERVAL} seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterable, MutableMapping

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from ._extras import missingExtra

#: Where the metrics of every generation are written.
ENV_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

#: Set when the library made that directory (and removes it at the final
#: stop).
ENV_OWNED = "TWISTED_GRACEFUL_METRICS_DIR"

#: Seconds between two samples of the gauges.
SAMPLE_INTERVAL = 1.0

#: The bounds of the drain duration histogram, in seconds.
DRAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: C{outcome} of C{twisted_graceful_restarts_total}, by the log event that
#: ends a restart request.
OUTCOMES = {"handed-over": "ok", "restart-failed": "failed", "restart-refused": "refused"}


def prepareDirectory(environ: MutableMapping[str, str]) -> str:
    """
    Choose the metrics directory before C{prometheus_client} is imported:
    the one in C{environ} (inherited from a predecessor, or the user's),
    else a new one that successors inherit.

    @return: The directory.
    """
    directory = environ.get(ENV_DIRECTORY)
    if not directory:
        directory = tempfile.mkdtemp(prefix="twisted-graceful-metrics-")
        environ[ENV_DIRECTORY] = environ[ENV_OWNED] = directory
    return directory


def requirePrometheus() -> Any:
    """
    Import C{prometheus_client}, with its values kept in the metrics
    directory (multiprocess mode) even if it was imported before the
    directory was named.

    @raise MissingExtra: It is not installed.
    """
    try:
        import prometheus_client
        import prometheus_client.multiprocess
        import prometheus_client.values
    except ImportError as e:
        missing = missingExtra("--metrics", e)
        raise (missing if missing is not None else e) from None
    values = prometheus_client.values
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    return prometheus_client


class MetricsService(Service):
    """
    Counts while the service runs: a child of the L{GracefulService}, which
    stops it after the drain and the shutdown hooks.
    """

    def __init__(self, metrics: GracefulMetrics) -> None:
        self.metrics = metrics

    def startService(self) -> None:
        super().startService()
        self.metrics.start()

    def stopService(self) -> None:
        super().stopService()
        self.metrics.stop()


@implementer(ILogObserver)
class GracefulMetrics:
    """
    The metrics of one process of a L{GracefulService}.

    @param service: The service whose endpoints are sampled.
    @param clock: Schedules the samples.
    @param environ: Where the metrics directory is named.
    """

    def __init__(self, service: Any, clock: Any, environ: MutableMapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ
        self.directory = prepareDirectory(self._environ)
        client = requirePrometheus()
        self._client = client
        self.registry = client.CollectorRegistry()
        client.multiprocess.MultiProcessCollector(self.registry, path=self.directory)
        own = client.CollectorRegistry(auto_describe=True)
        self.inFlight = client.Gauge(
            "twisted_graceful_requests_in_flight", "Requests being served, in every live generation.",
            multiprocess_mode="livesum", registry=own,
        )
        self.connections = client.Gauge(
            "twisted_graceful_connections_open", "Open client connections, in every live generation.",
            multiprocess_mode="livesum", registry=own,
        )
        self.generation = client.Gauge(
            "twisted_graceful_generation", "The generation that serves: 1, then one more per restart.",
            multiprocess_mode="livemax", registry=own,
        )
        self.completed = client.Counter(
            "twisted_graceful_drain_requests_completed", "Requests that completed during a drain.", registry=own,
        )
        self.cut = client.Counter(
            "twisted_graceful_drain_requests_cut", "Requests cut at a drain's deadline.", registry=own,
        )
        self.drainDuration = client.Histogram(
            "twisted_graceful_drain_duration_seconds", "How long each endpoint's drain took.",
            buckets=DRAIN_BUCKETS, registry=own,
        )
        self.restarts = client.Counter(
            "twisted_graceful_restarts", "Restart requests, by outcome (ok, failed, refused).",
            ["outcome"], registry=own,
        )
        self.handedOverSockets = client.Counter(
            "twisted_graceful_handover_sockets", "Listening sockets handed to a successor.", registry=own,
        )
        for outcome in OUTCOMES.values():
            self.restarts.labels(outcome=outcome)
        self._service = service
        self._spawnedSockets = 0
        self._handedOver = False
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = clock

    def start(self) -> None:
        """
        Count log events and sample the gauges, until L{stop}.
        """
        globalLogPublisher.addObserver(self)
        self._sampler.start(SAMPLE_INTERVAL)

    def stop(self) -> None:
        """
        Stop counting; at a final stop (no successor took over), remove the
        metrics directory if the library made it.
        """
        globalLogPublisher.removeObserver(self)
        if self._sampler.running:
            self._sampler.stop()
        self.inFlight.set(0)
        self.connections.set(0)
        if not self._handedOver and self._environ.get(ENV_OWNED) == self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def sample(self) -> None:
        endpoints = list(self._service.endpoints())
        self.inFlight.set(sum(e.factory.inFlightCount() for e in endpoints))
        self.connections.set(sum(e.factory.connectionCount() for e in endpoints))
        self.generation.set(self._service.generation)

    def __call__(self, event: LogEvent) -> None:
        phase = event.get("phase")
        if phase == "drain-finished":
            self.completed.inc(event.get("completed", 0))
            self.cut.inc(event.get("abortedRequests", 0))
            self.drainDuration.observe(event.get("elapsed", 0.0))
        elif phase == "child-spawned":
            self._spawnedSockets = len(event.get("endpoints", ()))
        elif phase == "parent-gone":
            parent = event.get("parentPID")
            if parent is not None:
                # Its live gauges no longer count; its counters still do.
                self._client.multiprocess.mark_process_dead(parent, self.directory)
        if phase in OUTCOMES:
            self.restarts.labels(outcome=OUTCOMES[phase]).inc()
            if phase == "handed-over":
                self._handedOver = True
                self.handedOverSockets.inc(self._spawnedSockets)

    def exposition(self) -> bytes:
        """
        Every generation's metrics, in the Prometheus text format.
        """
        return self._client.generate_latest(self.registry)  # type: ignore[no-any-return]

    def resource(self) -> Resource:
        """
        A resource answering L{exposition}.
        """
        return MetricsResource(self)


class MetricsResource(Resource):
    """
    Serves the metrics in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, metrics: GracefulMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", self._metrics._client.CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return self._metrics.exposition()


def metricNames(exposition: bytes) -> Iterable[str]:
    """
    The names of the samples in C{exposition}.
    """
    for line in exposition.decode().splitlines():
        if line and not line.startswith("#"):
            yield line.split("{", 1)[0].split(" ", 1)[0]
