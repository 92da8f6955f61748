"""Wire shapes: the app's sync format (CONTRACT section 4) and the service's native recovery API."""

from __future__ import annotations

from typing import Any

import msgspec

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
    practicePlans: list[Any] = []  # noqa: N815 - the app's field names
    planOccurrences: list[Any] = []  # noqa: N815
    planTemplates: list[Any] = []  # noqa: N815


class PushRequest(msgspec.Struct):
    changes: PushChanges
    lastSyncToken: str | None = None  # noqa: N815


class RawPushChanges(msgspec.Struct):
    """The same body with every record kept as its verbatim JSON bytes."""

    entries: list[msgspec.Raw] = []
    goals: list[msgspec.Raw] = []
    practicePlans: list[msgspec.Raw] = []  # noqa: N815
    planOccurrences: list[msgspec.Raw] = []  # noqa: N815
    planTemplates: list[msgspec.Raw] = []  # noqa: N815


class RawPushRequest(msgspec.Struct):
    changes: RawPushChanges


class Conflict(msgspec.Struct):
    entityId: str | None  # noqa: N815
    entityType: str  # noqa: N815
    reason: str


class PushStats(msgspec.Struct):
    entriesProcessed: int  # noqa: N815
    duplicatesPrevented: int  # noqa: N815
    goalsProcessed: int  # noqa: N815
    practicePlansProcessed: int  # noqa: N815
    planOccurrencesProcessed: int  # noqa: N815


class RecoverySummary(msgspec.Struct):
    """The service's own account of the push (the app's clients ignore it)."""

    uploadId: str  # noqa: N815
    counts: dict[str, int]
    userResolved: bool  # noqa: N815


class PushResponse(msgspec.Struct):
    success: bool
    syncToken: str  # noqa: N815
    conflicts: list[Conflict]
    stats: PushStats
    recovery: RecoverySummary


class PullResponse(msgspec.Struct):
    entries: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    practicePlans: list[dict[str, Any]]  # noqa: N815
    planOccurrences: list[dict[str, Any]]  # noqa: N815
    planTemplates: list[dict[str, Any]]  # noqa: N815
    syncToken: str  # noqa: N815
    timestamp: str


class SyncStatus(msgspec.Struct):
    lastSyncTime: str | None  # noqa: N815
    lastSyncToken: str | None  # noqa: N815
    deviceCount: int  # noqa: N815
    entityCounts: dict[str, int]  # noqa: N815
    userResolved: bool  # noqa: N815
