"""The WAL is copied back into the database file beside the writer, not inside its commits, and still
starts over under a steady stream of commits (`service/store/sqlite/checkpoints.py`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.store.sqlite import checkpoints
from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.engine import SqliteStorage

PAGE = 4096
ROWS, VALUE = 20, "x" * 2000  # a transaction of about a dozen pages


async def _commit_rows(storage: SqliteStorage, first: int) -> None:
    async with storage.sql_write() as writer:
        await writer.executemany("INSERT INTO recovery_service (key, value) VALUES (?, ?)",
                                 [(f"k{first + i}", VALUE) for i in range(ROWS)])


async def _idle(storage: SqliteStorage) -> None:
    checkpointer = storage._checkpointer
    assert checkpointer is not None
    if checkpointer._running is not None:  # it runs until it has copied every commit made before it ended
        await checkpointer._running


def _before_each_checkpoint(monkeypatch: pytest.MonkeyPatch, before: Callable[[], object]) -> None:
    """`before()` runs on the checkpointer's thread ahead of each of its checkpoints."""
    passive = checkpoints._passive_checkpoint

    def wrapped(conn: SyncConnection) -> tuple[int, int, int]:
        before()
        return passive(conn)

    monkeypatch.setattr(checkpoints, "_passive_checkpoint", wrapped)


def _wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_committed_pages_reach_the_database_file_without_the_writer_checkpointing(tmp_path: Path) -> None:
    """A few commits, far below the writer's own automatic checkpoint: the file grows anyway."""
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    try:
        await _idle(storage)
        before = db.stat().st_size
        for n in range(10):
            await _commit_rows(storage, n * ROWS)
        await _idle(storage)
        assert db.stat().st_size >= before + 10 * ROWS * len(VALUE)
    finally:
        await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recovery_service WHERE key LIKE 'k%'").fetchone()[0] == 10 * ROWS


async def test_the_wal_starts_over_under_a_steady_stream_of_commits(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints slower than the commits, so one is always running when the next transaction begins:
    the WAL would grow with every commit (3x what the commits wrote, measured) unless a transaction waits,
    once the WAL is long, for the copying to catch up. It stays within the threshold and what is committed
    while one checkpoint runs (the writer learns the WAL's length from the checkpoints)."""
    restart, commits = 60, 300
    monkeypatch.setattr(checkpoints, "RESTART_FRAMES", restart)
    _before_each_checkpoint(monkeypatch, lambda: time.sleep(0.02))
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    try:
        for n in range(commits):
            await _commit_rows(storage, n * ROWS)
        await _idle(storage)
        wal = _wal_bytes(db)  # its longest (the file is reused from its start, not cut); gone once closed
    finally:
        await storage.close()
    committed_frames = commits * ROWS * len(VALUE) // PAGE
    assert wal <= committed_frames // 3 * (PAGE + 24)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recovery_service WHERE key LIKE 'k%'").fetchone()[0] == commits * ROWS


async def test_a_failing_checkpoint_fails_no_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL keeps every committed frame until a checkpoint succeeds; the writes are not its business."""

    def failing(conn: SyncConnection) -> tuple[int, int, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(checkpoints, "_passive_checkpoint", failing)
    monkeypatch.setattr(checkpoints, "RESTART_FRAMES", 10)
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    try:
        for n in range(5):
            await _commit_rows(storage, n * ROWS)
        await _idle(storage)
        assert storage._checkpointer is not None and storage._checkpointer.failures >= 1
    finally:
        await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recovery_service WHERE key LIKE 'k%'").fetchone()[0] == 5 * ROWS


async def test_a_reader_holding_frames_back_does_not_make_every_transaction_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's snapshot keeps the frames after it from being copied back, so the WAL cannot start over
    until it ends. Transactions meanwhile wait for a checkpoint once each time the WAL grows by the
    threshold, not every one of them."""
    restart, commits = 300, 100
    monkeypatch.setattr(checkpoints, "RESTART_FRAMES", restart)
    calls: list[int] = []
    _before_each_checkpoint(monkeypatch, lambda: calls.append(1))
    db = tmp_path / "app.db"
    storage = await SqliteStorage.open(db)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM recovery_service").fetchone()  # its snapshot is taken here
        for n in range(commits):
            await _commit_rows(storage, n * ROWS)
        await _idle(storage)
        held_back = calls.copy()
    finally:
        reader.close()
        await storage.close()
    # One checkpoint after each commit at most, and a few more of the transactions' own.
    assert len(held_back) <= commits + commits // 4
