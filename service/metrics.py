"""Prometheus metrics: records by outcome and entity type, uploads by source, upload latency; HTTP requests by
method, route template and status (Litestar's Prometheus plugin, `http_metrics`). All on prometheus_client's
default registry, which the plugin's scrape (`MetricsController`, at /metrics) reads.

One process keeps them in memory. Under `serve --workers N` the parent sets PROMETHEUS_MULTIPROC_DIR before
the workers start (see `multiprocess_directory`): prometheus_client then keeps every worker's values in files
named by its pid there, and a scrape, whichever worker answers it, sums them all (the plugin's controller
reads them with a MultiProcessCollector). The one gauge, the plugin's requests in progress, sums live
processes (`livesum`): a worker that exits is marked dead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import REGISTRY, Counter, Histogram, multiprocess

from service.domain.outcomes import Receipt
from service.domain.records import ENTITY_TYPES
from service.domain.sources import Source

METRICS_PATH = "/metrics"
__all__ = ["REGISTRY", "MetricsController", "http_metrics", "multiprocess_directory", "observe_upload",
           "process_exiting"]

RECORDS = Counter("resync_records_total", "Records received, by outcome and entity type", ["outcome", "entity_type"])
UPLOADS = Counter("resync_uploads_total", "Uploads committed, by source", ["source"])
UPLOAD_SECONDS = Histogram(
    "resync_upload_duration_seconds",
    "Time to take one upload through the pipeline, queueing for the writer included",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# The label of records whose entity type is none the service knows. Their own names are devices' input:
# as labels they would make a new series per name a device makes up, without bound.
UNKNOWN_ENTITY_TYPE = "unknown"


def observe_upload(source: Source, receipt: Receipt, seconds: float) -> None:
    UPLOADS.labels(source).inc()
    UPLOAD_SECONDS.labels(source).observe(seconds)
    for (entity_type, outcome), n in receipt.counts_by_type().items():
        RECORDS.labels(outcome, entity_type if entity_type in ENTITY_TYPES else UNKNOWN_ENTITY_TYPE).inc(n)


MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read once, as prometheus_client does when it is imported: the mode of this process's values.
MULTIPROCESS = MULTIPROCESS_DIR_ENV in os.environ


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh, empty directory for one `serve --workers N` run, in PROMETHEUS_MULTIPROC_DIR for the workers
    it starts; removed afterwards, so no run adds another's counts."""
    with tempfile.TemporaryDirectory(prefix="resync-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_ENV] = directory
        try:
            yield directory
        finally:
            del os.environ[MULTIPROCESS_DIR_ENV]


def process_exiting() -> None:
    """A worker's bookkeeping on its way out (its counters stay: they are counts it made)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream


def http_metrics() -> PrometheusConfig:
    """Requests by method, route template (never the raw path: ids would make a series each) and status,
    their duration, and how many are in progress: `resync_requests_total`, `resync_request_duration_seconds`,
    `resync_requests_in_progress`. The scrape itself is not counted."""
    return PrometheusConfig(app_name="resync", prefix="resync", group_path=True, exclude=[f"^{METRICS_PATH}$"])


class MetricsController(PrometheusController):
    """The scrape: this process's values, or under `serve --workers N` every process's added up."""

    path = METRICS_PATH
    include_in_schema = False
