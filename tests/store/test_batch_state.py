"""`load_batch_state`, the merge's reads folded into fewer statements, reads exactly what the three reads
it replaces read (`load_state`, `load_live_content`, `logbook_ids_of_other_users`), on every engine."""

from __future__ import annotations

from typing import Any

import msgspec

from service.domain.normalise import content_key_of_text
from service.domain.owners import UserRecord
from service.store import Storage
from service.store.interface import WriteUnit
from service.store.rows import BatchState
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from tests.conftest import ADA, BEN, add_users, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
BEN_USER = UserRecord(BEN[0], BEN[1], "user")


def minute(n: int) -> int:
    return 1748799900000 + n * 60_000


def _entry(entry_id: str, at: int, updated: str = "2025-06-01T18:30:12.345Z") -> dict[str, Any]:
    return {"id": entry_id, "timestamp": minute(at), "duration": 15, "type": "practice",
            "instrument": "piano", "updatedAt": updated}


async def _push(db: Storage, user: UserRecord, *entries: dict[str, Any], deleted: list[str] | None = None) -> None:
    upload = Upload(owner=user.id, user=user, device_id="dev_aaaaaaaaaaaaaaaa", source="push",
                    records=[IncomingRecord("logbook_entry", msgspec.json.encode(e)) for e in entries],
                    deleted={"logbook_entry": deleted} if deleted else {})
    assert isinstance(await ingest(db, upload), UploadResult)


async def test_the_batch_state_is_the_three_reads_it_folds(storage: Storage) -> None:
    add_users(target(storage), ADA, BEN)
    await _push(storage, ADA_USER, _entry("live", 1), _entry("gone", 2), _entry("twin", 1))  # twin: a duplicate
    await _push(storage, ADA_USER, deleted=["gone", "never"])  # a deleted row, and a deletion remembered alone
    await _push(storage, BEN_USER, _entry("bens", 3))
    # A row the app stored before the service: no merge state, its edit time is its document's.
    query(target(storage), "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, seq)"
          " VALUES ('sync_old', ?, 'goal', 'g-old', ?, 'c-old', 99)",
          (ADA[0], '{"id":"g-old","updatedAt":"2025-05-01T00:00:00.000Z"}'))
    keys = {("logbook_entry", i) for i in ("live", "gone", "never", "twin", "bens", "absent")} | {("goal", "g-old")}
    # Ben's content (another user's: never Ada's holder), at its time, and a content nobody holds.
    bens = query(target(storage), "SELECT data FROM sync_data WHERE entity_id = 'bens'")[0]["data"]
    asked: dict[str, int | None] = {content_key_of_text(bens) or "": minute(3), "no-such-content": None}

    def both(unit: WriteUnit) -> tuple[BatchState, BatchState]:
        stored = unit.load_state(ADA[0], keys)
        own_times = {"live": minute(1)}  # the stored keys' live logbook rows
        wanted = dict(asked)
        for k, s in stored.items():
            if s.content_key is not None and wanted.get(s.content_key) is None:
                wanted[s.content_key] = own_times.get(k[1])
        logbook_ids = {i for t, i in keys if t == "logbook_entry"}
        separate = BatchState(stored, unit.load_live_content(ADA[0], wanted),
                              unit.logbook_ids_of_other_users(ADA[0], logbook_ids))
        return unit.load_batch_state(ADA[0], keys, asked), separate

    folded, separate = await storage.write(both, commit=False)
    assert folded.stored == separate.stored
    assert {k: sorted(v) for k, v in folded.live_content.items()} == {
        k: sorted(v) for k, v in separate.live_content.items()}
    assert folded.logbook_ids_elsewhere == separate.logbook_ids_elsewhere == {"bens"}
    # What the case covers: each kind of stored key is there, as it should be.
    stored = folded.stored
    assert stored[("logbook_entry", "live")].live and stored[("logbook_entry", "twin")].duplicate_of == "live"
    assert not stored[("logbook_entry", "gone")].live and stored[("logbook_entry", "gone")].deleted_ms is not None
    assert stored[("logbook_entry", "never")].row_id is None and stored[("logbook_entry", "never")].deleted_ms
    assert stored[("goal", "g-old")].updated_ms == 1746057600000 and stored[("goal", "g-old")].content_key is None
    assert ("logbook_entry", "absent") not in stored and ("logbook_entry", "bens") not in stored
    assert list(folded.live_content.values()) == [["live"]]
