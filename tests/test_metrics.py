"""Prometheus metrics: label values come from closed sets, never from what a device made up."""

from __future__ import annotations

from service import metrics
from service.domain.outcomes import QUARANTINED, Receipt, RecordResult
from service.domain.records import LOGBOOK_ENTRY, UNKNOWN_ENTITY_TYPE
from service.domain.sources import Source


def _records(entity_type: str) -> float:
    labels = {"outcome": QUARANTINED, "entity_type": entity_type}
    return metrics.REGISTRY.get_sample_value("resync_records_total", labels) or 0.0


def test_an_unknown_entity_type_is_counted_under_one_label() -> None:
    made_up = [f"made-up-type-{i}" for i in range(3)]
    receipt = Receipt([RecordResult(name, "id", QUARANTINED, UNKNOWN_ENTITY_TYPE) for name in made_up]
                      + [RecordResult(LOGBOOK_ENTRY, "e1", QUARANTINED, UNKNOWN_ENTITY_TYPE)])
    unknown, known = _records(metrics.UNKNOWN_ENTITY_TYPE), _records(LOGBOOK_ENTRY)
    metrics.observe_upload(Source.RECOVERY, receipt, 0.01)
    assert (_records(metrics.UNKNOWN_ENTITY_TYPE), _records(LOGBOOK_ENTRY)) == (unknown + 3, known + 1)
    assert all(_records(name) == 0.0 for name in made_up)
