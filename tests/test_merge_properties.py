"""Merge properties: the same records pushed in any order, any number of times, from any devices, end
in the same rows (CONTRACT section 8)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.pipeline import IncomingRecord, Upload, ingest
from service.store.database import Database
from service.store.uploads import UserRecord
from tests.conftest import ADA, add_users, query

USER = UserRecord(ADA[0], ADA[1], "user")
IDS = [f"entry-{i}" for i in range(4)]


def entry(entity_id: str, version: int) -> dict[str, Any]:
    """A distinct document per (id, version), each version edited later than the one before."""
    return {
        "id": entity_id,
        "timestamp": "2025-06-01T17:45:00.000Z",
        "duration": 10 + version,
        "type": "practice",
        "instrument": "piano",
        "pieces": [],
        "notes": f"{entity_id} v{version}",
        "createdAt": "2025-06-01T18:00:00.000Z",
        "updatedAt": f"2025-06-0{version + 1}T18:00:00.000Z",
    }


DELETION_TIMES = ["2025-06-02T12:00:00.000Z", "2025-06-05T12:00:00.000Z"]


def deletion(entity_id: str, when: str = DELETION_TIMES[0]) -> dict[str, Any]:
    return {"id": entity_id, "deletedAt": when}


records = st.one_of(
    st.builds(entry, st.sampled_from(IDS), st.integers(min_value=0, max_value=3)),
    st.builds(deletion, st.sampled_from(IDS), st.sampled_from(DELETION_TIMES)),
)
uploads = st.lists(
    st.tuples(st.sampled_from(["dev_aaaaaaaaaaaaaaaa", "dev_bbbbbbbbbbbbbbbb", None]), st.lists(records, max_size=6)),
    min_size=1,
    max_size=5,
)


async def push_all(db_file: Path, batches: list[tuple[str | None, list[dict[str, Any]]]]) -> list[tuple[Any, ...]]:
    db = await Database.open(db_file)
    try:
        add_users(str(db_file), ADA)
        for device, batch in batches:
            upload = Upload(
                owner=USER.id, user=USER, device_id=device, source="push",
                records=[IncomingRecord("logbook_entry", msgspec.json.encode(r)) for r in batch],
            )
            await ingest(db, upload)
    finally:
        await db.close()
    rows = query(
        str(db_file),
        "SELECT entity_id, checksum, deleted_at IS NOT NULL AS deleted FROM sync_data ORDER BY entity_id",
    )
    return [tuple(r) for r in rows]


def expected_rows(batches: list[tuple[str | None, list[dict[str, Any]]]]) -> dict[str, tuple[int, bool]]:
    """The winner per id: the latest version wins; the latest deletion wins over versions not newer than it.
    Version v is updated on 2025-06-0{v+1} at 18:00, so a deletion on 06-02 at 12:00 is newer than v0 only,
    and one on 06-05 at 12:00 is newer than every version."""
    latest: dict[str, int] = {}
    last_deletion: dict[str, str] = {}
    for _, batch in batches:
        for r in batch:
            if "deletedAt" in r:
                last_deletion[r["id"]] = max(last_deletion.get(r["id"], ""), r["deletedAt"])
            else:
                latest[r["id"]] = max(latest.get(r["id"], -1), int(r["notes"].rsplit("v", 1)[1]))
    newest_deleted = {DELETION_TIMES[0]: 0, DELETION_TIMES[1]: 3}
    return {
        i: (v, i in last_deletion and v <= newest_deleted[last_deletion[i]]) for i, v in latest.items()
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=uploads, data=st.data())
def test_any_order_and_repetition_converges(batches: list[tuple[str | None, list[dict[str, Any]]]],
                                            data: st.DataObject) -> None:
    flat = [(device, r) for device, batch in batches for r in batch]
    shuffled = data.draw(st.permutations(flat))
    repeats = data.draw(st.lists(st.sampled_from(flat), max_size=5)) if flat else []
    replay = [(d, [r]) for d, r in shuffled] + [(d, [r]) for d, r in repeats]
    with tempfile.TemporaryDirectory() as tmp:
        first = asyncio.run(push_all(Path(tmp) / "a.db", batches))
        second = asyncio.run(push_all(Path(tmp) / "b.db", replay))
    assert first == second
    # The winner is the one the rules name.
    winners = expected_rows(batches)
    live = {row[0]: bool(row[2]) for row in first}
    for entity_id, (_, is_deleted) in winners.items():
        assert live[entity_id] == is_deleted
