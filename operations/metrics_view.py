"""The /metrics exposition: the process counters of ccgsc.metrics (added up over all processes
when PROMETHEUS_MULTIPROC_DIR is set) and gauges read from the database at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

import ccgsc.metrics  # noqa: F401  (registers the process metrics)
from operations import health


class DatabaseCollector(Collector):
    """Figures the database knows for the whole deployment, whichever process is scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sessions = GaugeMetricFamily(
            "ccgsc_sessions_connected",
            "Worker sessions connected, by kind and transport",
            labels=["kind", "transport"],
        )
        for key, n in health.connected_workers().items():
            if key != "total":
                kind, transport = key.split("_", 1)
                sessions.add_metric([kind, transport], n)
        yield sessions
        queues = GaugeMetricFamily(
            "ccgsc_queue_depth", "Task replicas by queue, and campaigns running", labels=["queue"]
        )
        for name, n in health.queue_depths().items():
            queues.add_metric([name], n)
        yield queues


def exposition() -> tuple[bytes, str]:
    db = CollectorRegistry(auto_describe=False)
    db.register(DatabaseCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
        return generate_latest(processes) + generate_latest(db), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(db), CONTENT_TYPE_LATEST
