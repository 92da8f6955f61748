"""Deduplication and merge (CONTRACT section 8): given the stored state of a batch's keys, plan the writes.

Pure: the store loads `StoredEntity` for every key of the batch (one query), `plan_merge` decides, the
store applies the `MergePlan` in one transaction. Records of one batch are applied in order, each seeing
the effect of the ones before it, so a batch gives the same rows as the same records sent one by one.

Each key's fate follows from its own versions and deletions alone: the latest edit wins, ties keep what
is stored, a deletion wins over every edit not newer than it. On top of that, logbook content is kept
once: a key whose winning version has the content another key's live row holds is a content duplicate
of that key (it gets no live row of its own). Which of the keys sharing a content holds the row is the
first to arrive (CONTRACT: "kept once, the other id recorded as its duplicate"); that the content stays
live while any of them is alive does not depend on the order: when the holder is deleted or edited to
other content, one of its duplicates becomes the live entry.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from service import jsontext
from service.domain import outcomes as oc
from service.domain.checksum import canonical_json
from service.domain.documents import lowercase_enums
from service.domain.normalise import CONTENT_KEY_IGNORED
from service.domain.outcomes import ArchiveReason, MergeReason, Outcome, RecordResult
from service.domain.records import LOGBOOK_ENTRY, LogbookRow, Normalised, Rejection, Tombstone

EntityKey = tuple[str, str]  # (entity_type, entity_id) within one user


class StoredEntity(msgspec.Struct):
    """What the database holds for one key before the batch (all None/False when it holds nothing)."""

    row_id: str | None = None  # sync_data.id, when a row exists (live or soft-deleted)
    checksum: str | None = None
    version: int = 0
    live: bool = False
    data: str | None = None  # sync_data.data as stored, for archiving a superseded version
    # The client's edit time of the key's version: the one its row holds, or, for a content duplicate,
    # the duplicate's own version (which has no row).
    updated_ms: int | None = None
    deleted_ms: int | None = None  # tombstone time: the row's, or one remembered for a missing row
    content_key: str | None = None
    duplicate_of: str | None = None
    # The service keeps a merge state row for the key; without one, its state is what its row gives.
    has_state: bool = False


class SyncWrite(msgspec.Struct):
    """The final sync_data row for a key the batch changed. `row_id` None means a new row."""

    entity_type: str
    entity_id: str
    row_id: str | None
    data: str
    checksum: str
    version: int
    deleted_ms: int | None
    # The logbook_entries row to keep in step with it (live or soft-deleted); None when the table
    # refuses it, or when only the deletion changed (the row's content stays as it is).
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
    """A version that lost a merge; kept by the service, never discarded (once per distinct content:
    the store skips a version the archive already holds for the key)."""

    entity_type: str
    entity_id: str
    data: str
    checksum: str
    updated_ms: int | None
    reason: ArchiveReason


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


class MergeLookups(Protocol):
    """What the planner may need beyond the batch's own keys. Asked only when it is needed (a content
    duplicate's holder leaves that content, or a duplicate is deleted or edited), which is rare."""

    def duplicates_of(self, entity_id: str) -> Mapping[EntityKey, StoredEntity]:
        """The stored state of the user's logbook entries recorded as content duplicates of `entity_id`."""
        ...

    def duplicate_version(self, key: EntityKey, content_key: str, updated_ms: int | None) -> Normalised | None:
        """The version a content duplicate holds (it has no row of its own), normalised again from the
        raw record it came in as; None when none is kept."""
        ...

    def logbook_ids_held_elsewhere(self, entity_ids: Collection[str]) -> Collection[str]:
        """Which of these ids another user's logbook_entries row holds (the table's id is global)."""
        ...


class NoLookups:
    """Lookups for a batch whose keys are all new: nothing is stored anywhere."""

    def duplicates_of(self, entity_id: str) -> Mapping[EntityKey, StoredEntity]:
        return {}

    def duplicate_version(self, key: EntityKey, content_key: str, updated_ms: int | None) -> Normalised | None:
        return None

    def logbook_ids_held_elsewhere(self, entity_ids: Collection[str]) -> Collection[str]:
        return ()


