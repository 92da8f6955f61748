"""What the merge rules say should win, independently of the code: logbook histories whose versions share
content across ids, deletions, and the form the app's web client pushes back; the expected fate of every
id; and an in-memory store that applies merge plans as the database does, so `plan_merge` can be driven
through many uploads quickly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from service.domain.merge import EntityKey, MergePlan, StoredEntity, plan_merge, round_trip_form
from service.domain.normalise import content_key_of_text, normalise
from service.domain.records import LOGBOOK_ENTRY, Normalised, Tombstone
from service.domain.times import ms_to_iso_z, to_epoch_ms

USER_ID = "user_Q1w2E3r4T5y6U7i8O9p0a"
NOW_MS = to_epoch_ms("2025-07-01T00:00:00.000Z") or 0
IDS = ("entry-a", "entry-b", "entry-c")
VERSIONS = (0, 1, 2, 3)
SHARED_VERSIONS = (1, 2)  # these versions have the same content whichever id holds them
# Between v0 and v1, between v1 and v2, after every version (version v is edited on June v+1, 18:0i).
DELETION_TIMES = ("2025-06-02T12:00:00.000Z", "2025-06-03T12:00:00.000Z", "2025-06-05T12:00:00.000Z")
NEWEST_VERSION_DELETED = {DELETION_TIMES[0]: 0, DELETION_TIMES[1]: 1, DELETION_TIMES[2]: 3}


def updated_at(entity_id: str, version: int) -> str:
    return f"2025-06-0{version + 1}T18:0{IDS.index(entity_id)}:00.000Z"


def entry(entity_id: str, version: int) -> dict[str, Any]:
    """Version `version` of an entry: versions 1 and 2 say the same whatever the id (the same session
    logged under several ids), versions 0 and 3 are the id's own."""
    notes = f"v{version}" if version in SHARED_VERSIONS else f"{entity_id} v{version}"
    return {
        "id": entity_id,
        "timestamp": "2025-06-01T17:45:00.000Z",
        "duration": 10 + version,
        "type": "practice",
        "instrument": "piano",
        "pieces": [{"title": "Clair de lune", "composer": "Debussy"}],
        "notes": notes,
        "createdAt": f"2025-06-01T18:0{IDS.index(entity_id)}:00.000Z",
        "updatedAt": updated_at(entity_id, version),
    }


