"""The shapes a record takes on its way through the pipeline (CONTRACT sections 3, 6 and 7)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from service import jsontext


class EntityType(StrEnum):
    """The `sync_data.entity_type` values the service stores (the app's names for its documents).

    A device may send any other string: such a record is quarantined as `unknown_entity_type` under the
    name it came with, so fields that echo what a device sent stay `str`."""

    LOGBOOK_ENTRY = "logbook_entry"
    GOAL = "goal"
    PRACTICE_PLAN = "practice_plan"
    PLAN_OCCURRENCE = "plan_occurrence"
    PLAN_TEMPLATE = "plan_template"
    REPERTOIRE_ITEM = "repertoire_item"
    USER_PREFERENCES = "user_preferences"


LOGBOOK_ENTRY = EntityType.LOGBOOK_ENTRY
GOAL = EntityType.GOAL
PRACTICE_PLAN = EntityType.PRACTICE_PLAN
PLAN_OCCURRENCE = EntityType.PLAN_OCCURRENCE
PLAN_TEMPLATE = EntityType.PLAN_TEMPLATE
REPERTOIRE_ITEM = EntityType.REPERTOIRE_ITEM
USER_PREFERENCES = EntityType.USER_PREFERENCES

ENTITY_TYPES: tuple[EntityType, ...] = tuple(EntityType)
# A device's name for a type -> the EntityType, in one dict lookup (`EntityType(name)` costs ~20 times more,
# once per record).
ENTITY_TYPE_OF: dict[str, EntityType] = {t.value: t for t in EntityType}


class QuarantineReason(StrEnum):
    """Why a record is quarantined (CONTRACT section 7). Stable strings: clients and support staff filter
    on them, and `recovery_quarantine.reason` holds them."""

    UNKNOWN_USER = "unknown_user"
    AMBIGUOUS_EMAIL = "ambiguous_email"  # no user by id; several users share the email in different cases
    USER_MISMATCH = "user_mismatch"
    MISSING_ID = "missing_id"
    UNKNOWN_ENTITY_TYPE = "unknown_entity_type"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_VALUE = "invalid_value"
    MISSING_FIELD = "missing_field"
    INVALID_TIME = "invalid_time"
    FUTURE_TIME = "future_time"
    TOO_LARGE = "too_large"
    UNREADABLE_LINE = "unreadable_line"  # a replayed NDJSON line that is not a record (kept verbatim)


UNKNOWN_USER = QuarantineReason.UNKNOWN_USER
AMBIGUOUS_EMAIL = QuarantineReason.AMBIGUOUS_EMAIL
USER_MISMATCH = QuarantineReason.USER_MISMATCH
MISSING_ID = QuarantineReason.MISSING_ID
UNKNOWN_ENTITY_TYPE = QuarantineReason.UNKNOWN_ENTITY_TYPE
NOT_AN_OBJECT = QuarantineReason.NOT_AN_OBJECT
INVALID_VALUE = QuarantineReason.INVALID_VALUE
MISSING_FIELD = QuarantineReason.MISSING_FIELD
INVALID_TIME = QuarantineReason.INVALID_TIME
FUTURE_TIME = QuarantineReason.FUTURE_TIME
TOO_LARGE = QuarantineReason.TOO_LARGE
UNREADABLE_LINE = QuarantineReason.UNREADABLE_LINE


# D1's row limit (2,000,000 bytes): a stored document larger than this cannot go back to production.
MAX_DOCUMENT_BYTES = 2_000_000


class LogbookRow(msgspec.Struct, frozen=True):
    """The content columns of a `logbook_entries` row (times in epoch ms, lists and metadata as JSON text).

    The store adds `user_id`, `sync_version`, `checksum` and `device_id` when it writes the row.
    """

    id: str
    timestamp: int
    duration: int
    type: str
    instrument: str
    pieces: str
    techniques: str
    goal_ids: str
    notes: str | None
    mood: str | None
    tags: str
    session_id: str | None
    metadata: str | None
    created_at: int
    updated_at: int


class Normalised(msgspec.Struct, frozen=True):
    """A live record in the app's stored form, ready to be merged.

    The document is kept only as its stored text (`document()` decodes it): records cross from the
    normalising processes back to the server's, and a decoded copy would double what is pickled there,
    while the merge reads the document only to compare two versions of the same edit time."""

    entity_type: EntityType
    entity_id: str
    # CONTRACT section 5 checksum of `text`.
    checksum: str
    # The client's last-modified time (epoch ms) from updatedAt/updated_at; orders competing versions.
    updated_ms: int | None
    # The text stored in sync_data.data: the document exactly as the app would store it, as its
    # JSON.stringify writes it (JavaScript number spelling, integers beyond 2**53 as the doubles JSON.parse
    # makes, lone surrogates as `\udxxx`), with keys sorted, the text `checksum` is computed over.
    text: str
    # Logbook entries only: checksum of the document without id, user, times, device, version and
    # checksum fields, so the same session logged under two ids is recognised (CONTRACT section 8).
    content_key: str | None = None
    # Logbook entries only: the relational copy, or None when the legacy CHECKs would refuse it.
    logbook_row: LogbookRow | None = None
    # Logbook entries only: why `logbook_entries` refuses the row (None when it accepts it).
    logbook_refusal: str | None = None
    # Logbook entries only: the stored text alone gives back `updated_ms` and `content_key`
    # (`document_edit_ms`, `content_key_of_text`), so stored as a live row it needs no merge state row.
    text_holds_state: bool = False

    def document(self) -> dict[str, Any]:
        """The stored document, decoded from `text` (as the app reads it back)."""
        document: dict[str, Any] = jsontext.decode(self.text)
        return document


class Tombstone(msgspec.Struct, frozen=True):
    """A deletion: a record with a present `deletedAt`, or an id in a device's deleted list."""

    entity_type: EntityType
    entity_id: str
    deleted_at: str  # ISO-8601 with `Z` and milliseconds
    deleted_ms: int


class Rejection(msgspec.Struct, frozen=True):
    """A record that cannot go in. It is quarantined (kept verbatim) with this reason."""

    # The name the record came with: an unknown type is quarantined under it (see EntityType).
    entity_type: str
    entity_id: str | None
    reason: QuarantineReason
    field: str | None = None
    detail: str = ""


Normalisation = Normalised | Tombstone | Rejection
