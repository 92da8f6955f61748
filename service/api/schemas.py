"""Wire shapes: the app's sync format (CONTRACT section 4) and the service's native recovery API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from service.domain.accounts import AuthProvider, Role
from service.domain.outcomes import MergeReason, Outcome, OutcomeCounts, RecordResult, values_of
from service.domain.records import QuarantineReason

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
    entityType: str  # as the device sent it (an unknown type is quarantined under its own name)
    # The record's reason, or its outcome should it have none.
    reason: Annotated[str, values_of(QuarantineReason, MergeReason, Outcome)]


class PushStats(msgspec.Struct):
    entriesProcessed: int
    duplicatesPrevented: int
    goalsProcessed: int
    practicePlansProcessed: int
    planOccurrencesProcessed: int


class RecoverySummary(msgspec.Struct):
    """The service's own account of the push (the app's clients ignore it)."""

    uploadId: str
    counts: OutcomeCounts
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
    counts: OutcomeCounts
    results: list[RecordResult]


# ---- the app's other routes its web client calls ---------------------------------------------------


class UserProfile(msgspec.Struct):
    """`GET /api/user/me`, as the app answers it from `users`."""

    id: str
    email: str
    displayName: str | None
    authProvider: AuthProvider | None
    role: Role
    createdAt: str | None


class SyncStatus(msgspec.Struct):
    """`GET /api/sync/status`: the shape the app's client declares, then the service's own fields."""

    lastSyncTime: str | None
    syncToken: str | None
    pendingChanges: int
    deviceCount: int
    entityCount: int
    lastSyncToken: str | None
    entityCounts: dict[str, int]
    userResolved: bool


class GoalItem(msgspec.Struct):
    id: str
    title: Any
    description: Any
    type: Any
    targetValue: Any
    currentValue: Any
    targetDate: Any
    status: Any
    scoreId: Any
    measures: Any
    practicePlan: Any
    milestones: Any
    relatedSessions: int
    createdAt: int | None
    updatedAt: int | None


class GoalList(msgspec.Struct):
    goals: list[GoalItem]


class RepertoireItemView(msgspec.Struct):
    """A repertoire item as the app's `GET /api/repertoire` lists it (times in epoch seconds)."""

    id: str
    scoreId: str
    status: Any
    difficultyRating: Any
    personalNotes: Any
    referenceLinks: list[Any]
    practiceCount: int
    totalPracticeTime: int | float
    lastPracticed: Any
    createdAt: int | None
    updatedAt: int | None


class RepertoireList(msgspec.Struct):
    items: list[RepertoireItemView]


class RepertoireCore(msgspec.Struct):
    id: str
    scoreId: str
    status: Any
    difficultyRating: Any
    personalNotes: Any
    referenceLinks: list[Any]
    createdAt: int | None
    updatedAt: int | None


class RecentSession(msgspec.Struct):
    timestamp: Any
    duration: Any
    notes: Any


class RepertoireStatsBody(msgspec.Struct):
    practiceCount: int
    totalPracticeTime: int | float
    avgSessionDuration: int | float
    lastPracticed: Any
    firstPracticed: Any
    recentSessions: list[RecentSession]


class RepertoireStats(msgspec.Struct):
    repertoire: RepertoireCore
    stats: RepertoireStatsBody


RepertoireStatus = Literal["planned", "learning", "polished", "dropped"]


class RepertoireCreate(msgspec.Struct, forbid_unknown_fields=False):
    """`POST /api/repertoire` (the app's body)."""

    scoreId: str
    status: RepertoireStatus | None = None
    difficultyRating: Annotated[float, msgspec.Meta(ge=1, le=5)] | None = None
    personalNotes: str | None = None
    referenceLinks: list[str] | None = None


class RepertoireUpdate(msgspec.Struct):
    """`PUT /api/repertoire/{scoreId}` (the app's body: every field optional)."""

    status: RepertoireStatus | None = None
    difficultyRating: Annotated[float, msgspec.Meta(ge=1, le=5)] | None = None
    personalNotes: str | None = None
    referenceLinks: list[str] | None = None


class RepertoireCreated(msgspec.Struct):
    id: str
    scoreId: str
    status: str
    difficultyRating: int | float | None
    personalNotes: str | None
    referenceLinks: list[str]
    createdAt: int
    updatedAt: int


class Message(msgspec.Struct):
    message: str


class Dissociated(msgspec.Struct):
    message: str
    preservedLogs: int
    pieceTitle: str
    pieceComposer: str


class PreferencesUpdate(msgspec.Struct):
    """`PUT /api/user/preferences`: the fields the app keeps (it drops every other one)."""

    theme: Literal["light", "dark", "auto"] | None = None
    notificationSettings: dict[str, Any] | None = None
    primaryInstrument: str | None = None


class PreferencesSaved(msgspec.Struct):
    success: bool
    preferences: dict[str, Any]
