"""Prometheus metrics: request counters kept by the API, queue and job gauges read from Redis on scrape.

Each app has its own registry (``create_app`` may run several times in one process, e.g. in tests). The
stream gauges are the autoscaling signal: ``spikescan_stream_backlog{stream="infer"}`` is the number of chips
not yet finished, whatever the number of API replicas that are scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.jobs import JobStore
from workers.queue import WorkStream


class QueueCollector(Collector):
    def __init__(self, store: JobStore, streams: list[WorkStream]) -> None:
        self.store = store
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(f"spikescan_stream_{name}", help_, labels=["stream"])
            for name, help_ in (
                ("backlog", "entries not yet acknowledged (waiting + in progress)"),
                ("pending", "entries delivered to a worker, not yet acknowledged"),
                ("consumers", "workers registered on the stream's group"),
                ("dead", "entries moved to the dead-letter list"),
            )
        }
        for stream in self.streams:
            for name, value in stream.lag().items():
                families[name].add_metric([stream.name], value)
        yield from families.values()
        jobs = GaugeMetricFamily("spikescan_jobs", "jobs known to Redis, by status", labels=["status"])
        for status, n in self.store.count_by_status().items():
            jobs.add_metric([status], n)
        yield jobs


class Metrics:
    def __init__(self, store: JobStore, streams: list[WorkStream]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spikescan_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "spikescan_upload_bytes", "bytes of scenes accepted by upload", registry=self.registry
        )
        self.jobs_submitted = Counter("spikescan_jobs_submitted", "jobs accepted", registry=self.registry)
        self.registry.register(QueueCollector(store, streams))

    def render(self) -> bytes:
        return generate_latest(self.registry)
