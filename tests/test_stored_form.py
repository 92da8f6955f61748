"""The rows the service writes are the rows the app writes (CONTRACT section 6 items 3, 5 and 6): the
stored `data` text as JSON.stringify spells it, `deleted_at` as ISO-Z with milliseconds, the raw record
byte for byte."""

from __future__ import annotations

import hashlib
import json

from service.domain.owners import UserRecord
from service.store import Storage
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from tests.conftest import ADA, add_users, query, target

USER = UserRecord(ADA[0], ADA[1], "user")
NOW_MS = 1_764_500_000_000  # 2025-11-30T10:53:20.000Z
NOW_ISO = "2025-11-30T10:53:20.000Z"

# As a device's bytes: numbers the app's JSON.parse/JSON.stringify round trip respells.
ENTRY_BYTES = (
    b'{"id":"e1","timestamp":1748799900000,"duration":45.0,"type":"practice","instrument":"piano",'
    b'"pieces":[{"title":"Nocturne","composer":"Chopin","duration":10.0}],'
    b'"metadata":{"one":1.0,"big":1E21,"minus_zero":-0.0,"past_2_53":9007199254740993,'
    b'"huge":123456789012345678901234567890,"small":1e-7,"plain":0.000001,"fraction":2.50},'
    b'"updatedAt":"2025-06-01T18:30:12.345Z"}'
)
EXPECTED_METADATA = (
    '{"big":1e+21,"fraction":2.5,"huge":1.2345678901234568e+29,"minus_zero":0,"one":1,'
    '"past_2_53":9007199254740992,"plain":0.000001,"small":1e-7}'
)


async def _ingest(
    db: Storage, records: list[IncomingRecord], deleted: dict[str, list[str]] | None = None
) -> None:
    upload = Upload(owner=USER.id, user=USER, device_id="dev_aaaaaaaaaaaaaaaa", source="push", records=records,
                    deleted=deleted or {})
    result = await ingest(db, upload, now_ms=NOW_MS)
    assert isinstance(result, UploadResult)


async def test_stored_data_text_spells_numbers_as_javascript(storage: Storage) -> None:
    db = storage
    add_users(target(db), ADA)
    await _ingest(db, [IncomingRecord("logbook_entry", ENTRY_BYTES)])
    row = query(target(db), "SELECT data, checksum FROM sync_data")[0]
    assert '"metadata":' + EXPECTED_METADATA in row["data"]
    assert '"duration":45,' in row["data"] and '"duration":10,' in row["data"]
    # The checksum is over exactly the stored text: what the app hashes is what it stores, sorted.
    assert hashlib.sha256(row["data"].encode()).hexdigest() == row["checksum"]
    logbook = query(target(db), "SELECT metadata, pieces FROM logbook_entries")[0]
    assert logbook["metadata"] == EXPECTED_METADATA
    assert logbook["pieces"] == '[{"composer":"Chopin","duration":10,"id":"nocturne-chopin","title":"Nocturne"}]'
    raw = query(target(db), "SELECT raw FROM recovery_raw_records")[0]
    assert raw["raw"].encode() == ENTRY_BYTES  # the device's bytes, not the respelled ones


async def test_deleted_at_is_iso_z_with_milliseconds_in_both_tables(storage: Storage) -> None:
    """A tombstone's `deletedAt` (any accepted form) and an id of a device's deleted list (the upload time)."""
    live = {"timestamp": 1748799900000, "type": "practice", "instrument": "piano",
            "updatedAt": "2025-06-01T18:30:12.345Z"}
    db = storage
    add_users(target(db), ADA)
    records = [  # different durations: the same content under two ids would be a content duplicate
        IncomingRecord("logbook_entry", json.dumps({"id": f"e{n}", "duration": n, **live}).encode())
        for n in (1, 2, 3)
    ]
    await _ingest(db, records)
    await _ingest(
        db,
        [
            IncomingRecord("logbook_entry", b'{"id":"e1","deletedAt":"2025-07-02T09:15:00Z"}'),
            IncomingRecord("logbook_entry", b'{"id":"e2","deletedAt":"2025-07-02T11:15:00+02:00"}'),
        ],
        deleted={"logbook_entry": ["e3"]},
    )
    expected = {"e1": "2025-07-02T09:15:00.000Z", "e2": "2025-07-02T09:15:00.000Z", "e3": NOW_ISO}
    sync = {r["entity_id"]: r["deleted_at"] for r in query(target(db), "SELECT entity_id, deleted_at FROM sync_data")}
    logbook = {r["id"]: r["deleted_at"] for r in query(target(db), "SELECT id, deleted_at FROM logbook_entries")}
    assert sync == expected
    assert logbook == expected


async def test_a_goal_without_status_is_stored(storage: Storage) -> None:
    db = storage
    add_users(target(db), ADA)
    await _ingest(db, [IncomingRecord("goal", b'{"id":"g1","title":"Scales","progress":0}')])
    assert [r["data"] for r in query(target(db), "SELECT data FROM sync_data")] == ['{"id":"g1","title":"Scales"}']
    assert query(target(db), "SELECT COUNT(*) AS n FROM recovery_quarantine")[0]["n"] == 0
