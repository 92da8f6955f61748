"""Deduplication and merge (CONTRACT section 8): given the stored state of a batch's keys, plan the writes.

Pure: the store loads `StoredEntity` for every key of the batch (one query), `plan_merge` decides, the
store applies the `MergePlan` in one transaction. Records of one batch are applied in order, each seeing
the effect of the ones before it, so a batch gives the same rows as the same records sent one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from service.domain import outcomes as oc
from service.domain.checksum import canonical_json
from service.domain.outcomes import RecordResult
from service.domain.records import LOGBOOK_ENTRY, LogbookRow, Normalised, Rejection, Tombstone

EntityKey = tuple[str, str]  # (entity_type, entity_id) within one user


class StoredEntity(msgspec.Struct):
    """What the database holds for one key before the batch (all None/False when it holds nothing)."""

    row_id: str | None = None  # sync_data.id, when a row exists (live or soft-deleted)
    checksum: str | None = None
    version: int = 0
    live: bool = False
    data: str | None = None  # sync_data.data as stored, for archiving a superseded version
    updated_ms: int | None = None
    deleted_ms: int | None = None  # tombstone time: the row's, or one remembered for a missing row
    content_key: str | None = None
    duplicate_of: str | None = None


class SyncWrite(msgspec.Struct):
    """The final sync_data row for a key the batch changed. `row_id` None means a new row."""

    entity_type: str
    entity_id: str
    row_id: str | None
    data: str
    checksum: str
    version: int
    deleted_ms: int | None
    logbook_row: LogbookRow | None


class StateWrite(msgspec.Struct):
    """The final merge bookkeeping for a key the batch touched."""

    entity_type: str
    entity_id: str
    updated_ms: int | None
    deleted_ms: int | None
    content_key: str | None
    duplicate_of: str | None


class ArchivedVersion(msgspec.Struct):
    """A version that lost a merge; kept by the service, never discarded."""

    entity_type: str
    entity_id: str
    data: str
    checksum: str
    updated_ms: int | None
    reason: str


class Repeat(msgspec.Struct, frozen=True):
    """A byte-identical re-upload of a record that normalised to `checksum` before. The pipeline only
    passes it on when the stored row is live with that checksum, so it is a duplicate without being
    normalised again (devices re-push their whole history on every sync)."""

    entity_type: str
    entity_id: str
    checksum: str
    raw: bytes  # normalised again, should the stored row turn out to have changed


class Quarantined(msgspec.Struct):
    index: int
    rejection: Rejection


class MergePlan(msgspec.Struct):
    results: list[RecordResult]
    sync_writes: list[SyncWrite]
    state_writes: list[StateWrite]
    archived: list[ArchivedVersion]
    quarantined: list[Quarantined]


class _Working(msgspec.Struct):
    """A key's state as the batch changes it."""

    stored: StoredEntity
    data: str | None
    checksum: str | None
    version: int
    live: bool
    present: bool  # a sync_data row exists for the key (stored before, or written by this batch)
    updated_ms: int | None
    deleted_ms: int | None
    content_key: str | None
    duplicate_of: str | None
    logbook_row: LogbookRow | None = None
    row_changed: bool = False
    state_changed: bool = False


def encode_document(data: dict[str, Any]) -> str:
    """The text stored in sync_data.data: JSON as the app's JSON.stringify writes it (keys sorted)."""
    return canonical_json(data)


def _newer(candidate: int | None, than: int | None) -> bool:
    """True when `candidate` is strictly later. An unknown time never beats anything; any known time
    beats an unknown one. Ties keep what is stored."""
    if candidate is None:
        return False
    return than is None or candidate > than