def stored_form(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as the service stores it (and /api/sync/pull returns it)."""
    n = normalise(LOGBOOK_ENTRY, dict(document), USER_ID, now_ms=NOW_MS)
    assert isinstance(n, Normalised)
    return dict(n.document())


def pushed_back(document: Mapping[str, Any]) -> dict[str, Any]:
    """A version as the app's web client pushes it back after pulling it."""
    return client_sanitised(stored_form(document))


def client_sanitised(pulled: Mapping[str, Any]) -> dict[str, Any]:
    """A pulled entry as the app's web client pushes it back on its next sync (frontendv2's
    sanitizeEntryForSync): ISO times, `goalIds: []` beside `goal_ids`, defaults for what is missing."""
    timestamp = pulled["timestamp"]
    return {
        **pulled,
        "timestamp": ms_to_iso_z(timestamp) if isinstance(timestamp, int) else timestamp,
        "notes": pulled.get("notes") or None,
        "mood": pulled.get("mood") or None,
        "pieces": [{**p, "composer": p.get("composer") or None, "measures": None, "tempo": None}
                   for p in pulled.get("pieces", [])],
        "techniques": pulled.get("techniques") or [],
        "goalIds": [],
        "tags": pulled.get("tags") or [],
        "metadata": pulled.get("metadata") or {"source": "manual"},
    }


def deletion(entity_id: str, when: str) -> dict[str, Any]:
    return {"id": entity_id, "deletedAt": when}


def version_of(document: Mapping[str, Any]) -> int | None:
    """The version an entry document carries (None for a deletion)."""
    if "deletedAt" in document:
        return None
    return int(str(document["duration"])) - 10


def expected_fates(documents: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """Per id, the version that wins by the per-key rules alone (the latest edit; a deletion wins over
    every edit not newer than it), or None when the entry ends deleted."""
    latest: dict[str, int] = {}
    last_deletion: dict[str, str] = {}
    for d in documents:
        version = version_of(d)
        if version is None:
            last_deletion[d["id"]] = max(last_deletion.get(d["id"], ""), d["deletedAt"])
        else:
            latest[d["id"]] = max(latest.get(d["id"], -1), version)
    fates: dict[str, int | None] = {}
    for entity_id in set(latest) | set(last_deletion):
        version = latest.get(entity_id)
        deleted = entity_id in last_deletion and (
            version is None or version <= NEWEST_VERSION_DELETED[last_deletion[entity_id]]
        )
        fates[entity_id] = None if deleted else version
    return fates


def normalised(document: Mapping[str, Any]) -> Normalised | Tombstone:
    n = normalise(LOGBOOK_ENTRY, dict(document), USER_ID, now_ms=NOW_MS)
    assert isinstance(n, Normalised | Tombstone), n
    return n


class Final(msgspec.Struct, frozen=True):
    """What one id ends as: its own live row, a content duplicate of another id's, or neither."""

    entity_id: str
    live_row: str | None  # round_trip_form of the document its live row holds
    updated_ms: int | None
    content_key: str | None
    duplicate_of: str | None


def check_fates(finals: Mapping[str, Final], documents: Sequence[Mapping[str, Any]]) -> None:
    """The final state is what the rules name: every id ends in its winning version (held by its own
    live row, or recorded as a content duplicate of a live row holding that content), or deleted; and
    the contents live are exactly the winners'. Contents compare in `round_trip_form`, so a version and
    the client's pushed-back form of it are one content. (Across ids, content duplicates are found by
    the exact content key: an original under one id and the client's form under another both stay live.)"""
    fates = expected_fates(documents)
    for entity_id, version in fates.items():
        final = finals.get(entity_id)
        if version is None:
            assert final is None or (final.live_row is None and final.duplicate_of is None), (entity_id, final)
            continue
        assert final is not None, entity_id
        expected_ms = to_epoch_ms(updated_at(entity_id, version))
        assert final.updated_ms == expected_ms, (entity_id, version, final)
        content = round_trip_form(LOGBOOK_ENTRY, stored_form(entry(entity_id, version)))
        if final.live_row is not None:
            assert final.live_row == content and final.duplicate_of is None, (entity_id, final)
        else:
            holder = finals.get(final.duplicate_of or "")
            assert holder is not None and holder.live_row == content, (entity_id, final, holder)
            assert holder.content_key == final.content_key, (entity_id, final, holder)
    live_contents = {f.live_row for f in finals.values() if f.live_row is not None}
    assert live_contents == {
        round_trip_form(LOGBOOK_ENTRY, stored_form(entry(i, v))) for i, v in fates.items() if v is not None
    }
    for entity_id, final in finals.items():  # ids the documents never name hold nothing
        assert entity_id in fates or final.live_row is None


class MemoryStore:
    """The database's part in a merge, in memory: rows and merge state as `apply_plan` writes them,
    the stored state as `load_state` reads it, and every live record kept (as raw records are)."""

    def __init__(self) -> None:
        self.rows: dict[EntityKey, StoredEntity] = {}
        self.state: dict[EntityKey, tuple[int | None, int | None, str | None, str | None]] = {}
        self.kept: dict[EntityKey, list[Normalised]] = {}
        self.archive: list[tuple[str, str, str]] = []
        self.foreign_logbook_ids: set[str] = set()

    def load(self, keys: Iterable[EntityKey]) -> dict[EntityKey, StoredEntity]:
        loaded: dict[EntityKey, StoredEntity] = {}
        for key in keys:
            row, state = self.rows.get(key), self.state.get(key)
            if row is None and state is None:
                continue
            entity = msgspec.structs.replace(row) if row is not None else StoredEntity()
            if state is not None:
                updated_ms, deleted_ms, content_key, duplicate_of = state
                if updated_ms is not None:
                    entity.updated_ms = updated_ms
                if not entity.live and deleted_ms is not None:
                    entity.deleted_ms = deleted_ms
                entity.content_key, entity.duplicate_of, entity.has_state = content_key, duplicate_of, True
            if entity.content_key is None and entity.data is not None:
                entity.content_key = content_key_of_text(entity.data)  # a row whose text holds its state
            loaded[key] = entity
        return loaded

    # MergeLookups
    def duplicates_of(self, entity_id: str) -> dict[EntityKey, StoredEntity]:
        return self.load(k for k, s in self.state.items() if s[3] == entity_id)

    def duplicate_version(self, key: EntityKey, content_key: str, updated_ms: int | None) -> Normalised | None:
        versions = [n for n in self.kept.get(key, []) if n.content_key == content_key]
        exact = [n for n in versions if n.updated_ms == updated_ms]
        return (exact or versions or [None])[-1]

    def logbook_ids_held_elsewhere(self, entity_ids: Iterable[str]) -> set[str]:
        return self.foreign_logbook_ids & set(entity_ids)

    def push(self, documents: Sequence[Mapping[str, Any]]) -> MergePlan:
        records = [normalised(d) for d in documents]
        keys = {(r.entity_type, r.entity_id) for r in records}
        stored = self.load(keys)
        contents = {r.content_key for r in records if isinstance(r, Normalised) and r.content_key}
        contents |= {s.content_key for s in stored.values() if s.content_key}
        live_content: dict[str, list[str]] = {}
        for key, (_, _, content_key, duplicate_of) in self.state.items():
            row = self.rows.get(key)
            if content_key in contents and duplicate_of is None and row is not None and row.live:
                live_content.setdefault(content_key, []).append(key[1])
        for key, row in self.rows.items():  # live rows without content in merge state: their text's
            state = self.state.get(key)
            if row.live and row.data is not None and (state is None or state[2:] == (None, None)):
                content_key = content_key_of_text(row.data)
                if content_key in contents:
                    live_content.setdefault(content_key, []).append(key[1])
        plan = plan_merge(records, stored, live_content, self)
        self.apply(plan)
        for r in records:
            if isinstance(r, Normalised):
                self.kept.setdefault((r.entity_type, r.entity_id), []).append(r)
        return plan

    def apply(self, plan: MergePlan) -> None:
        for w in plan.sync_writes:
            key = (w.entity_type, w.entity_id)
            previous = self.rows.get(key)
            assert (previous.row_id if previous else None) == w.row_id
            document = msgspec.json.decode(w.data)
            self.rows[key] = StoredEntity(
                row_id=w.row_id or f"row-{w.entity_id}", checksum=w.checksum, version=w.version,
                live=w.deleted_ms is None, data=w.data, updated_ms=to_epoch_ms(document.get("updatedAt")),
                deleted_ms=w.deleted_ms,
            )
        for s in plan.state_writes:
            self.state[(s.entity_type, s.entity_id)] = (s.updated_ms, s.deleted_ms, s.content_key, s.duplicate_of)
        for a in plan.archived:
            if (a.entity_id, a.checksum, a.data) not in self.archive:  # as the store: once per content
                self.archive.append((a.entity_id, a.checksum, a.data))

    def finals(self) -> dict[str, Final]:
        finals: dict[str, Final] = {}
        for key, entity in self.load(set(self.rows) | set(self.state)).items():
            live_row = None
            if entity.live and entity.data is not None:
                live_row = round_trip_form(LOGBOOK_ENTRY, msgspec.json.decode(entity.data))
            finals[key[1]] = Final(key[1], live_row, entity.updated_ms, entity.content_key, entity.duplicate_of)
        return finals
