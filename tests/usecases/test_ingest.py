"""The pipeline: its shortcut for byte-identical re-uploads never changes an outcome; the bookkeeping
around a merge (archive, logbook_entries); the app client's round trip is a no-op."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import jsontext
from service.domain import records as rec
from service.domain.merge import EntityKey
from service.domain.normalise import entity_id_of
from service.domain.owners import UserRecord
from service.domain.sources import Source
from service.store import Storage
from service.store.interface import WriteUnit
from service.store.postgres.unit import PgWriteUnit
from service.store.sqlite.units import SqliteWriteUnit
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, key_fields, prepare_upload
from tests.conftest import ADA, BEN, add_users, auth, load_fixture, push_entries, query, target
from tests.domain import merge_model as model

USER = UserRecord(ADA[0], ADA[1], "user")
V1 = {"id": "e1", "timestamp": 1748799900000, "duration": 15, "type": "practice", "instrument": "piano",
      "updatedAt": "2025-06-01T18:30:12.345Z"}
V2 = {**V1, "duration": 20, "updatedAt": "2025-06-02T18:30:12.345Z"}


async def push(db: Storage, *records: dict[str, Any], deleted: list[str] | None = None) -> list[str]:
    return [r.outcome for r in await push_entries(db, USER, *records, deleted=deleted)]


async def test_identical_bytes_are_a_duplicate_only_while_the_stored_row_is_that_version(storage: Storage) -> None:
    db = storage
    add_users(target(db), ADA)
    assert await push(db, V1) == ["inserted"]
    assert await push(db, V1) == ["duplicate"]
    assert await push(db, V2) == ["updated"]
    assert await push(db, V1) == ["kept_existing"]  # same bytes as before, but no longer the stored version
    assert await push(db, V2) == ["duplicate"]
    assert await push(db, deleted=["e1"]) == ["deleted"]
    assert await push(db, V2) == ["suppressed"]
    assert await push(db, V1, V1) == ["suppressed", "suppressed"]
    rows = query(target(db), "SELECT checksum, version, deleted_at FROM sync_data")
    assert len(rows) == 1 and rows[0]["deleted_at"] is not None
    raw = query(target(db), "SELECT COUNT(*) AS n FROM recovery_raw_records WHERE entity_id = 'e1'")
    assert raw[0]["n"] == 3  # V1, V2 and the deletion, each kept once


async def test_keys_only_repeats_name_are_confirmed_by_their_live_checksum_without_reading_their_state(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device re-pushing its history: the keys its repeats alone name are checked against their live
    rows' checksums; only the other keys' merge state is read, and the outcomes are what the full merge
    gives (a repeat whose row changed since is merged in full)."""
    db = storage
    add_users(target(db), ADA)
    e2, e3 = {**V1, "id": "e2", "duration": 21}, {**V1, "id": "e3", "duration": 30}
    assert await push(db, V1, e2, e3) == ["inserted", "inserted", "inserted"]
    read: list[set[EntityKey]] = []
    for unit in (SqliteWriteUnit, PgWriteUnit):
        real = unit.load_batch_state

        def spy(self: WriteUnit, user_id: str, keys: Collection[EntityKey], content_keys: Collection[str],
                real: Any = real) -> Any:
            read.append(set(keys))
            return real(self, user_id, keys, content_keys)

        monkeypatch.setattr(unit, "load_batch_state", spy)
    e2_edited = {**e2, "duration": 25, "updatedAt": "2025-06-03T18:30:12.345Z"}
    e4 = {**V1, "id": "e4", "duration": 40}
    assert await push(db, V1, e2_edited, e3, e4) == ["duplicate", "updated", "duplicate", "inserted"]
    assert read[-1] == {("logbook_entry", "e2"), ("logbook_entry", "e4")}
    # e2's bytes from the first push repeat a version that is no longer the stored one: merged in full.
    assert await push(db, e2, e3) == ["kept_existing", "duplicate"]
    assert read[-1] == {("logbook_entry", "e2")}
    # Two repeats of one key with a newer version between them: the key is read, the outcomes in order.
    assert await push(db, e3, {**e3, "duration": 31, "updatedAt": "2025-06-04T18:30:12.345Z"}, e3) == [
        "duplicate", "updated", "kept_existing"]
    assert read[-1] == {("logbook_entry", "e3")}


