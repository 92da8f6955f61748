"""What a device has sent is its raw records' device ids, and a `recovery_device_records` row only where
no raw record of the device's can say it (#17: a device row per record was an insert into a random-key
B-tree for every record of a first upload). Its counts, which a declaration of completeness is checked
against, stay exactly the distinct keys it sent, quarantined ones included. On every engine."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pytest

from service.domain import outcomes as oc
from service.domain.owners import UserRecord
from service.domain.records import LOGBOOK_ENTRY
from service.store import Storage
from service.store.device_records import SentBefore, device_receipt
from service.store.rows import RawRecordRow
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from tests.conftest import ADA, add_users, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
PHONE = "dev_phonephonephone1"
TABLET = "dev_tablettablet0002"
LAPTOP = "dev_laptoplaptop0003"


def entry(entry_id: str, notes: str = "scales") -> dict[str, Any]:
    return {"id": entry_id, "timestamp": 1748799900000 + int.from_bytes(entry_id.encode()[-2:]) * 60_000,
            "duration": 15, "type": "practice", "instrument": "piano", "notes": notes,
            "updatedAt": "2025-06-01T18:30:12.345Z"}


def unreadable(entry_id: str) -> dict[str, Any]:
    """An entry normalisation refuses: it is quarantined, not kept raw."""
    return {"id": entry_id, "timestamp": "the day after tomorrow", "duration": 15}


async def send(storage: Storage, device: str, *entries: dict[str, Any], goals: tuple[str, ...] = (),
               deleted: tuple[str, ...] = ()) -> list[str]:
    records = [IncomingRecord(LOGBOOK_ENTRY, msgspec.json.encode(e)) for e in entries]
    records += [IncomingRecord("goal", msgspec.json.encode({"id": g, "title": g, "updatedAt": "2025-06-01T00:00:00Z"}))
                for g in goals]
    result = await ingest(storage, Upload(owner=ADA[0], user=ADA_USER, device_id=device, source="push",
                                          records=records, deleted={LOGBOOK_ENTRY: list(deleted)}))
    assert isinstance(result, UploadResult)
    return [r.outcome for r in result.receipt.results]


def device_rows(storage: Storage) -> set[tuple[str, str]]:
    return {(r["device_id"], r["entity_id"]) for r in query(
        target(storage), "SELECT device_id, entity_id FROM recovery_device_records")}


def counts(storage: Storage) -> dict[tuple[str, str], int]:
    return {(r["device_id"], r["entity_type"]): r["received"] for r in query(
        target(storage), "SELECT device_id, entity_type, received FROM recovery_device_counts")}


def sent_by_device(storage: Storage) -> dict[str, set[tuple[str, str]]]:
    """What the store says each device sent (its raw records' keys and its device rows)."""
    sent: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in query(target(storage), "SELECT device_id, entity_type, entity_id FROM recovery_device_sent"):
        sent[r["device_id"]].add((r["entity_type"], r["entity_id"]))
    return dict(sent)


async def test_a_first_upload_writes_no_device_rows_and_counts_every_key(storage: Storage) -> None:
    add_users(target(storage), ADA)
    assert await send(storage, PHONE, entry("e1"), entry("e2"), goals=("g1",)) == [oc.INSERTED] * 3
    assert device_rows(storage) == set()
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 2, (PHONE, "goal"): 1}
    # Sent again, and then edited: the same keys, nothing new to count, no device row either.
    await send(storage, PHONE, entry("e1"), entry("e2"), goals=("g1",))
    await send(storage, PHONE, entry("e1", notes="arpeggios"))
    assert device_rows(storage) == set()
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 2, (PHONE, "goal"): 1}