class _Working(msgspec.Struct):
    """A key's state as the batch changes it."""

    stored: StoredEntity
    data: str | None
    checksum: str | None
    version: int
    live: bool  # a live sync_data row exists for the key
    present: bool  # a sync_data row exists for the key (stored before, or written by this batch)
    updated_ms: int | None
    deleted_ms: int | None
    content_key: str | None
    duplicate_of: str | None  # set only while the key is alive without a row of its own
    logbook_row: LogbookRow | None = None
    pending: Normalised | None = None  # a content duplicate's version, once known
    row_changed: bool = False
    state_changed: bool = False
    # The key's live row alone gives back its merge state (see `_Planner.writes`).
    row_holds_state: bool = False


def encode_document(data: dict[str, Any]) -> str:
    """The text stored in sync_data.data: JSON as the app's JSON.stringify writes it (keys sorted)."""
    return canonical_json(data)


def _newer(candidate: int | None, than: int | None) -> bool:
    """True when `candidate` is strictly later. An unknown time never beats anything; any known time
    beats an unknown one. Ties keep what is stored."""
    if candidate is None:
        return False
    return than is None or candidate > than


# What the app's web client fills in when it pushes back an entry it pulled (frontendv2's
# sanitizeEntryForSync writes `notes || null`, `mood || null`, `list || []`, `goalIds: []` beside
# `goal_ids`, a piece's `composer || null`, and a metadata `source`): for these, absent, null, "" and []
# say the same thing.
_DEFAULTED_SCALARS = ("notes", "mood")
_DEFAULTED_LISTS = ("pieces", "techniques", "tags", "goal_ids", "goalIds")


def round_trip_form(entity_type: str, document: Mapping[str, Any]) -> str | None:
    """The document as compared to tell whether two versions with the same edit time are the same
    version: without the fields that identify or time a copy (those the content key leaves out), with
    enums lowercased as /api/sync/pull renders them, and, for logbook entries, without what the app's
    client adds on a round trip (see above). None when it cannot be encoded.

    Two versions equal in this form differ only in how a client wrote them, not in what they say, so a
    pulled entry pushed back is a duplicate. Nothing is lost by not storing the client's spelling: ties
    keep the stored version anyway, and the raw record is kept verbatim.
    """
    doc = lowercase_enums(entity_type, {k: v for k, v in document.items() if k not in CONTENT_KEY_IGNORED})
    if entity_type == LOGBOOK_ENTRY:
        for field in _DEFAULTED_SCALARS:
            if not doc.get(field):
                doc.pop(field, None)
        for field in _DEFAULTED_LISTS:
            if doc.get(field) in (None, []):
                doc.pop(field, None)
        if isinstance(doc.get("pieces"), list):
            doc["pieces"] = [
                {k: v for k, v in piece.items() if not (k == "composer" and not v)} if isinstance(piece, dict)
                else piece
                for piece in doc["pieces"]
            ]
        doc["metadata"] = _client_metadata(doc.get("metadata"))
    try:
        return canonical_json(doc)
    except (TypeError, RecursionError):
        return None


def _client_metadata(metadata: object) -> object:
    """An entry's metadata as the app's client sends it back (its sanitizeMetadata)."""
    if not isinstance(metadata, dict):
        return {"source": "manual"}
    if metadata.get("planId") and metadata.get("planOccurrenceId"):
        return {**metadata, "source": "practice_plan"}
    if not metadata.get("source"):
        return {**metadata, "source": "manual"}
    return metadata


def _stored_round_trip_form(entity_type: str, data: str | None) -> str | None:
    if data is None:
        return None
    try:
        document = jsontext.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    return round_trip_form(entity_type, document) if isinstance(document, dict) else None