async def test_a_pulled_entry_pushed_back_is_a_duplicate(storage: Storage) -> None:
    """Pulled documents carry created_at as an ISO string, which the app's rules turn into epoch ms on
    the way in: same content and edit time, different checksum, still the same version."""
    db = storage
    add_users(target(db), ADA)
    entry = {**V1, "createdAt": "2025-06-01T18:00:00.000Z"}
    assert await push(db, entry) == ["inserted"]
    stored = msgspec.json.decode(query(target(db), "SELECT data FROM sync_data")[0]["data"])
    assert isinstance(stored["created_at"], str)
    assert await push(db, stored) == ["duplicate"]
    assert query(target(db), "SELECT COUNT(*) AS n FROM recovery_archive")[0]["n"] == 0


async def test_new_rows_get_ids_led_by_their_seq_with_a_random_part_of_their_own(storage: Storage) -> None:
    """`sync_` + the seq in 12 hex digits (so new rows append to the key's B-tree) + 8 random hex digits."""
    db = storage
    add_users(target(db), ADA)
    await push(db, *({**V1, "id": f"e{n}", "duration": 10 + n} for n in range(50)))
    rows = query(target(db), "SELECT id, seq FROM sync_data ORDER BY seq")
    assert len(rows) == 50
    for row in rows:
        assert re.fullmatch(r"sync_[0-9a-f]{20}", row["id"]) and int(row["id"][5:17], 16) == row["seq"]
    assert len({row["id"][17:] for row in rows}) > 45  # random parts, not one repeated


# ---- bookkeeping (issue 13 item 11) -----------------------------------------------------------------

BEN_USER = UserRecord(BEN[0], BEN[1], "user")


async def push_as(db: Storage, user: UserRecord, *records: dict[str, Any]) -> UploadResult:
    upload = Upload(owner=user.id, user=user, device_id="dev_aaaaaaaaaaaaaaaa", source="push",
                    records=[IncomingRecord("logbook_entry", msgspec.json.encode(r)) for r in records])
    result = await ingest(db, upload)
    assert isinstance(result, UploadResult)
    return result


async def test_a_deleted_entry_brought_back_archives_the_version_it_held(storage: Storage) -> None:
    db = storage
    add_users(target(db), ADA)
    await push(db, V1)
    await push(db, {"id": "e1", "deletedAt": "2025-06-01T20:00:00.000Z"})
    assert await push(db, V2) == ["updated"]
    archived = query(target(db), "SELECT data, reason FROM recovery_archive")
    assert [(msgspec.json.decode(a["data"])["duration"], a["reason"]) for a in archived] == [
        (15, "superseded by newer version")
    ]


async def test_logbook_entries_follows_a_soft_deleted_row_that_gets_a_newer_version(storage: Storage) -> None:
    """The deleted row keeps the newest version older than the deletion; its relational copy too."""
    db = storage
    add_users(target(db), ADA)
    await push(db, V1)
    await push(db, {"id": "e1", "deletedAt": "2025-06-03T00:00:00.000Z"})
    assert await push(db, V2) == ["suppressed"]
    sync = query(target(db), "SELECT data, checksum, deleted_at FROM sync_data")[0]
    row = query(target(db), "SELECT duration, checksum, deleted_at FROM logbook_entries")[0]
    assert msgspec.json.decode(sync["data"])["duration"] == row["duration"] == 20
    assert row["checksum"] == sync["checksum"] and row["deleted_at"] is not None


async def test_an_entry_id_another_user_holds_in_logbook_entries_is_reported(storage: Storage) -> None:
    """logbook_entries.id is global: Ada's entry with Ben's id stays in sync_data only, and says so."""
    db = storage
    add_users(target(db), ADA, BEN)
    await push_as(db, BEN_USER, V1)
    result = await push_as(db, USER, {**V1, "duration": 45})
    (outcome,) = result.receipt.results
    assert outcome.outcome == "inserted" and "another user" in (outcome.note or "")
    assert {r["user_id"] for r in query(target(db), "SELECT user_id FROM sync_data")} == {ADA[0], BEN[0]}
    assert [tuple(r) for r in query(target(db), "SELECT user_id, duration FROM logbook_entries")] == [(BEN[0], 15)]


# ---- the app's web client: what it pulls, it pushes back (issue 12) ----------------------------------


