"""A database made by the previous version keeps opening, and its rows keep their meaning."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from service.domain.owners import UserRecord
from service.store.interface import SchemaTooNew, WriteUnit
from service.store.rows import StoredResponse
from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.migrations import migrations, tables_named
from service.store.sqlite.schema import APP_SCHEMA, SERVICE_SCHEMA
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from service.usecases.redrive import redrive_user, users_to_redrive
from tests.conftest import ADA, BEN, add_users, query

PREVIOUS = Path(__file__).parent / "fixtures" / "previous_version.sql"
CARLA = ("user_CarlaCarlaCarlaCarla0", "carla@example.com", "user")


def previous_version_db(tmp_path: Path) -> str:
    path = str(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(PREVIOUS.read_text())
        conn.execute("UPDATE recovery_idempotency SET created_at = ?", (time.time() - 60,))  # a recent key
    return path


async def test_a_previous_version_database_opens_and_is_migrated(tmp_path: Path) -> None:
    """The quarantine gets `owner_known` (1 for Ada's row, whose owner is a user; 0 for the unknown
    subject's), the unscoped idempotency key is copied to the route it was used on (a push: its answer
    has `success`), and opening it again changes nothing more."""
    path = previous_version_db(tmp_path)
    for _ in range(2):
        db = await SqliteStorage.open(path)
        try:
            rows = query(path, "SELECT owner, email, owner_known FROM recovery_quarantine ORDER BY id")
            assert [tuple(r) for r in rows] == [(ADA[0], BEN[1], 1), ("user_UnknownSubjectUnknown", CARLA[1], 0)]
            keys = query(path, "SELECT user_id, route, key FROM recovery_idempotency_keys")
            assert [tuple(k) for k in keys] == [(ADA[0], "POST /api/sync/push", "legacy_key_1")]

            def lookup(route: str) -> Callable[[WriteUnit], StoredResponse | None]:
                def run(unit: WriteUnit) -> StoredResponse | None:
                    return unit.claim_idempotency(ADA[0], route, "legacy_key_1", "sha", time.time())

                return run

            # A claim answers with the stored response when there is one (rolled back: nothing claimed).
            found = await db.write(lookup("POST /api/sync/push"), commit=False)
            assert found is not None and b'"success":true' in found.response
            assert await db.write(lookup("POST /v1/recovery/uploads"), commit=False) is None
        finally:
            await db.close()


async def test_re_drive_on_a_previous_version_database_keeps_records_with_their_known_owner(tmp_path: Path) -> None:
    """Ada's quarantined row carries Ben's email: re-driving Ben takes nothing. The unknown subject's row
    goes to the user its email names once that user exists."""
    path = previous_version_db(tmp_path)
    db = await SqliteStorage.open(path)
    try:
        assert await users_to_redrive(db) == [ADA[0]]  # her own row (Ben's email in it changes nothing)
        add_users(path, CARLA)
        assert await users_to_redrive(db) == sorted([ADA[0], CARLA[0]])
        assert (await redrive_user(db, BEN[0])).redriven == 0
        carla = await redrive_user(db, CARLA[0])
        assert (carla.redriven, carla.resolved) == (1, 1)
    finally:
        await db.close()
    assert [r["entity_id"] for r in query(path, "SELECT entity_id FROM sync_data WHERE user_id = ?", (CARLA[0],))] \
        == ["e-3"]
    assert query(path, "SELECT COUNT(*) AS n FROM sync_data WHERE user_id = ?", (BEN[0],))[0]["n"] == 0


def _service_schema(path: str) -> list[tuple[str, str, str]]:
    """The service's tables and indexes as SQLite holds them (IF NOT EXISTS spelled away)."""
    rows = query(path, "SELECT type, name, sql FROM sqlite_master WHERE name LIKE 'recovery_%'"
                       " AND name NOT LIKE 'sqlite_%' ORDER BY type, name")
    return [(r["type"], r["name"], (r["sql"] or "").replace(" IF NOT EXISTS", "")) for r in rows]


def _columns(path: str, table: str) -> set[str]:
    return {r["name"] for r in query(path, f"PRAGMA table_info({table})")}


def _versions(path: str) -> list[tuple[int, str]]:
    return [(r["version"], r["name"]) for r in query(path, "SELECT version, name FROM recovery_schema_version")]


