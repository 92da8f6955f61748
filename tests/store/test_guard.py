"""The service's connections cannot drop, delete from, replace into or rebuild an app table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.guard import GuardViolation
from tests.conftest import ADA, add_users, query

DESTRUCTIVE = [
    "DROP TABLE users",
    "DROP TABLE IF EXISTS sync_data",
    "DELETE FROM sync_data",
    "DELETE FROM users WHERE id = 'x'",
    "INSERT OR REPLACE INTO users (id, email) VALUES ('user_Q1w2E3r4T5y6U7i8O9p0a', 'a@b.c')",
    "REPLACE INTO sync_data (id, user_id, entity_type, entity_id, data, checksum)"
    " VALUES ('s', 'u', 't', 'i', '{}', 'c')",
    "ALTER TABLE users RENAME TO users_old",
    "ALTER TABLE sync_data ADD COLUMN extra TEXT",
    "DROP INDEX idx_sync_data_seq",
    "DROP TRIGGER sync_data_touch_updated_at",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA writable_schema = ON",
    "CREATE TRIGGER sneaky AFTER INSERT ON sync_data BEGIN DELETE FROM logbook_entries; END",
]


@pytest.fixture
async def db(tmp_path: Path) -> SqliteStorage:
    path = tmp_path / "app.db"
    database = await SqliteStorage.open(path)
    add_users(str(path), ADA)
    return database


@pytest.mark.parametrize("statement", DESTRUCTIVE)
async def test_destructive_statements_are_refused(db: SqliteStorage, statement: str) -> None:
    try:
        with pytest.raises(sqlite3.DatabaseError):
            async with db.sql_write() as conn:
                await conn.execute(statement)
                # A trigger body is authorised when a statement fires it.
                await conn.execute(
                    "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum)"
                    " VALUES ('s1', ?, 'goal', 'g', '{}', 'c')",
                    (ADA[0],),
                )
    finally:
        await db.close()
    assert [r["id"] for r in query(db.path, "SELECT id FROM users")] == [ADA[0]]
    assert query(db.path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0


async def test_the_rebuild_of_the_incident_is_refused(db: SqliteStorage) -> None:
    try:
        with pytest.raises(sqlite3.DatabaseError):
            async with db.sql_write() as conn:
                await conn.execute("CREATE TABLE users_new AS SELECT * FROM users")
                await conn.execute("DROP TABLE users")
    finally:
        await db.close()
    assert query(db.path, "SELECT name FROM sqlite_master WHERE name = 'users_new'") == []


async def test_replace_is_refused_before_sqlite_sees_it(db: SqliteStorage) -> None:
    try:
        with pytest.raises(GuardViolation):
            async with db.sql_write() as conn:
                await conn.execute("INSERT OR REPLACE INTO recovery_users VALUES ('u', 'a', 'b')")
    finally:
        await db.close()


async def test_service_tables_and_ordinary_writes_are_allowed(db: SqliteStorage) -> None:
    try:
        async with db.sql_write() as conn:
            await conn.execute(
                "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum)"
                " VALUES ('s1', ?, 'goal', 'g', '{}', 'c')",
                (ADA[0],),
            )
            await conn.execute("UPDATE sync_data SET version = 2 WHERE id = 's1'")
            await conn.execute("DELETE FROM recovery_idempotency_keys WHERE created_at < 0")
    finally:
        await db.close()
    assert query(db.path, "SELECT version FROM sync_data")[0]["version"] == 2


async def test_connections_run_with_the_required_pragmas(db: SqliteStorage) -> None:
    try:
        async with db.sql_write() as conn:
            fk = await conn.fetchone("PRAGMA foreign_keys")
            sync = await conn.fetchone("PRAGMA synchronous")
            journal = await conn.fetchone("PRAGMA journal_mode")
            busy = await conn.fetchone("PRAGMA busy_timeout")
    finally:
        await db.close()
    assert fk is not None and fk[0] == 1
    assert sync is not None and sync[0] == 2  # FULL: an acknowledged upload survives power loss
    assert journal is not None and journal[0] == "wal"
    assert busy is not None and busy[0] > 0


async def test_an_existing_app_database_keeps_its_app_schema(tmp_path: Path) -> None:
    """On an existing app database only the service's own tables are added."""
    path = tmp_path / "prod.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, role TEXT DEFAULT 'user');
            CREATE TABLE sync_data (id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
              entity_type TEXT NOT NULL, entity_id TEXT NOT NULL, data TEXT NOT NULL, checksum TEXT NOT NULL,
              version INTEGER DEFAULT 1, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
              updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, deleted_at TIMESTAMP, device_id TEXT, seq INTEGER,
              UNIQUE (user_id, entity_type, entity_id));
            CREATE INDEX prod_named_index ON sync_data (user_id, seq);
            CREATE TABLE sync_sequence (id INTEGER PRIMARY KEY CHECK (id = 1), current_value INTEGER NOT NULL);
            INSERT INTO sync_sequence VALUES (1, 41);
            CREATE TABLE logbook_entries (id TEXT PRIMARY KEY, user_id TEXT NOT NULL);
            """
        )
    before = query(str(path), "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'recovery_%'")
    database = await SqliteStorage.open(path)
    await database.close()
    after = query(str(path), "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'recovery_%'"
                  " AND tbl_name NOT LIKE 'recovery_%'")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert query(str(path), "SELECT current_value FROM sync_sequence")[0][0] == 41
    assert query(str(path), "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'recovery_%'")[0][0] > 5
