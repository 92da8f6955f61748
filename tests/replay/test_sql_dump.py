"""Replaying a SQL dump of the app database: its sync_data rows go through the same merge rules."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from service.domain.normalise import normalise
from service.domain.records import Normalised
from service.store.sqlite.schema import APP_SCHEMA
from tests.conftest import ADA, BEN, load_fixture
from tests.replay.helpers import app_database, count, query, replay

Capsys = pytest.CaptureFixture[str]
NOW_MS = 1_800_000_000_000
LAPTOP = "dev_adaLaptop00000001"


def app_with_history(path: Path) -> dict[tuple[str, str, str], str]:
    """The app database before the wipe: Ada's and Ben's history as the app stored it, one entry
    deleted. Returns, per row, the checksum the stored document gets when it is uploaded again.

    That is not always the stored checksum: by the app's rules a stored entry's ISO `created_at` (copied
    from `createdAt` after times were converted) becomes epoch ms when the document comes back."""
    export = load_fixture("exports/mirubato-data-export-2025-11-30.json")
    records = [("logbook_entry", e) for e in export["logbook"]] + [("goal", g) for g in export["goals"]]
    conn = sqlite3.connect(path)
    conn.executescript(APP_SCHEMA)
    conn.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [ADA[:2], BEN[:2]])
    checksums: dict[tuple[str, str, str], str] = {}
    for user, device in ((ADA[0], LAPTOP), (BEN[0], None)):
        for entity_type, record in records:
            stored = normalise(entity_type, record, user, now_ms=NOW_MS)
            assert isinstance(stored, Normalised)
            again = normalise(entity_type, json.loads(stored.text), user, now_ms=NOW_MS)
            assert isinstance(again, Normalised)
            checksums[(user, entity_type, stored.entity_id)] = again.checksum
            conn.execute(
                "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, device_id, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"sync_{len(checksums)}", user, entity_type, stored.entity_id, stored.text,
                 stored.checksum, device, len(checksums)),
            )
    conn.execute("UPDATE sync_data SET deleted_at = '2025-07-02 09:15:00' WHERE entity_id = 'V1StGXR8_Z5jdHi6B-0004'")
    conn.commit()
    conn.close()
    return checksums


def dump_of(db: Path, target: Path) -> Path:
    """What sqlite3's `.dump` writes."""
    conn = sqlite3.connect(db)
    try:
        target.write_text("\n".join(conn.iterdump()) + "\n", encoding="utf-8")
    finally:
        conn.close()
    return target


def test_a_dump_brings_back_every_row_with_its_checksum(capsys: Capsys, tmp_path: Path) -> None:
    stored = app_with_history(tmp_path / "before.db")
    dump = dump_of(tmp_path / "before.db", tmp_path / "d1-backup.sql")
    db = app_database(tmp_path / "app.db", ADA)  # Ben is not in this database

    run = replay(capsys, db, dump)
    assert run.exit_code == 0, run.stderr
    assert run.file("d1-backup.sql")["format"] == "SQL dump"
    rows = query(db, "SELECT user_id, entity_type, entity_id, checksum, device_id, deleted_at FROM sync_data")
    live = {(r["user_id"], r["entity_type"], r["entity_id"]): r["checksum"] for r in rows if r["deleted_at"] is None}
    assert live == {k: v for k, v in stored.items() if k[0] == ADA[0] and k[2] != "V1StGXR8_Z5jdHi6B-0004"}
    assert {r["device_id"] for r in rows} == {LAPTOP}  # each row's own device

    # The deleted row is a deletion with its own time: remembered, so an older copy cannot return.
    tombstone = query(db, "SELECT deleted_ms FROM recovery_entity_state WHERE entity_id = 'V1StGXR8_Z5jdHi6B-0004'")
    assert tombstone[0]["deleted_ms"] == 1751447700000  # 2025-07-02 09:15:00 UTC
    assert run.summary["users"][ADA[0]] == {**run.summary["users"][ADA[0]], "inserted": 12, "deleted": 1}

    # Ben's rows wait in quarantine under his id, until he exists again.
    waiting = query(db, "SELECT owner, reason FROM recovery_quarantine")
    assert {tuple(w) for w in waiting} == {(BEN[0], "unknown_user")} and len(waiting) == 13
    problems = run.file("d1-backup.sql")["owner_problems"]
    assert [(p["reason"], p["owner"], p["records"]) for p in problems] == [("unknown_user", BEN[0], 13)]
    assert {tuple(r) for r in query(db, "SELECT user_id, device_id, file_name FROM recovery_ledger")} == {
        (ADA[0], LAPTOP, "d1-backup.sql"), (BEN[0], None, "d1-backup.sql")}

    assert replay(capsys, db, dump).file("d1-backup.sql")["status"] == "already_replayed"