async def test_a_fresh_database_is_made_by_the_migrations_and_records_each(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    await (await SqliteStorage.open(path)).close()
    assert _versions(path) == [(m.version, m.name) for m in migrations()]
    before = _service_schema(path)
    await (await SqliteStorage.open(path)).close()  # opening again applies nothing
    assert _versions(path) == [(m.version, m.name) for m in migrations()] and _service_schema(path) == before


async def test_a_database_made_before_migrations_existed_is_adopted_as_migration_1(tmp_path: Path) -> None:
    """The last release without a version table created every service table on start: its database opens,
    is marked 0001 (then migrated on), keeps its rows, and ends with exactly the tables of a fresh one."""
    fresh, older = str(tmp_path / "fresh.db"), str(tmp_path / "older.db")
    await (await SqliteStorage.open(fresh)).close()
    with sqlite3.connect(older) as conn:
        conn.executescript(APP_SCHEMA + SERVICE_SCHEMA)
        conn.execute("INSERT INTO recovery_users VALUES ('u1', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    conn.close()
    assert query(older, "SELECT name FROM sqlite_master WHERE name = 'recovery_schema_version'") == []
    await (await SqliteStorage.open(older)).close()
    assert _versions(older) == [(m.version, m.name) for m in migrations()]
    assert _service_schema(older) == _service_schema(fresh)
    assert [r["user_id"] for r in query(older, "SELECT user_id FROM recovery_users")] == ["u1"]


async def test_the_previous_version_database_is_adopted_then_migrated(tmp_path: Path) -> None:
    """The previous version (no owner_known, unscoped idempotency keys, no device counts) ends with the
    same service tables as a fresh database, every migration recorded."""
    path = previous_version_db(tmp_path)
    fresh = str(tmp_path / "fresh.db")
    await (await SqliteStorage.open(fresh)).close()
    await (await SqliteStorage.open(path)).close()
    assert _versions(path) == [(m.version, m.name) for m in migrations()]
    columns = {r["name"] for r in query(path, "PRAGMA table_info(recovery_quarantine)")}
    assert "owner_known" in columns
    # The previous version's own table stays (the service deletes nothing); the rest is a fresh database's:
    # the same tables and indexes, each table with the same columns (an added one comes last).
    names = {(kind, name) for kind, name, _ in _service_schema(path)} - {("table", "recovery_idempotency")}
    assert names == {(kind, name) for kind, name, _ in _service_schema(fresh)}
    for kind, table in names:
        if kind == "table":
            assert _columns(path, table) == _columns(fresh, table), table


def test_migrations_only_ever_touch_the_services_own_tables() -> None:
    """Every statement of every migration creates, changes or writes a `recovery_` table, never an app one."""
    for migration in migrations():
        for statement in migration.statements():
            named = tables_named(statement)
            assert named, f"{migration.version:04d}: a statement of no known kind: {statement[:60]}"
            assert all(t.lower().startswith("recovery_") for t in named), (migration.version, statement[:80])


def test_a_migration_naming_an_app_table_is_refused_before_it_runs() -> None:
    assert tables_named("ALTER TABLE users ADD COLUMN x TEXT") == ["users"]
    assert tables_named("CREATE INDEX idx_x ON sync_data (seq)") == ["sync_data"]
    assert tables_named("CREATE TABLE recovery_new (id INTEGER)") == ["recovery_new"]


async def test_a_database_migrated_by_a_newer_release_is_refused_in_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "newer.db")
    await (await SqliteStorage.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO recovery_schema_version VALUES (999, 'from_the_future', '2030-01-01 00:00:00')")
    conn.close()
    with pytest.raises(SchemaTooNew, match="migration 999, newer than this release knows"):
        await SqliteStorage.open(path)


MIGRATION_0001 = Path(__file__).parent / "fixtures" / "migration_0001.sql"
PHONE, TABLET = "dev_phonephonephone1", "dev_tablettablet0002"


def _entry_bytes(entry_id: str) -> bytes:
    """An entry exactly as the fixture's devices sent it."""
    return msgspec.json.encode({"id": entry_id, "timestamp": 1748799900000 + int(entry_id[1:]) * 60000,
                                "duration": 15, "type": "practice", "instrument": "piano", "notes": "scales",
                                "updatedAt": "2025-06-01T18:30:12.345Z"})


async def test_a_database_at_migration_1_keeps_what_each_device_sent(tmp_path: Path) -> None:
    """Made by the release before 0002 (a device row for every key a device sent): migrated to the
    latest, `recovery_device_sent` says what each device sent, and a device sending its records again
    with a new one counts only the new one."""
    path = str(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(MIGRATION_0001.read_text())
    conn.close()
    db = await SqliteStorage.open(path)
    try:
        assert _versions(path) == [(m.version, m.name) for m in migrations()]
        sent = {(r["device_id"], r["entity_id"]) for r in query(
            path, "SELECT device_id, entity_id FROM recovery_device_sent")}
        assert sent == {(PHONE, "bad"), (PHONE, "e1"), (PHONE, "e2"), (TABLET, "e1"), (TABLET, "e3")}
        ada = UserRecord(ADA[0], ADA[1], "user")
        for device, ids in ((PHONE, ("e1", "e2", "e4")), (TABLET, ("e1", "e3", "e2"))):
            upload = Upload(owner=ADA[0], user=ada, device_id=device, source="push",
                            records=[IncomingRecord("logbook_entry", _entry_bytes(i)) for i in ids])
            assert isinstance(await ingest(db, upload), UploadResult)
    finally:
        await db.close()
    counts = {r["device_id"]: r["received"]
              for r in query(path, "SELECT device_id, received FROM recovery_device_counts")}
    assert counts == {PHONE: 4, TABLET: 3}