async def test_entries_pulled_and_pushed_back_by_the_web_client_write_nothing(client: Any, db_path: str) -> None:
    """Pulled through /api/sync/pull, pushed back as frontendv2 does (`goalIds: []` beside `goal_ids`,
    `notes`/`mood: null`, ISO timestamps): duplicates, no row touched, nothing archived, every time."""
    export = load_fixture("exports/mirubato-data-export-2025-11-30.json")
    headers = auth(ADA, **{"X-Device-ID": "dev_a1B2c3D4e5F6g7H8"})
    first = await client.post("/api/sync/push", json={"changes": {"entries": export["logbook"]}}, headers=headers)
    assert first.status_code == 200
    before = query(db_path, "SELECT entity_id, seq, version FROM sync_data ORDER BY entity_id")
    for _ in range(3):
        pulled = (await client.post("/api/sync/pull", headers=auth(ADA))).json()
        entries = [model.client_sanitised(e) for e in pulled["entries"]]
        assert len(entries) == len(export["logbook"])
        body = (await client.post("/api/sync/push", json={"changes": {"entries": entries}}, headers=headers)).json()
        assert body["recovery"]["counts"]["duplicate"] == len(entries), body
        assert body["conflicts"] == []
    assert query(db_path, "SELECT entity_id, seq, version FROM sync_data ORDER BY entity_id") == before
    assert query(db_path, "SELECT COUNT(*) AS n FROM recovery_archive")[0]["n"] == 0


async def test_an_equal_edit_time_with_other_content_is_a_conflict_of_its_own(client: Any, db_path: str) -> None:
    entry = load_fixture("exports/mirubato-data-export-2025-11-30.json")["logbook"][0]
    await client.post("/api/sync/push", json={"changes": {"entries": [entry]}}, headers=auth(ADA))
    rival = {**entry, "notes": "the same minute on another device"}
    for _ in range(2):
        body = (await client.post("/api/sync/push", json={"changes": {"entries": [rival]}}, headers=auth(ADA))).json()
        assert body["conflicts"] == [{"entityId": entry["id"], "entityType": "logbook_entry",
                                      "reason": "same_updated_at_different_content"}]
    archived = query(db_path, "SELECT reason FROM recovery_archive")
    assert [a["reason"] for a in archived] == ["same edit time as the stored version"]  # once, not per push


# --- the key read from the bytes alone (prepare_upload) ------------------------------------------------

_KEY_NAMES = st.sampled_from(["id", "scoreId", "score_id", "ID", "notes", "i\u0064", "pieces"])
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY_NAMES, inner, max_size=3),
    max_leaves=8,
)


def _json_text(value: Any, pairs: list[tuple[str, Any]], escape: bool) -> bytes:
    """An object written out with its keys in order, repeats kept (JSON.parse keeps the last), keys
    optionally written as \\u escapes; or any other JSON value."""
    if not pairs:
        return jsontext.encode(value)
    def key(k: str) -> str:
        return '"' + "".join(f"\\u{ord(c):04x}" for c in k) + '"' if escape else jsontext.encode(k).decode()
    return ("{" + ",".join(f"{key(k)}:{jsontext.encode(v).decode()}" for k, v in pairs) + "}").encode()


@settings(max_examples=400)
@given(
    value=_JSON_VALUES,
    pairs=st.lists(st.tuples(_KEY_NAMES, st.text(min_size=1, max_size=6) | _JSON_VALUES), max_size=5),
    escape=st.booleans(),
    entity_type=st.sampled_from(sorted(rec.ENTITY_TYPES)),
)
def test_the_key_read_from_the_bytes_alone_is_the_key_of_the_whole_record(
    value: Any, pairs: list[tuple[str, Any]], escape: bool, entity_type: str
) -> None:
    """`key_fields` skips everything the key rules do not read, and gives them what a full decode gives:
    duplicate keys (the last wins), escaped key names, values that are not objects."""
    raw = _json_text(value, pairs, escape)
    whole = jsontext.decode(raw)
    assert entity_id_of(entity_type, key_fields(raw), "user_x") == entity_id_of(entity_type, whole, "user_x")


def test_bytes_that_are_not_json_or_hold_lone_surrogates_are_read_as_a_full_decode_reads_them() -> None:
    assert key_fields(b'{"id": "a"') is msgspec.UNSET
    assert key_fields(b'[{"id": "a"}]') is None
    assert key_fields(b'{"id": "\\ud83d", "notes": "x"}') == {"id": "\ud83d", "notes": "x"}


def test_an_upload_of_bytes_alone_is_not_decoded_before_normalising() -> None:
    """Records that come as bytes only (a push, a replay) get their keys from `key_fields`; their values
    are decoded once, where they are normalised (in a worker for large uploads), not here as well."""
    upload = Upload(owner=ADA[0], user=UserRecord(ADA[0], ADA[1], "user"), device_id=None, source=Source.PUSH,
                    records=[IncomingRecord(rec.LOGBOOK_ENTRY, b'{"id": "e1", "notes": "n"}'),
                             IncomingRecord(rec.LOGBOOK_ENTRY, b'{"id": "e2"}')])  # fmt: skip
    prepared = prepare_upload(upload)
    assert prepared.values is None
    assert [k[2] for k in prepared.single_keys] == ["e1", "e2"]
