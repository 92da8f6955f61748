"""The pipeline's shortcut for byte-identical re-uploads never changes an outcome."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from service.pipeline import IncomingRecord, Upload, UploadResult, ingest
from service.store.database import Database
from service.store.uploads import UserRecord
from tests.conftest import ADA, add_users, query

USER = UserRecord(ADA[0], ADA[1], "user")
V1 = {"id": "e1", "timestamp": 1748799900000, "duration": 15, "type": "practice", "instrument": "piano",
      "updatedAt": "2025-06-01T18:30:12.345Z"}
V2 = {**V1, "duration": 20, "updatedAt": "2025-06-02T18:30:12.345Z"}


async def push(db: Database, *records: dict[str, Any], deleted: list[str] | None = None) -> list[str]:
    upload = Upload(owner=USER.id, user=USER, device_id="dev_aaaaaaaaaaaaaaaa", source="push",
                    records=[IncomingRecord("logbook_entry", msgspec.json.encode(r)) for r in records],
                    deleted={"logbook_entry": deleted} if deleted else {})
    result = await ingest(db, upload)
    assert isinstance(result, UploadResult)
    return [r.outcome for r in result.receipt.results]


async def test_identical_bytes_are_a_duplicate_only_while_the_stored_row_is_that_version(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "app.db")
    try:
        add_users(db.path, ADA)
        assert await push(db, V1) == ["inserted"]
        assert await push(db, V1) == ["duplicate"]
        assert await push(db, V2) == ["updated"]
        assert await push(db, V1) == ["kept_existing"]  # same bytes as before, but no longer the stored version
        assert await push(db, V2) == ["duplicate"]
        assert await push(db, deleted=["e1"]) == ["deleted"]
        assert await push(db, V2) == ["suppressed"]
        assert await push(db, V1, V1) == ["suppressed", "suppressed"]
    finally:
        await db.close()
    rows = query(db.path, "SELECT checksum, version, deleted_at FROM sync_data")
    assert len(rows) == 1 and rows[0]["deleted_at"] is not None
    raw = query(db.path, "SELECT COUNT(*) AS n FROM recovery_raw_records WHERE entity_id = 'e1'")
    assert raw[0]["n"] == 3  # V1, V2 and the deletion, each kept once


async def test_a_pulled_entry_pushed_back_is_a_duplicate(tmp_path: Path) -> None:
    """Pulled documents carry created_at as an ISO string, which the app's rules turn into epoch ms on
    the way in: same content and edit time, different checksum, still the same version."""
    db = await Database.open(tmp_path / "app.db")
    try:
        add_users(db.path, ADA)
        entry = {**V1, "createdAt": "2025-06-01T18:00:00.000Z"}
        assert await push(db, entry) == ["inserted"]
        stored = msgspec.json.decode(query(db.path, "SELECT data FROM sync_data")[0]["data"])
        assert isinstance(stored["created_at"], str)
        assert await push(db, stored) == ["duplicate"]
    finally:
        await db.close()
    assert query(db.path, "SELECT COUNT(*) AS n FROM recovery_archive")[0]["n"] == 0


async def test_new_rows_get_ids_led_by_their_seq_with_a_random_part_of_their_own(tmp_path: Path) -> None:
    """`sync_` + the seq in 12 hex digits (so new rows append to the key's B-tree) + 8 random hex digits."""
    db = await Database.open(tmp_path / "app.db")
    try:
        add_users(db.path, ADA)
        await push(db, *({**V1, "id": f"e{n}", "duration": 10 + n} for n in range(50)))
    finally:
        await db.close()
    rows = query(db.path, "SELECT id, seq FROM sync_data ORDER BY seq")
    assert len(rows) == 50
    for row in rows:
        assert re.fullmatch(r"sync_[0-9a-f]{20}", row["id"]) and int(row["id"][5:17], 16) == row["seq"]
    assert len({row["id"][17:] for row in rows}) > 45  # random parts, not one repeated