class _Planner:
    def __init__(
        self,
        stored: Mapping[EntityKey, StoredEntity],
        live_content: Mapping[str, Collection[str]],
        lookups: MergeLookups,
        logbook_ids: Collection[str],
        live_checksums: Mapping[EntityKey, str],
    ) -> None:
        self._stored = dict(stored)
        self._live_checksums = live_checksums
        # content_key -> ids of the user's logbook entries whose live row holds it (the batch keeps it
        # current; loaded for every content key the batch can touch)
        self._holders: dict[str, set[str]] = {c: set(ids) for c, ids in live_content.items()}
        self._lookups = lookups
        # Ids of logbook_entries rows another user holds, asked for the batch's ids at once.
        self._foreign = set(lookups.logbook_ids_held_elsewhere(logbook_ids)) if logbook_ids else set()
        self._foreign_checked = set(logbook_ids)
        self._working: dict[EntityKey, _Working] = {}
        # holder id -> ids of the logbook entries recorded as its content duplicates (working state)
        self._duplicates: dict[str, set[str]] = {}
        self._duplicates_loaded: set[str] = set()
        self.results: list[RecordResult] = []
        self.archived: list[ArchivedVersion] = []
        self.quarantined: list[Quarantined] = []
        # Working states are made as records reach them (their order is the order of the writes, and
        # so of the seq values); the index of duplicates starts from what is stored.
        for key, entity in self._stored.items():
            self._index_stored_duplicate(key, entity)

    # ---- state ------------------------------------------------------------------------------------

    def _state(self, key: EntityKey) -> _Working:
        working = self._working.get(key)
        if working is None:
            s = self._stored.get(key) or StoredEntity()
            duplicate_of = s.duplicate_of
            if duplicate_of is not None and (s.live or not self._alive(s.updated_ms, s.deleted_ms)):
                # Recorded by an earlier version of these rules for a duplicate deleted since: it has
                # nothing to point at any more.
                duplicate_of = None
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
                duplicate_of=duplicate_of,
                row_holds_state=s.live and not s.has_state,
            )
            self._working[key] = working
            if duplicate_of is None and s.duplicate_of is not None:
                self._duplicates.get(s.duplicate_of, set()).discard(key[1])
        return working

    def _index_stored_duplicate(self, key: EntityKey, entity: StoredEntity) -> None:
        if entity.duplicate_of is not None and key[0] == LOGBOOK_ENTRY:
            self._duplicates.setdefault(entity.duplicate_of, set()).add(key[1])

    @staticmethod
    def _alive(updated_ms: int | None, deleted_ms: int | None) -> bool:
        return deleted_ms is None or _newer(updated_ms, deleted_ms)

    def _set_duplicate(self, key: EntityKey, w: _Working, holder: str | None) -> None:
        if w.duplicate_of == holder:
            return
        if w.duplicate_of is not None:
            self._duplicates.get(w.duplicate_of, set()).discard(key[1])
        if holder is not None:
            self._duplicates.setdefault(holder, set()).add(key[1])
        w.duplicate_of = holder
        w.state_changed = True

    def _duplicates_of(self, entity_id: str) -> list[str]:
        """The ids recorded as content duplicates of `entity_id`, stored ones loaded on first use."""
        if entity_id not in self._duplicates_loaded:
            self._duplicates_loaded.add(entity_id)
            for key, entity in sorted(self._lookups.duplicates_of(entity_id).items()):
                if key not in self._stored and key not in self._working:
                    self._stored[key] = entity
                    self._index_stored_duplicate(key, entity)
        return [
            d for d in sorted(self._duplicates.get(entity_id, ()))
            if self._state((LOGBOOK_ENTRY, d)).duplicate_of == entity_id
        ]

    def _pending(self, key: EntityKey, w: _Working) -> Normalised | None:
        """A content duplicate's version: seen in this batch, or normalised again from its raw record."""
        if w.pending is None and w.content_key is not None:
            w.pending = self._lookups.duplicate_version(key, w.content_key, w.updated_ms)
        return w.pending

    def _held_elsewhere(self, entity_id: str) -> bool:
        """Whether another user's logbook_entries row holds this id (asked once per id)."""
        if entity_id not in self._foreign_checked:
            self._foreign_checked.add(entity_id)
            self._foreign.update(self._lookups.logbook_ids_held_elsewhere([entity_id]))
        return entity_id in self._foreign

    def _holder(self, content_key: str | None, exclude: str) -> str | None:
        """Another logbook entry whose live row holds this content (the smallest id, for determinism)."""
        holders = self._holders.get(content_key) if content_key is not None else None
        if not holders:
            return None
        if exclude not in holders:
            return min(holders)
        others = holders - {exclude}
        return min(others) if others else None

    # ---- results and archive ----------------------------------------------------------------------

    def _result(self, record: Normalised | Tombstone, outcome: Outcome, **extra: Any) -> None:
        self.results.append(
            RecordResult(record.entity_type, record.entity_id, outcome, **extra) if extra
            else RecordResult(record.entity_type, record.entity_id, outcome)
        )

    def _archive(
        self, key: EntityKey, data: str, checksum: str, updated_ms: int | None, reason: ArchiveReason
    ) -> None:
        self.archived.append(ArchivedVersion(key[0], key[1], data, checksum, updated_ms, reason))

    def _archive_held(self, key: EntityKey, w: _Working, replaced_by: str) -> None:
        """The version a row holds is about to be replaced: keep it."""
        if w.present and w.data is not None and w.checksum is not None and w.checksum != replaced_by:
            self._archive(key, w.data, w.checksum, w.updated_ms, ArchiveReason.SUPERSEDED)

    def _archive_duplicate_version(self, key: EntityKey, w: _Working, replaced_by: str) -> None:
        """A content duplicate's own version (it has no row) is about to be replaced by a newer one."""
        if w.duplicate_of is None:
            return
        pending = self._pending(key, w)
        if pending is not None and pending.checksum != replaced_by:
            self._archive(key, pending.text, pending.checksum, pending.updated_ms,
                          ArchiveReason.SUPERSEDED)

    def _lose(self, key: EntityKey, n: Normalised, data: str, stored_ms: int | None) -> None:
        """`n` is not newer than the key's version and differs from it: kept as it is, `n` archived."""
        if n.updated_ms == stored_ms:
            self._archive(key, data, n.checksum, n.updated_ms, ArchiveReason.SAME_EDIT_TIME)
            self._result(n, oc.KEPT_EXISTING, reason=MergeReason.SAME_UPDATED_AT_DIFFERENT_CONTENT)
        else:
            self._archive(key, data, n.checksum, n.updated_ms, ArchiveReason.OLDER_THAN_STORED)
            self._result(n, oc.KEPT_EXISTING, reason=MergeReason.STORED_VERSION_NEWER)

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

    # ---- records ----------------------------------------------------------------------------------

    def tombstone(self, t: Tombstone) -> None:
        key = (t.entity_type, t.entity_id)
        w = self._state(key)
        if (w.live or w.duplicate_of is not None) and _newer(w.updated_ms, t.deleted_ms):
            # An edit newer than the deletion stays; the deletion is what lost.
            tomb = encode_document({"id": t.entity_id, "deletedAt": t.deleted_at})
            self._archive(key, tomb, "", t.deleted_ms, ArchiveReason.DELETION_OLDER_THAN_EDIT)
            self._result(t, oc.KEPT_EXISTING, reason=MergeReason.STORED_VERSION_NEWER)
            return
        if w.live:
            promoted = self._leave_content(key, w.content_key)
            w.live = False
            w.deleted_ms = t.deleted_ms
            w.version += 1
            w.row_changed = w.state_changed = True
            self._result(t, oc.DELETED, note=_promotion_note(promoted))
            return
        if w.duplicate_of is not None:
            # A content duplicate deleted itself. Its version goes into its (soft-deleted) row, as it
            # does when the deletion arrives first and the copy after it.
            pending = self._pending(key, w)
            self._set_duplicate(key, w, None)
            note = None
            if pending is not None and (
                not w.present or (w.checksum != pending.checksum and _newer(pending.updated_ms, w.updated_ms))
            ):
                self._archive_held(key, w, pending.checksum)
                note = self._write(key, w, pending, pending.text, live=False)
            w.deleted_ms = t.deleted_ms if w.deleted_ms is None else max(w.deleted_ms, t.deleted_ms)
            w.state_changed = True
            w.row_changed = w.row_changed or w.present
            self._result(t, oc.DELETED, note=note)
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
        key = (r.entity_type, r.entity_id)
        if key not in self._working and key not in self._stored and self._live_checksums.get(key) == r.checksum:
            # Its live row's checksum was read instead of its state, and nothing in the batch touched it.
            self.results.append(RecordResult(entity_type=r.entity_type, entity_id=r.entity_id, outcome=oc.DUPLICATE))
            return
        w = self._state(key)
        if not (w.live and w.checksum == r.checksum):
            raise ValueError(f"{r.entity_type} {r.entity_id!r} is not stored with checksum {r.checksum}")
        self.results.append(RecordResult(entity_type=r.entity_type, entity_id=r.entity_id, outcome=oc.DUPLICATE))

    def live_record(self, n: Normalised) -> None:
        key = (n.entity_type, n.entity_id)
        w = self._state(key)
        data = n.text  # encoded once, by the normaliser
        if w.live:
            if w.checksum == n.checksum or self._same_version(w, n):
                self._result(n, oc.DUPLICATE)
            elif _newer(n.updated_ms, w.updated_ms):
                self._archive_held(key, w, n.checksum)
                note = self._write(key, w, n, data)
                self._result(n, oc.UPDATED, note=note)
            else:
                self._lose(key, n, data, w.updated_ms)
            return
        if w.duplicate_of is not None:
            if not _newer(n.updated_ms, w.updated_ms):
                if n.content_key == w.content_key or self._same_as_duplicate_version(key, w, n):
                    self._duplicate_again(key, w, n, data)
                else:
                    self._lose(key, n, data, w.updated_ms)
                return
            # A newer version of a content duplicate: placed as any new version is.
        elif w.deleted_ms is not None and not _newer(n.updated_ms, w.deleted_ms):
            self._suppress(key, w, n, data)
            return
        elif w.present and not _newer(n.updated_ms, w.updated_ms):
            # Newer than the deletion, yet not newer than the version the deleted row holds: never
            # bring back an older version.
            if w.checksum != n.checksum and not self._same_version(w, n):
                self._archive(key, data, n.checksum, n.updated_ms, ArchiveReason.OLDER_THAN_STORED)
            self._result(n, oc.SUPPRESSED, reason=MergeReason.DELETED_LATER)
            return
        self._place(key, w, n, data)

    def _suppress(self, key: EntityKey, w: _Working, n: Normalised, data: str) -> None:
        """`n` is older than the key's deletion: it stays deleted. The deleted row keeps the newest
        version older than the deletion, so the rows are the same whichever came first, the deletion or
        the copies."""
        note = None
        if not w.present or (w.checksum != n.checksum and _newer(n.updated_ms, w.updated_ms)):
            self._archive_held(key, w, n.checksum)
            note = self._write(key, w, n, data, live=False)
        elif w.checksum != n.checksum and not self._same_version(w, n):
            self._archive(key, data, n.checksum, n.updated_ms, ArchiveReason.OLDER_THAN_DELETION)
        self._result(n, oc.SUPPRESSED, reason=MergeReason.DELETED_LATER, note=note)

    def _place(self, key: EntityKey, w: _Working, n: Normalised, data: str) -> None:
        """`n` becomes the version of a key without a live row: a content duplicate of the entry that
        holds its content live, or else the key's live row."""
        holder = self._holder(n.content_key, exclude=key[1]) if n.entity_type == LOGBOOK_ENTRY else None
        if holder is not None:
            self._archive_duplicate_version(key, w, n.checksum)
            self._set_duplicate(key, w, holder)
            w.content_key, w.updated_ms, w.pending = n.content_key, n.updated_ms, n
            w.state_changed = True
            self._result(n, oc.CONTENT_DUPLICATE, duplicate_of=holder)
            return
        self._archive_held(key, w, n.checksum)  # a deleted entry brought back: the version it held is kept
        self._archive_duplicate_version(key, w, n.checksum)
        outcome = oc.UPDATED if w.present else oc.INSERTED
        note = self._write(key, w, n, data)
        w.deleted_ms = None
        self._result(n, outcome, note=note)

    def _duplicate_again(self, key: EntityKey, w: _Working, n: Normalised, data: str) -> None:
        """A content duplicate's content sent again. If the entry it points at no longer holds that
        content (state recorded before these rules), it is pointed at the one that does, or becomes the
        live entry itself."""
        holder = w.duplicate_of
        assert holder is not None
        if holder in self._holders.get(w.content_key or "", set()):
            self._result(n, oc.CONTENT_DUPLICATE, duplicate_of=holder)
            return
        other = self._holder(w.content_key, exclude=key[1])
        if other is not None:
            self._set_duplicate(key, w, other)
            self._result(n, oc.CONTENT_DUPLICATE, duplicate_of=other)
            return
        version = self._pending(key, w) if n.updated_ms != w.updated_ms else n
        version = version or n
        self._archive_held(key, w, version.checksum)
        outcome = oc.UPDATED if w.present else oc.INSERTED
        note = self._write(key, w, version, data if version is n else version.text)
        w.deleted_ms = None
        self._result(n, outcome, note=note)

    def _same_version(self, w: _Working, n: Normalised) -> bool:
        """The stored version sent back by a device that pulled it: the same edit time, and content that
        differs only in how a client writes it (see `round_trip_form`). The app's rules turn a pulled ISO
        `created_at` into epoch ms, and its web client adds `goalIds: []`, `notes: null` and the like."""
        if n.updated_ms != w.updated_ms:
            return False
        if n.content_key is not None and n.content_key == w.content_key:
            return True
        mine = _stored_round_trip_form(n.entity_type, w.data)
        return mine is not None and mine == _stored_round_trip_form(n.entity_type, n.text)

    def _same_as_duplicate_version(self, key: EntityKey, w: _Working, n: Normalised) -> bool:
        if n.updated_ms != w.updated_ms:
            return False
        pending = self._pending(key, w)
        if pending is None:
            return False
        mine = _stored_round_trip_form(key[0], pending.text)
        return mine is not None and mine == _stored_round_trip_form(n.entity_type, n.text)

    # ---- content and rows -------------------------------------------------------------------------

    def _leave_content(self, key: EntityKey, content_key: str | None) -> str | None:
        """The live row of `key` stops holding `content_key` (deleted, or edited to other content). Its
        content duplicates of that content point at another live holder of it, or the first of them (by
        id) whose version is known becomes the live entry. Returns the id promoted, if any."""
        if key[0] != LOGBOOK_ENTRY or content_key is None:
            return None
        holders = self._holders.get(content_key)
        if holders is not None:
            holders.discard(key[1])
        duplicates = [
            d for d in self._duplicates_of(key[1]) if self._state((LOGBOOK_ENTRY, d)).content_key == content_key
        ]
        if not duplicates:
            return None
        target = min(holders) if holders else None
        promoted = None
        if target is None:
            for d in duplicates:
                dk = (LOGBOOK_ENTRY, d)
                wd = self._state(dk)
                pending = self._pending(dk, wd)
                if pending is None:
                    continue
                self._archive_held(dk, wd, pending.checksum)
                self._write(dk, wd, pending, pending.text)
                wd.deleted_ms = None
                target = promoted = d
                break
            if target is None:
                return None  # no version of them is kept: they stay as recorded
        for d in duplicates:
            if d != target:
                self._set_duplicate((LOGBOOK_ENTRY, d), self._state((LOGBOOK_ENTRY, d)), target)
        return promoted

    def _write(self, key: EntityKey, w: _Working, n: Normalised, data: str, *, live: bool = True) -> str | None:
        """Make `n` the version the key's row holds (live or soft-deleted). Returns the note for the
        record's result: why logbook_entries does not get the row, if it does not."""
        if w.live and w.content_key != n.content_key:
            self._leave_content(key, w.content_key)
        self._set_duplicate(key, w, None)
        w.data, w.checksum, w.updated_ms = data, n.checksum, n.updated_ms
        w.content_key, w.pending = n.content_key, None
        note = n.logbook_refusal
        w.logbook_row = n.logbook_row
        w.row_holds_state = n.text_holds_state and n.logbook_row is not None
        if n.logbook_row is not None and self._held_elsewhere(key[1]):
            w.logbook_row = None
            w.row_holds_state = False
            note = f"logbook_entries holds id {key[1]!r} for another user: stored in sync_data only"
        w.version += 1
        w.live = live
        w.present = True
        w.row_changed = w.state_changed = True
        if live and key[0] == LOGBOOK_ENTRY and w.content_key is not None:
            self._holders.setdefault(w.content_key, set()).add(key[1])
        return note

    def writes(self) -> tuple[list[SyncWrite], list[StateWrite]]:
        sync_writes: list[SyncWrite] = []
        state_writes: list[StateWrite] = []
        for (entity_type, entity_id), w in self._working.items():
            if w.row_changed and w.data is not None and w.checksum is not None:
                # SyncWrite(entity_type, entity_id, row_id, data, checksum, version, deleted_ms, logbook_row)
                sync_writes.append(SyncWrite(entity_type, entity_id, w.stored.row_id, w.data, w.checksum,
                                             max(w.version, 1), None if w.live else w.deleted_ms, w.logbook_row))
            # No state row where the live row says it all: the edit time and content key its text gives
            # back, and the logbook_entries row its content holders are found by (`load_live_content`).
            # A row per record on two random-key indexes was a quarter of a replay's time (#17).
            if w.state_changed and not (
                w.row_holds_state and w.live and w.deleted_ms is None and w.duplicate_of is None
                and not w.stored.has_state
            ):
                state_writes.append(
                    StateWrite(entity_type, entity_id, w.updated_ms, w.deleted_ms, w.content_key, w.duplicate_of)
                )
        return sync_writes, state_writes


