"""The statements an upload runs read what its own keys need, never the user's whole history: on SQLite,
no step of their query plans scans a table or walks an index by the user (and entity type) alone.

Such a walk passes every functional test and costs nothing on a small database, then grows with the
history: the content-holder lookup did exactly that (`SEARCH e USING PRIMARY KEY (user_id=? AND
entity_type=?)`), 5.8 us an entry of the replay writer's time at 200k entries and 20.7 at 1M (#17)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from service.domain.owners import UserRecord
from service.store.sqlite.engine import SqliteStorage
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, ingest_batch
from tests.conftest import ADA, BEN, add_users

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
BEN_USER = UserRecord(BEN[0], BEN[1], "user")
DEVICE = "dev_aaaaaaaaaaaaaaaa"

# A plan step over many rows: a table or index scanned, or searched by the user (and entity type) only.
_HISTORY_WIDE = re.compile(
    r"^(?:SCAN (?!k\b|t\b|layer\b|json_each\b|CONSTANT ROW)\w+(?! VIRTUAL TABLE)"
    r"|SEARCH \w+ USING (?:COVERING )?(?:INDEX \w+|PRIMARY KEY) \((?:user_id|owner)=\?(?: AND entity_type=\?)?\)$)"
)


def _entry(entry_id: str, minute: int, updated: str = "2025-06-01T18:30:12.345Z", **extra: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": 1748799900000 + minute * 60_000, "duration": 15, "type": "practice",
            "instrument": "piano", "updatedAt": updated, **extra}


def _upload(user: UserRecord, entries: list[dict[str, Any]], deleted: list[str] | None = None,
            goals: list[dict[str, Any]] | None = None) -> Upload:
    records = [IncomingRecord("logbook_entry", msgspec.json.encode(e)) for e in entries]
    records += [IncomingRecord("goal", msgspec.json.encode(g)) for g in goals or []]
    return Upload(owner=user.id, user=user, device_id=DEVICE, source="push", records=records,
                  deleted={"logbook_entry": deleted} if deleted else {})


def _in_exists(step_id: int, parents: dict[int, tuple[int, str]], sql: str) -> bool:
    """A step of an `EXISTS (SELECT 1 ...)` subquery: it stops at the first row it finds."""
    parent = parents[step_id][0]
    while parent in parents:
        if parents[parent][1].startswith("SCALAR SUBQUERY") and "EXISTS (SELECT 1 FROM" in sql:
            return True
        parent = parents[parent][0]
    return False


def history_wide_steps(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """Each statement that reads, with the steps of its plan that walk more than its keys."""
    found: dict[str, list[str]] = {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for sql in statements:
            if "SELECT" not in sql.upper():
                continue
            plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            parents = {step_id: (parent, detail) for step_id, parent, _, detail in plan}
            wide = [detail for step_id, _, _, detail in plan
                    if _HISTORY_WIDE.match(detail) and not _in_exists(step_id, parents, sql)]
            if wide:
                found[sql] = wide
    finally:
        conn.close()
    return found


async def test_an_uploads_statements_read_its_keys_not_the_users_history(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    try:
        add_users(str(db), ADA, BEN)
        traced: list[str] = []
        connections = [storage.writer, *storage._readers]
        for connection in connections:  # expanded SQL (parameters in place), on each connection's own thread
            await connection.run(lambda _, c=connection: c._conn.set_trace_callback(traced.append))
        # Every path of the merge: new entries and content twins, a goal, edits, deletions (of a stored
        # row and of one never seen), an edit of a twin's holder, exact re-uploads, another user's entry.
        first = [_entry(f"e{i}", i) for i in range(20)] + [_entry("twin", 3)]
        await ingest(storage, _upload(ADA_USER, first, goals=[{"id": "g1", "title": "Scales",
                                                                "updatedAt": "2025-06-01T18:30:12.345Z"}]))
        edited = [_entry("e3", 30, "2025-06-02T10:00:00.000Z"), _entry("e5", 5, "2025-06-02T10:00:00.000Z",
                                                                       notes="slower")]
        await ingest(storage, _upload(ADA_USER, edited, deleted=["e7", "never-seen"]))
        await ingest(storage, _upload(ADA_USER, first[10:]))  # repeats
        results = await ingest_batch(storage, [_upload(BEN_USER, [_entry("bens", 1), _entry("e1", 1)]),
                                               _upload(ADA_USER, [_entry("late", 40)], deleted=["twin"])])
        assert all(isinstance(r, UploadResult) for r in results)
        for connection in connections:
            await connection.run(lambda _, c=connection: c._conn.set_trace_callback(None))
    finally:
        await storage.close()
    assert any("recovery_entity_state" in sql and "content_key" in sql for sql in traced)  # the case covers it
    assert any("l.timestamp = k.value" in sql for sql in traced)  # and the holders found by their time
    assert any("JOIN recovery_device_records d" in sql for sql in traced)  # and what the device sent before
    assert history_wide_steps(db, traced) == {}


async def test_a_device_re_pushing_its_history_is_not_looked_up_again_by_the_writer(tmp_path: Path) -> None:
    """The repeat lookup before staging says which repeats the device sent itself (their raw rows are its);
    the writer then reads nothing of what the device sent before (#17: that lookup read a raw row for
    every record of a re-upload, which fell to 1.88x of the first upload against a target of 2x)."""
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    try:
        add_users(str(db), ADA)
        history = [_entry(f"e{i}", i) for i in range(20)]
        await ingest(storage, _upload(ADA_USER, history))
        traced: list[str] = []
        await storage.writer.run(lambda c: c._conn.set_trace_callback(traced.append))
        await ingest(storage, _upload(ADA_USER, history))
        await storage.writer.run(lambda c: c._conn.set_trace_callback(None))
    finally:
        await storage.close()
    assert any("INSERT INTO recovery_ledger" in sql for sql in traced)  # the writer ran the upload
    assert not [sql for sql in traced if "JOIN recovery_device_records d" in sql]
