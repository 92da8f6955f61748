"""Building app databases before and after recovery, and applying an export the way D1 would."""

from __future__ import annotations

import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec

from service.domain.owners import UserRecord
from service.store.sqlite import guard
from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.schema import APP_SCHEMA
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest

# The columns of logbook_entries, in the order app_state() lists them.
LOGBOOK_COLUMNS = (
    "id", "user_id", "timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids", "notes",
    "mood", "tags", "session_id", "metadata", "created_at", "updated_at", "sync_version", "checksum", "deleted_at",
    "device_id",
)
SQL_FILE = re.compile(r"^\d{4}-[a-z_]+\.sql$")


def user_record(user: tuple[str, str, str]) -> UserRecord:
    return UserRecord(user[0], user[1], user[2])


def create_app_database(path: Path, *users: tuple[str, str, str], sequence: int = 0) -> Path:
    """An app database (the production shape) holding these users and no history: the state after the wipe,
    with the sequence where the lost history left it."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(APP_SCHEMA)
        conn.executemany("INSERT INTO users (id, email, role) VALUES (?, ?, ?)", users)
        conn.execute("UPDATE sync_sequence SET current_value = ?", (sequence,))
        conn.commit()
    return path


def insert_sync_row(path: Path, user_id: str, entity_type: str, entity_id: str, data: str, *, version: int = 1,
                    seq: int | None = None, updated_at: str | None = None, checksum: str | None = None,
                    deleted_at: str | None = None) -> None:
    """A sync_data row written directly, as the app (or the service) would have stored it."""
    with closing(sqlite3.connect(path)) as conn:
        if seq is None:
            seq = conn.execute("SELECT current_value + 1 FROM sync_sequence").fetchone()[0]
        conn.execute(
            "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, updated_at,"
            " deleted_at, device_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, COALESCE(?, CURRENT_TIMESTAMP), ?, ?, ?)",
            (f"sync_{entity_id}_{version}", user_id, entity_type, entity_id, data,
             checksum or f"sum-{entity_id}-{version}", version, updated_at, deleted_at, "dev_direct00000000", seq),
        )
        conn.execute("UPDATE sync_sequence SET current_value = MAX(current_value, ?)", (seq,))
        conn.commit()


def insert_logbook_row(path: Path, row: dict[str, Any]) -> None:
    """A logbook_entries row written directly: `row` maps every column of LOGBOOK_COLUMNS."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO logbook_entries (id, user_id, timestamp, duration, type, instrument, pieces, techniques,"
            " goal_ids, notes, mood, tags, session_id, metadata, created_at, updated_at, sync_version, checksum,"
            " deleted_at, device_id) VALUES (:id, :user_id, :timestamp, :duration, :type, :instrument, :pieces,"
            " :techniques, :goal_ids, :notes, :mood, :tags, :session_id, :metadata, :created_at, :updated_at,"
            " :sync_version, :checksum, :deleted_at, :device_id)",
            row,
        )
        conn.commit()


def logbook_row(entry_id: str, user_id: str, **columns: Any) -> dict[str, Any]:
    """A plausible logbook row; `columns` override its values."""
    row: dict[str, Any] = {
        "id": entry_id, "user_id": user_id, "timestamp": 1748800000000, "duration": 15, "type": "practice",
        "instrument": "piano", "pieces": "[]", "techniques": "[]", "goal_ids": "[]", "notes": None, "mood": None,
        "tags": "[]", "session_id": None, "metadata": None, "created_at": 1748800000000,
        "updated_at": 1748800000000, "sync_version": 1, "checksum": f"sum-{entry_id}", "deleted_at": None,
        "device_id": None,
    }
    return row | columns


def copy_database(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


async def recover(path: Path, uploads: list[tuple[tuple[str, str, str], str, list[tuple[str, dict[str, Any]]],
                                            dict[str, list[Any]]]]) -> list[str]:
    """Take uploads (user, device, [(entity_type, record)], deleted lists) through the service's pipeline;
    the upload ids, in order."""
    db = await SqliteStorage.open(path)
    try:
        ids = []
        for user, device, records, deleted in uploads:
            upload = Upload(
                owner=user[0], user=user_record(user), device_id=device, source="recovery",
                records=[IncomingRecord(entity_type, msgspec.json.encode(r)) for entity_type, r in records],
                deleted=deleted,
            )
            result = await ingest(db, upload)
            assert isinstance(result, UploadResult)
            ids.append(result.upload_id)
        return ids
    finally:
        await db.close()


def export_files(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.iterdir() if SQL_FILE.match(p.name))


def read_statements(path: Path) -> list[str]:
    """The file's statements, split by SQLite's own notion of a complete statement (header comment dropped)."""
    text = path.read_bytes().decode("utf-8")
    statements: list[str] = []
    buffer = ""
    for line in text.splitlines(keepends=True):
        if not buffer and line.startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    assert not buffer.strip(), f"incomplete statement at the end of {path.name}"
    return statements


def apply_export(db_path: Path, out_dir: Path, *, files: list[Path] | None = None) -> None:
    """Apply the files one by one as `wrangler d1 execute --file` would: each file one script, foreign keys
    on, and the service's guard installed, so a DELETE, DROP or REPLACE on an app table would fail."""
    for file in files if files is not None else export_files(out_dir):
        execute_script(db_path, file.read_bytes().decode("utf-8"))


def execute_script(db_path: Path, script: str) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.set_authorizer(guard.authorize)
        conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")


def rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return [tuple(r) for r in conn.execute(sql, params)]


def app_state(db_path: Path) -> dict[str, Any]:
    """What production must end up with: sync_data per key, logbook_entries per id, and the sequence."""
    sync = rows(db_path, "SELECT user_id, entity_type, entity_id, data, checksum, version, deleted_at, seq"
                         " FROM sync_data")
    logbook = rows(db_path, "SELECT id, user_id, timestamp, duration, type, instrument, pieces, techniques, goal_ids,"
                            " notes, mood, tags, session_id, metadata, created_at, updated_at, sync_version, checksum,"
                            " deleted_at, device_id FROM logbook_entries")
    return {
        "sync_data": {r[:3]: r[3:] for r in sync},
        "logbook_entries": {r[0]: r for r in logbook},
        "sync_sequence": rows(db_path, "SELECT id, current_value FROM sync_sequence"),
    }


def full_dump(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every row of the tables an export writes (ids and server times included)."""
    return {
        table: rows(db_path, f"SELECT * FROM {table} ORDER BY rowid")  # noqa: S608 (fixed table names)
        for table in ("users", "sync_data", "logbook_entries", "sync_sequence")
    }