async def test_the_same_bytes_from_a_second_device_get_that_device_a_row(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await send(storage, PHONE, entry("e1"), entry("e2"))
    # The tablet sends e1 byte for byte (its raw row is the phone's) and e2 in a version of its own.
    await send(storage, TABLET, entry("e1"), entry("e2", notes="from the tablet"))
    assert device_rows(storage) == {(TABLET, "e1")}
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 2, (TABLET, LOGBOOK_ENTRY): 2}
    await send(storage, TABLET, entry("e1"), entry("e2", notes="from the tablet"))
    await send(storage, PHONE, entry("e2", notes="from the tablet"))
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 2, (TABLET, LOGBOOK_ENTRY): 2}
    assert device_rows(storage) == {(TABLET, "e1")}
    # A version the phone sent before its last edit, sent again by the laptop: normalised again (it is not
    # what is stored), its raw row is the phone's, so the laptop needs a row of its own.
    await send(storage, PHONE, entry("e1", notes="edited"))
    await send(storage, LAPTOP, entry("e1"))
    assert device_rows(storage) == {(TABLET, "e1"), (LAPTOP, "e1")}
    assert counts(storage)[(LAPTOP, LOGBOOK_ENTRY)] == 1
    # Two devices deleting the same entry send the same deletion, kept raw once: the phone's.
    await send(storage, PHONE, deleted=("e2",))
    await send(storage, LAPTOP, deleted=("e2",))
    assert device_rows(storage) == {(TABLET, "e1"), (LAPTOP, "e1"), (LAPTOP, "e2")}
    assert counts(storage)[(LAPTOP, LOGBOOK_ENTRY)] == 2


async def test_a_quarantined_record_counts_once_through_its_device_row(storage: Storage) -> None:
    add_users(target(storage), ADA)
    assert await send(storage, PHONE, unreadable("bad"), entry("e1")) == [oc.QUARANTINED, oc.INSERTED]
    assert device_rows(storage) == {(PHONE, "bad")}
    await send(storage, PHONE, unreadable("bad"))
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 2}


async def test_a_database_with_a_device_row_for_every_key_counts_the_same(storage: Storage) -> None:
    """The previous version wrote a device row for every key beside its raw row: read the same."""
    add_users(target(storage), ADA)
    await send(storage, PHONE, entry("e1"), entry("e2"))
    for entry_id in ("e1", "e2"):
        query(target(storage), "INSERT INTO recovery_device_records (user_id, device_id, entity_type, entity_id)"
              " VALUES (?, ?, ?, ?)", (ADA[0], PHONE, LOGBOOK_ENTRY, entry_id))
    await send(storage, PHONE, entry("e1"), entry("e2"), entry("e3"))
    assert counts(storage) == {(PHONE, LOGBOOK_ENTRY): 3}
    assert device_rows(storage) == {(PHONE, "e1"), (PHONE, "e2")}


@pytest.mark.parametrize("seed", range(4))
async def test_any_sequence_of_sends_counts_each_devices_distinct_keys(storage: Storage, seed: int) -> None:
    """Three devices send overlapping keys in random versions (byte-identical copies of each other's,
    edits, unreadable ones), in a seeded random order: each device's counts are the distinct keys it
    sent, and the raw rows and device rows together say exactly which."""
    add_users(target(storage), ADA)
    rng = random.Random(seed)
    sent: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for _ in range(12):
        device = rng.choice([PHONE, TABLET, LAPTOP])
        batch: list[dict[str, Any]] = []
        for entry_id in rng.sample([f"e{i}" for i in range(10)], rng.randint(1, 6)):
            kind = rng.random()
            batch.append(unreadable(entry_id) if kind < 0.15 else entry(entry_id, notes=f"v{rng.randint(0, 2)}"))
            sent[device].add((LOGBOOK_ENTRY, entry_id))
        await send(storage, device, *batch)
    assert sent_by_device(storage) == sent
    assert counts(storage) == Counter((device, t) for device, keys in sent.items() for t, _ in keys)


def test_a_receipt_counts_repeats_once_and_rows_only_where_no_raw_row_of_the_device_says_it() -> None:
    kept = [RawRecordRow(LOGBOOK_ENTRY, "new", "{}", "sha-new", "c"),
            RawRecordRow(LOGBOOK_ENTRY, "copy", "{}", "sha-theirs", "c")]
    found = [SentBefore(LOGBOOK_ENTRY, "copy", "sha-theirs", False),
             SentBefore(LOGBOOK_ENTRY, "mine", "sha-mine", True)]
    sent = [(LOGBOOK_ENTRY, k) for k in ("new", "copy", "mine", "bad", "new", "bad")]
    receipt = device_receipt(sent, kept, found)
    assert receipt.rows == [(LOGBOOK_ENTRY, "copy"), (LOGBOOK_ENTRY, "bad")]
    assert receipt.new_per_type == {LOGBOOK_ENTRY: 3}
