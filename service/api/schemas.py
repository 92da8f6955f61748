"""Wire shapes: the app's sync format (CONTRACT section 4) and the service's native recovery API."""

from __future__ import annotations

from typing import Any

import msgspec

from service.domain.outcomes import RecordResult

# The app's push groups and the entity type each holds.
PUSH_GROUPS: dict[str, str] = {
    "entries": "logbook_entry",
    "goals": "goal",
    "practicePlans": "practice_plan",
    "planOccurrences": "plan_occurrence",
    "planTemplates": "plan_template",
}


class PushChanges(msgspec.Struct, omit_defaults=True):
    """Records are taken as any JSON value: one malformed record is quarantined, not the whole push."""

    entries: list[Any] = []
    goals: list[Any] = []
    practicePlans: list[Any] = []
    planOccurrences: list[Any] = []
    planTemplates: list[Any] = []


class PushRequest(msgspec.Struct):
    changes: PushChanges
    lastSyncToken: str | None = None


class RawPushChanges(msgspec.Struct):
    """The same body with every record kept as its verbatim JSON bytes."""

    entries: list[msgspec.Raw] = []
    goals: list[msgspec.Raw] = []
    practicePlans: list[msgspec.Raw] = []
    planOccurrences: list[msgspec.Raw] = []
    planTemplates: list[msgspec.Raw] = []


class RawPushRequest(msgspec.Struct):
    changes: RawPushChanges


class Conflict(msgspec.Struct):
    entityId: str | None
    entityType: str
    reason: str


class PushStats(msgspec.Struct):
    entriesProcessed: int
    duplicatesPrevented: int
    goalsProcessed: int
    practicePlansProcessed: int
    planOccurrencesProcessed: int


class RecoverySummary(msgspec.Struct):
    """The service's own account of the push (the app's clients ignore it)."""

    uploadId: str
    counts: dict[str, int]
    userResolved: bool


class PushResponse(msgspec.Struct):
    success: bool
    syncToken: str
    conflicts: list[Conflict]
    stats: PushStats
    recovery: RecoverySummary


class PullResponse(msgspec.Struct):
    entries: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    practicePlans: list[dict[str, Any]]
    planOccurrences: list[dict[str, Any]]
    planTemplates: list[dict[str, Any]]
    syncToken: str
    timestamp: str


class SyncStatus(msgspec.Struct):
    lastSyncTime: str | None
    lastSyncToken: str | None
    deviceCount: int
    entityCounts: dict[str, int]
    userResolved: bool


# ---- native recovery API ---------------------------------------------------------------------------


class RecoveryRecord(msgspec.Struct):
    entity_type: str
    data: Any


class RecoveryUploadRequest(msgspec.Struct):
    records: list[RecoveryRecord] = []
    device_id: str | None = None
    # Ids the device deleted, per entity type: each counts as deleted at the time of the upload.
    deleted: dict[str, list[Any]] = {}
    dry_run: bool = False


class RawRecoveryRecord(msgspec.Struct):
    entity_type: Any = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class RawRecoveryUploadRequest(msgspec.Struct):
    records: list[RawRecoveryRecord] = []


class RecoveryUploadResponse(msgspec.Struct):
    upload_id: str
    dry_run: bool
    received: int
    counts: dict[str, int]
    results: list[RecordResult]