def content_probes(records: Iterable[object]) -> dict[str, int | None]:
    """What the search for the live holders of a batch's contents needs (`ContentProbes`): each live
    logbook record's content key, with its logbook_entries row's timestamp (None without a row)."""
    probes: dict[str, int | None] = {}
    for r in records:
        if isinstance(r, Normalised) and r.content_key and probes.get(r.content_key) is None:
            probes[r.content_key] = r.logbook_row.timestamp if r.logbook_row is not None else None
    return probes


def _promotion_note(promoted: str | None) -> str | None:
    return None if promoted is None else f"its content duplicate {promoted!r} is now the live entry"


def plan_merge(
    records: Sequence[Normalised | Tombstone | Rejection | Repeat],
    stored: Mapping[EntityKey, StoredEntity],
    live_content: Mapping[str, Collection[str]],
    lookups: MergeLookups | None = None,
    live_checksums: Mapping[EntityKey, str] | None = None,
) -> MergePlan:
    """Decide every record's outcome, in order, and the writes that follow from them.

    `stored` has an entry for every key in `records` the database knows; `live_content` maps the
    content keys the batch can touch (its records' and its stored keys') to the ids of the live entries
    that hold them. `lookups` answers what else is needed (see `MergeLookups`). A key that only repeats
    name may instead be in `live_checksums`, its live row's checksum, read without its state: a repeat is
    a duplicate, and changes nothing, so the rest of the batch sees the key as if it were not in it.
    """
    lookups = lookups or NoLookups()
    logbook_ids = {
        r.entity_id for r in records if isinstance(r, Normalised | Tombstone) and r.entity_type == LOGBOOK_ENTRY
    }
    planner = _Planner(stored, live_content, lookups, logbook_ids, live_checksums or {})
    for index, record in enumerate(records):
        if isinstance(record, Normalised):  # the common case first: the four types are disjoint
            planner.live_record(record)
        elif isinstance(record, Repeat):
            planner.repeat(record)
        elif isinstance(record, Tombstone):
            planner.tombstone(record)
        else:
            planner.quarantine(index, record)
    sync_writes, state_writes = planner.writes()
    return MergePlan(planner.results, sync_writes, state_writes, planner.archived, planner.quarantined)
