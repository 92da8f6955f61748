"""Typed rows every storage engine returns and takes: the storage interface's vocabulary.

No driver's row type (sqlite3.Row, an asyncpg Record) ever leaves an engine; what crosses the interface
is one of these Structs, a domain type (`service.domain.merge`), or a plain value. Times are the app's
text forms as stored (`YYYY-MM-DD HH:MM:SS` for the service's own tables, ISO-Z for `deleted_at`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from service.domain.accounts import AuthProvider, Role
from service.domain.merge import EntityKey, StoredEntity
from service.domain.outcomes import ArchiveReason, OutcomeCounts, keys_of
from service.domain.owners import EmailMatch, UserRecord
from service.domain.progress import RecoveryState
from service.domain.records import EntityType, QuarantineReason
from service.domain.sources import Source

# ---- users ---------------------------------------------------------------------------------------

__all__ = ["EmailMatch", "UserRecord"]  # re-exported: the owner types are the domain's


class UserProfile(msgspec.Struct):
    """The `users` columns the app's `GET /api/user/me` answers with."""

    id: str
    email: str
    display_name: str | None
    auth_provider: AuthProvider | None
    role: Role | None
    created_at: str | None


class NewUser(msgspec.Struct):
    """A `users` row the CLI adds (as the app would on sign-up)."""

    id: str
    email: str
    display_name: str | None = None
    role: Role | None = None


# ---- the app's sync rows -----------------------------------------------------------------------------


class LiveDocument(msgspec.Struct):
    """A live `sync_data` document, as a pull returns it (in change order)."""

    entity_type: str
    data: str


class StoredDocument(msgspec.Struct):
    """A live `sync_data` document of one entity type, with its row times."""

    entity_id: str
    data: str
    created_at: str | None
    updated_at: str | None


class SyncRow(msgspec.Struct):
    """A `sync_data` row, live or a tombstone (`deleted_at` set), as the live-sync socket sends it.
    `seq` is None only for rows the app wrote without one (never sent)."""

    entity_id: str
    data: str
    seq: int | None
    deleted_at: str | None
    created_at: str | None = None
    updated_at: str | None = None


class SyncMetadata(msgspec.Struct):
    last_sync_token: str | None
    last_sync_time: str | None


# ---- what one upload writes ------------------------------------------------------------------------


class KnownRaw(msgspec.Struct, frozen=True):
    """A kept raw record the repeat lookup found: what it normalised to, and whether it came from the
    device asking (raw rows never change, so that still holds when the upload is written)."""

    checksum: str
    from_device: bool


class RawRecordRow(msgspec.Struct):
    """A record kept verbatim (`checksum` None for a deletion)."""

    entity_type: str
    entity_id: str | None
    raw: str
    raw_sha256: str
    checksum: str | None


class QuarantineRow(msgspec.Struct):
    """A record that cannot go in, kept with why."""

    entity_type: str
    entity_id: str | None
    raw: str
    reason: QuarantineReason
    field: str | None
    detail: str


class StoredResponse(msgspec.Struct):
    """The answer stored under an idempotency key, with the body's hash it answered."""

    request_sha256: str
    response: bytes


# ---- progress and support --------------------------------------------------------------------------


class DeviceProgress(msgspec.Struct):
    device_id: str
    first_upload_at: str
    last_upload_at: str
    declared_complete: bool
    declared_at: str | None
    expected: Annotated[dict[str, int], keys_of(EntityType)] | None  # declared: entity types only
    received: dict[str, int]  # every type the device sent, an unknown one (quarantined) included


class UserProgress(msgspec.Struct):
    user_id: str
    email: str | None
    exists: bool
    state: RecoveryState
    first_upload_at: str | None
    last_upload_at: str | None
    counts: OutcomeCounts
    # Outer keys as received: an unknown entity type's records are counted (quarantined) under it.
    counts_by_entity_type: dict[str, OutcomeCounts]
    quarantined_waiting: int
    archived_waiting: int
    devices: list[DeviceProgress]


class LedgerEntry(msgspec.Struct):
    upload_id: str
    user_id: str
    device_id: str | None
    source: Source
    file_name: str | None
    payload_sha256: str
    received: int
    counts: OutcomeCounts
    created_at: str


class QuarantinedRecord(msgspec.Struct):
    id: int
    entity_type: str  # as the record came: an unknown type is quarantined under its own name
    entity_id: str | None
    reason: QuarantineReason
    field: str | None
    detail: str
    raw: Any
    upload_id: str
    device_id: str | None
    quarantined_at: str
    resolved_at: str | None


class RedrivableRecord(msgspec.Struct):
    """An unresolved quarantined record that may be re-driven into a user's account (its raw text)."""

    id: int
    entity_type: str
    raw: str
    device_id: str | None


class UserListItem(msgspec.Struct):
    user_id: str
    email: str
    role: Role | None
    state: RecoveryState
    last_upload_at: str | None


class SummaryFigures(msgspec.Struct):
    """The support summary: users per state, records per outcome, recent uploads, waiting quarantine."""

    users_by_state: dict[str, int]
    records_by_outcome: dict[str, int]
    uploads_last_hour: int
    quarantined_waiting: int
    quarantine_owners: int


class HourlyActivity(msgspec.Struct):
    hour: str  # "YYYY-MM-DD HH" (UTC), as the ledger's times are written
    uploads: int
    records: int


class ArchivedConflict(msgspec.Struct):
    """A version that lost a merge and waits for review, with the version that was kept (None when the
    key has no stored row any more)."""

    id: int
    entity_type: str
    entity_id: str
    reason: ArchiveReason
    archived_at: str
    archived_data: str
    kept_data: str | None
    kept_deleted_at: str | None


class ArchiveTotals(msgspec.Struct):
    archived: int  # versions that lost a merge, across all users
    waiting: int  # of them, not reviewed yet


class Declaration(msgspec.Struct):
    declared_at: str
    expected: dict[str, int]
    matched: bool


# ---- replay ------------------------------------------------------------------------------------------


class Checkpoint(msgspec.Struct, frozen=True):
    records_done: int
    finished: bool


# ---- renormalise -------------------------------------------------------------------------------------


class StoredSyncRow(msgspec.Struct):
    """A `sync_data` row as renormalise reads it."""

    id: str
    entity_type: str
    entity_id: str
    data: str
    checksum: str
    version: int | None
    deleted_at: str | None
    device_id: str | None


class EntityStateRow(msgspec.Struct):
    """The service's merge state of one key (`recovery_entity_state`)."""

    entity_type: str
    entity_id: str
    updated_ms: int | None
    deleted_ms: int | None
    content_key: str | None
    duplicate_of: str | None


class KeptRawRecord(msgspec.Struct):
    """A kept live raw record (not a deletion), by its row id."""

    id: int
    entity_type: str
    entity_id: str
    raw: str
    checksum: str


# content_key -> the logbook_entries.timestamp of an entry that holds it, or None: what the search for
# the content's live holders looks at (`WriteUnit.load_live_content`).
ContentProbes = Mapping[str, int | None]


class BatchState(msgspec.Struct):
    """What the merge of one user's batch reads before it plans (`WriteUnit.load_batch_state`)."""

    stored: dict[EntityKey, StoredEntity]  # as `load_state`
    live_content: dict[str, list[str]]  # as `load_live_content`, of the given and the stored content keys
    logbook_ids_elsewhere: set[str]  # as `logbook_ids_of_other_users`, of the batch's logbook keys
