"""Merge properties: the same records pushed in any order, any number of times, from any devices, end
in the same rows (CONTRACT section 8), and in the versions the rules name, content duplicates and
deletions together."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.merge import round_trip_form
from service.domain.normalise import content_key_of_text
from service.domain.owners import UserRecord
from service.domain.records import LOGBOOK_ENTRY
from service.store.merge_state import document_updated_ms
from service.store.sqlite.engine import SqliteStorage
from service.usecases.ingest import IncomingRecord, Upload, ingest
from tests.conftest import ADA, add_users, query
from tests.domain import merge_model as model

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
    db = await SqliteStorage.open(db_file)
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


shared_records = st.one_of(
    st.builds(model.entry, st.sampled_from(model.IDS), st.sampled_from(model.VERSIONS)),
    st.builds(lambda i, v: model.pushed_back(model.entry(i, v)), st.sampled_from(model.IDS),
              st.sampled_from(model.VERSIONS)),
    st.builds(model.deletion, st.sampled_from(model.IDS), st.sampled_from(model.DELETION_TIMES)),
)


async def push_uploads(db_file: Path, batches: list[list[dict[str, Any]]]) -> dict[str, model.Final]:
    db = await SqliteStorage.open(db_file)
    try:
        add_users(str(db_file), ADA)
        for batch in batches:
            upload = Upload(
                owner=USER.id, user=USER, device_id="dev_aaaaaaaaaaaaaaaa", source="push",
                records=[IncomingRecord("logbook_entry", msgspec.json.encode(r)) for r in batch],
            )
            await ingest(db, upload)
    finally:
        await db.close()
    # The merge state kept: state rows, and the rows whose text holds theirs (read back as the store does).
    rows = query(
        str(db_file),
        """SELECT k.entity_id, s.data, s.deleted_at IS NULL AS live, e.updated_ms, e.content_key, e.duplicate_of
           FROM (SELECT entity_id FROM recovery_entity_state UNION SELECT entity_id FROM sync_data) k
           LEFT JOIN recovery_entity_state e ON e.entity_id = k.entity_id
           LEFT JOIN sync_data s ON s.entity_id = k.entity_id""",
    )
    archive = query(str(db_file), "SELECT COUNT(*) AS n, COUNT(DISTINCT entity_id || checksum || data) AS d"
                                  " FROM recovery_archive")[0]
    assert archive["n"] == archive["d"]  # no version archived twice
    return {
        r["entity_id"]: model.Final(
            r["entity_id"],
            round_trip_form(LOGBOOK_ENTRY, msgspec.json.decode(r["data"])) if r["data"] and r["live"] else None,
            r["updated_ms"] if r["updated_ms"] is not None or not r["data"] else document_updated_ms(r["data"], None),
            r["content_key"] or (content_key_of_text(r["data"]) if r["data"] else None), r["duplicate_of"],
        )
        for r in rows
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(shared_records, min_size=1, max_size=8), data=st.data())
def test_content_duplicates_and_deletions_end_in_the_versions_the_rules_name_in_any_order(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Issue 13 item 3 through the whole pipeline: versions shared by several ids, the app client's
    pushed-back form of them, and deletions, in any order and cut into uploads anyhow, each id ends in
    its winning version (its own live row, or a content duplicate of a live row with that content) or
    deleted, and the contents live are exactly the winners'."""
    shuffled = data.draw(st.permutations(records))
    cuts = data.draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
    batches: list[list[dict[str, Any]]] = []
    for record, cut in zip(shuffled, cuts, strict=True):
        if cut or not batches:
            batches.append([])
        batches[-1].append(record)
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one = asyncio.run(push_uploads(Path(tmp) / "a.db", [[r] for r in records]))
        cut_up = asyncio.run(push_uploads(Path(tmp) / "b.db", batches))
    model.check_fates(one_by_one, records)
    model.check_fates(cut_up, records)
