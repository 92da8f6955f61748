"""The writer: work of concurrent callers shares one transaction (group commit), each in a savepoint of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.guard import GuardViolation
from service.store.sqlite.schema import APP_SCHEMA, SERVICE_SCHEMA
from service.store.sqlite.units import SqliteWriteUnit
from tests.conftest import query

WAIT_S = 10  # how long work blocking the writer waits for the test to release it, at most


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    database = await SqliteStorage.open(tmp_path / "app.db")
    try:
        yield database
    finally:
        await database.close()


def _mark(user_id: str) -> Callable[[SqliteWriteUnit], str]:
    """Work that writes one row of the service's own bookkeeping, named `user_id`."""

    def work(unit: SqliteWriteUnit) -> str:
        unit.sql.execute(
            "INSERT INTO recovery_users (user_id, first_upload_at, last_upload_at) VALUES (?, 'x', 'x')", (user_id,)
        )
        return user_id

    return work


def _users(db: SqliteStorage) -> list[str]:
    return [r["user_id"] for r in query(db.path, "SELECT user_id FROM recovery_users ORDER BY user_id")]


def _count_commits(db: SqliteStorage) -> list[int]:
    commits = [0]
    real_commit = db.writer.commit

    async def counting_commit() -> None:
        commits[0] += 1
        await real_commit()

    db.writer.commit = counting_commit  # type: ignore[method-assign]
    return commits


async def test_work_queued_while_the_writer_is_busy_commits_together(db: SqliteStorage) -> None:
    """Three callers that queue while a transaction runs are answered from one shared COMMIT."""
    commits = _count_commits(db)
    release = threading.Event()

    def slow(unit: SqliteWriteUnit) -> str:
        release.wait(WAIT_S)  # holds the writer's thread, as a long upload would
        return _mark("first")(unit)

    first = asyncio.create_task(db.write_shared(slow))
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(db.write_shared(_mark(name))) for name in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == "first"
    assert await asyncio.gather(*queued) == ["a", "b", "c"]
    assert commits[0] == 2
    assert _users(db) == ["a", "b", "c", "first"]


async def test_an_answer_means_the_write_is_committed(db: SqliteStorage) -> None:
    """When `write_shared` returns, another connection reads the rows."""
    await db.write_shared(_mark("visible"))
    assert _users(db) == ["visible"]


async def test_a_failing_work_is_undone_alone_and_its_caller_gets_the_error(db: SqliteStorage) -> None:
    """The failing caller's own writes are rolled back to its savepoint; the others' writes commit."""
    release = threading.Event()

    def blocker(unit: SqliteWriteUnit) -> None:
        release.wait(WAIT_S)

    def half_then_fail(unit: SqliteWriteUnit) -> None:
        _mark("half")(unit)
        raise ValueError("bad upload")

    first = asyncio.create_task(db.write_shared(blocker))
    await asyncio.sleep(0.01)
    before = asyncio.create_task(db.write_shared(_mark("before")))
    failing = asyncio.create_task(db.write_shared(half_then_fail))
    after = asyncio.create_task(db.write_shared(_mark("after")))
    await asyncio.sleep(0.01)
    release.set()
    await first
    assert await before == "before"
    assert await after == "after"
    with pytest.raises(ValueError, match="bad upload"):
        await failing
    assert _users(db) == ["after", "before"]


async def test_work_whose_caller_left_before_it_started_is_not_run(db: SqliteStorage) -> None:
    release = threading.Event()

    def blocker(unit: SqliteWriteUnit) -> None:
        release.wait(WAIT_S)

    first = asyncio.create_task(db.write_shared(blocker))
    await asyncio.sleep(0.01)
    abandoned = asyncio.create_task(db.write_shared(_mark("abandoned")))
    await asyncio.sleep(0.01)
    abandoned.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert _users(db) == []


async def test_a_function_run_on_the_writer_thread_is_guarded(db: SqliteStorage) -> None:
    """`run` hands the function the guarded connection: destructive statements are refused there too."""

    def delete_everything(conn: SyncConnection) -> None:
        conn.execute("DELETE FROM sync_data")

    def replace_a_user(conn: SyncConnection) -> None:
        conn.execute("REPLACE INTO users (id, email) VALUES ('u', 'u@example.com')")

    with pytest.raises(sqlite3.DatabaseError):
        async with db.sql_write() as conn:
            await conn.run(delete_everything)
    with pytest.raises(GuardViolation):
        async with db.sql_write() as conn:
            await conn.run(replace_a_user)


async def test_closing_waits_for_queued_work(tmp_path: Path) -> None:
    """Work queued before `close` is committed and answered, not dropped."""
    database = await SqliteStorage.open(tmp_path / "app.db")
    pending = asyncio.create_task(database.write_shared(_mark("late")))
    await asyncio.sleep(0)
    await database.close()
    assert await pending == "late"
    assert _users(database) == ["late"]


async def test_a_table_added_in_a_later_release_is_filled_from_what_it_summarises(tmp_path: Path) -> None:
    """A database from before the per-device counts existed gets them, counted from the device records
    it already holds, when the service first opens it."""
    path = tmp_path / "older.db"
    older_schema = SERVICE_SCHEMA.replace("CREATE TABLE IF NOT EXISTS recovery_device_counts", "CREATE TEMP TABLE x")
    with sqlite3.connect(path) as conn:
        conn.executescript(APP_SCHEMA + older_schema)
        conn.executemany(
            "INSERT INTO recovery_device_records (user_id, device_id, entity_type, entity_id) VALUES (?, ?, ?, ?)",
            [("u1", "d1", "logbook_entry", "a"), ("u1", "d1", "logbook_entry", "b"), ("u1", "d1", "goal", "g"),
             ("u1", "d2", "logbook_entry", "a")],
        )
    conn.close()
    database = await SqliteStorage.open(path)
    await database.close()
    expected = [("u1", "d1", "goal", 1), ("u1", "d1", "logbook_entry", 2), ("u1", "d2", "logbook_entry", 1)]
    assert _device_counts(path) == expected
    reopened = await SqliteStorage.open(path)  # only a table created now is filled: counts are not doubled
    await reopened.close()
    assert _device_counts(path) == expected


def _device_counts(path: Path) -> list[tuple[str, str, str, int]]:
    rows = query(str(path), "SELECT user_id, device_id, entity_type, received FROM recovery_device_counts"
                            " ORDER BY device_id, entity_type")
    return [tuple(r) for r in rows]
