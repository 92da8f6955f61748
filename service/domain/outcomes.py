"""Outcome names and the receipt that counts them (CONTRACT section 8: every record, one outcome)."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Annotated

import msgspec

from service.domain.records import QuarantineReason


class Outcome(StrEnum):
    """What happened to one received record (the OpenAPI document lists them)."""

    INSERTED = "inserted"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    KEPT_EXISTING = "kept_existing"
    DELETED = "deleted"
    SUPPRESSED = "suppressed"
    CONTENT_DUPLICATE = "content_duplicate"
    QUARANTINED = "quarantined"


INSERTED = Outcome.INSERTED
UPDATED = Outcome.UPDATED
DUPLICATE = Outcome.DUPLICATE
KEPT_EXISTING = Outcome.KEPT_EXISTING
DELETED = Outcome.DELETED
SUPPRESSED = Outcome.SUPPRESSED
CONTENT_DUPLICATE = Outcome.CONTENT_DUPLICATE
QUARANTINED = Outcome.QUARANTINED

OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)




class MergeReason(StrEnum):
    """Why a record did not replace the stored version (the `reason` of kept_existing and suppressed)."""

    # The stored version's edit time is later than the record's.
    STORED_VERSION_NEWER = "stored_version_newer"
    # Both carry the same edit time but different content: the stored one is kept (ties keep what is
    # stored), and the record is archived. Distinct from the above, so support sees the tie.
    SAME_UPDATED_AT_DIFFERENT_CONTENT = "same_updated_at_different_content"
    # The entry was deleted later than this version was edited.
    DELETED_LATER = "deleted_later"


def values_of(*enums: type[StrEnum] | None) -> msgspec.Meta:
    """For a `str` field whose values are those of several StrEnums (and null, for a None among them): the
    OpenAPI document lists them as its `enum`. The field cannot be typed as their union: msgspec (and so
    Litestar) takes at most one string enum in a union."""
    values: list[str | None] = [None if m is None else m.value for e in enums for m in (e or [None])]
    return msgspec.Meta(extra_json_schema={"extra": {"enum": values}})


def keys_of(enum: type[StrEnum]) -> msgspec.Meta:
    """For a `dict[str, ...]` field whose keys are members of `enum`: the OpenAPI document lists them as
    its `propertyNames`."""
    return msgspec.Meta(
        extra_json_schema={"extra": {"property_names": {"type": "string", "enum": [m.value for m in enum]}}}
    )


# Counts per outcome.
OutcomeCounts = Annotated[dict[str, int], keys_of(Outcome)]


# Why a record got its outcome, in its answer: a QuarantineReason (quarantined), a MergeReason
# (kept_existing, suppressed), else none.
ResultReason = Annotated[str | None, values_of(QuarantineReason, MergeReason, None)]


class ArchiveReason(StrEnum):
    """Why a version was archived (`recovery_archived_versions.reason`, shown to support staff)."""

    SUPERSEDED = "superseded by newer version"  # the held version lost to a newer one
    SAME_EDIT_TIME = "same edit time as the stored version"  # a tie: the stored version is kept
    OLDER_THAN_STORED = "older than stored version"
    DELETION_OLDER_THAN_EDIT = "deletion older than stored edit"  # a deletion the stored edit outlives
    OLDER_THAN_DELETION = "older than deletion"
    RENORMALISED = "renormalised: stored under earlier rules"  # `renormalise` rewrote the stored row


class RecordResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one received record."""

    entity_type: str
    entity_id: str | None
    outcome: Outcome
    reason: ResultReason = None
    field: str | None = None
    duplicate_of: str | None = None
    # What else the support reader should know: that the record is stored in sync_data only because
    # logbook_entries refuses its row (the legacy CHECKs, or an id another user's row holds), or that a
    # content duplicate became the live entry because of it.
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
