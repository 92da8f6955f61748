"""Outcome names and the receipt that counts them (CONTRACT section 8: every record, one outcome)."""

from __future__ import annotations

from collections import Counter

import msgspec

INSERTED = "inserted"
UPDATED = "updated"
DUPLICATE = "duplicate"
KEPT_EXISTING = "kept_existing"
DELETED = "deleted"
SUPPRESSED = "suppressed"
CONTENT_DUPLICATE = "content_duplicate"
QUARANTINED = "quarantined"

OUTCOMES: tuple[str, ...] = (
    INSERTED,
    UPDATED,
    DUPLICATE,
    KEPT_EXISTING,
    DELETED,
    SUPPRESSED,
    CONTENT_DUPLICATE,
    QUARANTINED,
)


class RecordResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one received record."""

    entity_type: str
    entity_id: str | None
    outcome: str
    reason: str | None = None
    field: str | None = None
    duplicate_of: str | None = None
    # Set when the record is stored in sync_data but the legacy logbook_entries CHECKs refuse its row.
    note: str | None = None


class Receipt(msgspec.Struct, frozen=True):
    """The answer for one upload: a result per record, in the order received, and their counts."""

    results: list[RecordResult]

    @property
    def received(self) -> int:
        return len(self.results)

    def counts(self) -> dict[str, int]:
        """Counts for every outcome (zeros included), so the sum always equals `received`."""
        tally = Counter(r.outcome for r in self.results)
        return {outcome: tally.get(outcome, 0) for outcome in OUTCOMES}

    def counts_by_type(self) -> dict[tuple[str, str], int]:
        return dict(Counter((r.entity_type, r.outcome) for r in self.results))