class _Planner:
    def __init__(
        self, stored: dict[EntityKey, StoredEntity], live_content: dict[str, str]
    ) -> None:
        self._stored = stored
        # content_key -> entity_id of the user's live logbook entries (the batch keeps it current)
        self._live_content = live_content
        self._working: dict[EntityKey, _Working] = {}
        self.results: list[RecordResult] = []
        self.archived: list[ArchivedVersion] = []
        self.quarantined: list[Quarantined] = []

    def _state(self, key: EntityKey) -> _Working:
        working = self._working.get(key)
        if working is None:
            s = self._stored.get(key) or StoredEntity()
            working = _Working(
                stored=s,
                data=s.data,
                checksum=s.checksum,
                version=s.version,
                live=s.live,
                present=s.row_id is not None,
                updated_ms=s.updated_ms,
                deleted_ms=s.deleted_ms,
                content_key=s.content_key,
                duplicate_of=s.duplicate_of,
            )
            self._working[key] = working
        return working

    def _result(self, record: Normalised | Tombstone, outcome: str, **extra: Any) -> None:
        self.results.append(
            RecordResult(entity_type=record.entity_type, entity_id=record.entity_id, outcome=outcome, **extra)
        )

    def _archive(self, key: EntityKey, data: str, checksum: str, updated_ms: int | None, reason: str) -> None:
        self.archived.append(ArchivedVersion(key[0], key[1], data, checksum, updated_ms, reason))

    def quarantine(self, index: int, rejection: Rejection) -> None:
        self.quarantined.append(Quarantined(index, rejection))
        self.results.append(
            RecordResult(
                entity_type=rejection.entity_type,
                entity_id=rejection.entity_id,
                outcome=oc.QUARANTINED,
                reason=rejection.reason,
                field=rejection.field,
            )
        )

    def tombstone(self, t: Tombstone) -> None:
        key = (t.entity_type, t.entity_id)
        w = self._state(key)
        if w.live:
            if _newer(w.updated_ms, t.deleted_ms):
                # An edit newer than the deletion stays; the deletion is what lost.
                tomb = encode_document({"id": t.entity_id, "deletedAt": t.deleted_at})
                self._archive(key, tomb, "", t.deleted_ms, "deletion older than stored edit")
                self._result(t, oc.KEPT_EXISTING, reason="stored_version_newer")
                return
            self._set_content(key, w, live=False)
            w.live = False
            w.deleted_ms = t.deleted_ms
            w.version += 1
            w.row_changed = w.state_changed = True
            self._result(t, oc.DELETED)
            return
        if w.deleted_ms is not None:
            if t.deleted_ms > w.deleted_ms:
                # The latest deletion counts, so the outcome is the same whichever deletion came first.
                w.deleted_ms = t.deleted_ms
                w.state_changed = True
                w.row_changed = w.row_changed or w.present
            self._result(t, oc.DUPLICATE)
            return
        # Nothing live: remember the tombstone so an older live copy cannot bring the entry back.
        w.deleted_ms = t.deleted_ms
        w.state_changed = True
        w.row_changed = w.row_changed or w.present
        self._result(t, oc.DELETED)

    def repeat(self, r: Repeat) -> None:
        w = self._state((r.entity_type, r.entity_id))
        if not (w.live and w.checksum == r.checksum):
            raise ValueError(f"{r.entity_type} {r.entity_id!r} is not stored with checksum {r.checksum}")
        self.results.append(RecordResult(entity_type=r.entity_type, entity_id=r.entity_id, outcome=oc.DUPLICATE))

    def live_record(self, n: Normalised) -> None:
        key = (n.entity_type, n.entity_id)
        w = self._state(key)
        data = n.text  # encoded once, by the normaliser
        if not w.live and w.deleted_ms is not None:
            if not _newer(n.updated_ms, w.deleted_ms):
                # Stays deleted. The deleted row keeps the newest version older than the deletion, so
                # the rows are the same whichever came first, the deletion or the copies.
                if not w.present or (w.checksum != n.checksum and _newer(n.updated_ms, w.updated_ms)):
                    if w.present and w.data is not None and w.checksum is not None:
                        self._archive(key, w.data, w.checksum, w.updated_ms, "superseded by newer version")
                    self._write(key, w, n, data, live=False)
                elif w.checksum != n.checksum:
                    self._archive(key, data, n.checksum, n.updated_ms, "older than deletion")
                self._result(n, oc.SUPPRESSED, reason="deleted_later")
                return
            if w.present and not _newer(n.updated_ms, w.updated_ms):
                # Never bring back a version older than the one the deleted row already holds.
                self._archive(key, data, n.checksum, n.updated_ms, "older than stored version")
                self._result(n, oc.SUPPRESSED, reason="deleted_later")
                return
            outcome = oc.UPDATED if w.present else oc.INSERTED
            self._write(key, w, n, data)  # an edit newer than the deletion brings it back
            w.deleted_ms = None
            self._result(n, outcome, note=n.logbook_refusal)
            return
        if not w.live:
            duplicate_of = self._content_duplicate_of(n, w)
            if duplicate_of is not None:
                w.content_key = n.content_key
                w.duplicate_of = duplicate_of
                w.updated_ms = n.updated_ms
                w.state_changed = True
                self._result(n, oc.CONTENT_DUPLICATE, duplicate_of=duplicate_of)
                return
            outcome = oc.UPDATED if w.present else oc.INSERTED
            self._write(key, w, n, data)
            self._result(n, outcome, note=n.logbook_refusal)
            return
        if w.checksum == n.checksum or self._same_version(w, n):
            self._result(n, oc.DUPLICATE)
            return
        if _newer(n.updated_ms, w.updated_ms):
            assert w.data is not None and w.checksum is not None
            self._archive(key, w.data, w.checksum, w.updated_ms, "superseded by newer version")
            self._write(key, w, n, data)
            self._result(n, oc.UPDATED, note=n.logbook_refusal)
            return
        self._archive(key, data, n.checksum, n.updated_ms, "older than stored version")
        self._result(n, oc.KEPT_EXISTING, reason="stored_version_newer")

    @staticmethod
    def _same_version(w: _Working, n: Normalised) -> bool:
        """A device re-pushing an entry it pulled: the app's rules turn the pulled ISO `created_at` into
        epoch ms, so the checksum differs while the content and the edit time are the same."""
        return n.content_key is not None and n.content_key == w.content_key and n.updated_ms == w.updated_ms

    def _content_duplicate_of(self, n: Normalised, w: _Working) -> str | None:
        if n.entity_type != LOGBOOK_ENTRY or n.content_key is None:
            return None
        other = self._live_content.get(n.content_key)
        if other is not None and other != n.entity_id:
            return other
        return None

    def _set_content(self, key: EntityKey, w: _Working, *, live: bool) -> None:
        if key[0] != LOGBOOK_ENTRY or w.content_key is None:
            return
        if live:
            self._live_content.setdefault(w.content_key, key[1])
        elif self._live_content.get(w.content_key) == key[1]:
            del self._live_content[w.content_key]

    def _write(self, key: EntityKey, w: _Working, n: Normalised, data: str, *, live: bool = True) -> None:
        if w.live:
            self._set_content(key, w, live=False)
        w.data, w.checksum, w.updated_ms = data, n.checksum, n.updated_ms
        w.content_key, w.duplicate_of = n.content_key, None
        w.logbook_row = n.logbook_row
        w.version += 1
        w.live = live
        w.present = True
        w.row_changed = w.state_changed = True
        if live:
            self._set_content(key, w, live=True)

    def writes(self) -> tuple[list[SyncWrite], list[StateWrite]]:
        sync_writes: list[SyncWrite] = []
        state_writes: list[StateWrite] = []
        for (entity_type, entity_id), w in self._working.items():
            if w.row_changed and w.data is not None and w.checksum is not None:
                sync_writes.append(
                    SyncWrite(
                        entity_type=entity_type,
                        entity_id=entity_id,
                        row_id=w.stored.row_id,
                        data=w.data,
                        checksum=w.checksum,
                        version=max(w.version, 1),
                        deleted_ms=None if w.live else w.deleted_ms,
                        logbook_row=w.logbook_row,
                    )
                )
            if w.state_changed:
                state_writes.append(
                    StateWrite(entity_type, entity_id, w.updated_ms, w.deleted_ms, w.content_key, w.duplicate_of)
                )
        return sync_writes, state_writes


def plan_merge(
    records: Sequence[Normalised | Tombstone | Rejection | Repeat],
    stored: dict[EntityKey, StoredEntity],
    live_content: dict[str, str],
) -> MergePlan:
    """Decide every record's outcome, in order, and the writes that follow from them.

    `stored` has an entry for every key in `records` the database knows; `live_content` maps the
    content keys of the batch's logbook entries to the ids of live entries that already have them.
    """
    planner = _Planner(stored, dict(live_content))
    for index, record in enumerate(records):
        if isinstance(record, Rejection):
            planner.quarantine(index, record)
        elif isinstance(record, Tombstone):
            planner.tombstone(record)
        elif isinstance(record, Repeat):
            planner.repeat(record)
        else:
            planner.live_record(record)
    sync_writes, state_writes = planner.writes()
    return MergePlan(planner.results, sync_writes, state_writes, planner.archived, planner.quarantined)
