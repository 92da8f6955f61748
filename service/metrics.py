"""Prometheus metrics: records by outcome and entity type, uploads by source, upload latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.domain.outcomes import Receipt
from service.domain.records import ENTITY_TYPES
from service.domain.sources import Source

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS = Counter(
    "resync_records_total", "Records received, by outcome and entity type", ["outcome", "entity_type"],
    registry=REGISTRY,
)
UPLOADS = Counter("resync_uploads_total", "Uploads committed, by source", ["source"], registry=REGISTRY)
UPLOAD_SECONDS = Histogram(
    "resync_upload_duration_seconds",
    "Time to take one upload through the pipeline, queueing for the writer included",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


# The label of records whose entity type is none the service knows. Their own names are devices' input:
# as labels they would make a new series per name a device makes up, without bound.
UNKNOWN_ENTITY_TYPE = "unknown"


def observe_upload(source: Source, receipt: Receipt, seconds: float) -> None:
    UPLOADS.labels(source).inc()
    UPLOAD_SECONDS.labels(source).observe(seconds)
    for (entity_type, outcome), n in receipt.counts_by_type().items():
        RECORDS.labels(outcome, entity_type if entity_type in ENTITY_TYPES else UNKNOWN_ENTITY_TYPE).inc(n)


def render() -> bytes:
    return generate_latest(REGISTRY)