def test_a_wrangler_style_dump_with_awkward_statements_is_read_by_sqlite(capsys: Capsys, tmp_path: Path) -> None:
    # A `;` inside a string, and a string literal running over two lines.
    doc = '{"id":"e1","timestamp":1748800000000,"duration":5,"type":"practice","instrument":"piano",\n' \
          '"notes":"scales; then arpeggios","updatedAt":"2025-06-01T18:30:12.345Z"}'
    dump = tmp_path / "export.sql"
    dump.write_text(
        "PRAGMA defer_foreign_keys=TRUE;\n"
        "-- a comment; with a semicolon\n"
        "CREATE TABLE sync_data (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, entity_type TEXT NOT NULL,\n"
        "  entity_id TEXT NOT NULL, data TEXT NOT NULL, checksum TEXT NOT NULL, deleted_at TIMESTAMP);\n"
        "CREATE TRIGGER t AFTER UPDATE ON sync_data BEGIN SELECT 1; SELECT 2; END;\n"
        f"INSERT INTO \"sync_data\" VALUES('s1','{ADA[0]}','logbook_entry','e1','{doc}','x',NULL);"
        f" INSERT INTO \"sync_data\" VALUES('s2','{ADA[0]}','goal','g1','not json','x',NULL);\n",
        encoding="utf-8",
    )
    db = app_database(tmp_path / "app.db", ADA)
    run = replay(capsys, db, dump)
    assert run.exit_code == 0, run.stderr
    assert {k: v for k, v in run.summary["counts"].items() if v} == {"inserted": 1, "quarantined": 1}
    notes = query(db, "SELECT data ->> '$.notes' AS notes FROM sync_data")[0]["notes"]
    assert notes == "scales; then arpeggios"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CREATE TABLE sync_data (id TEXT, user_id TEXT, entity_type TEXT, entity_id TEXT, data TEXT,\n",
         "ends in the middle of a statement"),
        ("BEGIN TRANSACTION;\nCREATE TABLE sync_data (id TEXT, user_id TEXT, entity_type TEXT, entity_id TEXT,"
         " data TEXT, deleted_at TEXT);\n", "never commits"),
        ("CREATE TABLE users (id TEXT);\n", "no sync_data table"),
        ("CREATE TABLE sync_data (id TEXT, user_id TEXT);\n", "no data, deleted_at, entity_id, entity_type column"),
        ("INSERT INTO nowhere VALUES (1);\n", "SQLite refused a statement"),
    ],
)
def test_a_broken_dump_is_unreadable_and_nothing_is_written(
    capsys: Capsys, tmp_path: Path, text: str, message: str
) -> None:
    dump = tmp_path / "broken.sql"
    dump.write_text(text, encoding="utf-8")
    db = app_database(tmp_path / "app.db", ADA)
    run = replay(capsys, db, dump)
    assert run.exit_code == 2
    assert message in run.file("broken.sql")["error"]
    assert f"{dump}: error:" in run.stderr
    assert count(db, "recovery_ledger") == count(db, "recovery_replay_checkpoints") == 0


def test_a_dump_cannot_reach_any_other_database(capsys: Capsys, tmp_path: Path) -> None:
    db = app_database(tmp_path / "app.db", ADA)
    dump = tmp_path / "hostile.sql"
    dump.write_text(f"ATTACH DATABASE '{db}' AS app;\nDELETE FROM app.users;\n", encoding="utf-8")
    run = replay(capsys, db, dump)
    assert run.exit_code == 2
    assert "not authorized" in run.file("hostile.sql")["error"]
    assert count(db, "users") == 1
