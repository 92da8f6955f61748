"""The SQLite schema: the app's tables on an empty file, the service's own tables brought up to date."""

from __future__ import annotations

import sqlite3

from service.store.interface import NotAnAppDatabase
from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.schema import (
    ADDED_COLUMNS,
    APP_SCHEMA,
    BACKFILLS,
    LEGACY_IDEMPOTENCY_COPY,
    LEGACY_IDEMPOTENCY_TABLE,
    SERVICE_SCHEMA,
)

REQUIRED_APP_TABLES = ("users", "sync_data", "sync_sequence", "logbook_entries")


def migrate(conn: SyncConnection) -> None:
    """The app schema on an empty file only: an existing app database keeps its tables, indexes and
    triggers exactly as they are. The service's own tables are added either way (inside the caller's
    write transaction)."""
    existing = {r["name"] for r in conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "users" not in existing:
        for statement in statements(APP_SCHEMA):
            conn.execute(statement)
    else:
        missing = [t for t in REQUIRED_APP_TABLES if t not in existing]
        if missing:
            raise NotAnAppDatabase(f"the database has a users table but no {', '.join(missing)}")
    for statement in statements(SERVICE_SCHEMA):
        conn.execute(statement)
    for table, backfill in BACKFILLS.items():
        if table not in existing:
            conn.execute(backfill)
    for table, column, column_type, fill in ADDED_COLUMNS:
        columns = {r["name"] for r in conn.fetchall(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type}")
            conn.execute(fill)
    if LEGACY_IDEMPOTENCY_TABLE in existing and "recovery_idempotency_keys" not in existing:
        conn.execute(LEGACY_IDEMPOTENCY_COPY)
    # A write on every start (the same row, rewritten): a database the service cannot write is refused
    # now, not at the first upload.
    conn.execute(
        "INSERT INTO recovery_service (key, value) VALUES ('writable', 'yes')"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


def statements(script: str) -> list[str]:
    """Split a schema script into statements, trigger bodies kept whole."""
    found: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        found.append(buffer.strip())
    return found
