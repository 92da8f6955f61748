"""The SQLite engine: one writer connection that every write queues for, and a pool of read-only ones.

Every connection is guarded (see `guard`), runs with foreign keys on, WAL and a busy timeout. Writes go
through `write` / `transaction` or, for uploads, `write_shared` (group commit): one `BEGIN IMMEDIATE`
transaction at a time, rows many to a statement (`SyncConnection.insert_rows`), committed with
`synchronous=FULL` so an acknowledged upload survives a power loss. SQLite's write lock is database-wide,
which is what makes `lock_user`, `allocate_seq` and `claim_idempotency` safe here (see `units`).

A use case's work runs on the connection's own thread, in one hop (`GuardedConnection.run`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from service.store.interface import EngineKind, Fault, ReadUnit, StorageUnavailable, WriteUnit
from service.store.sqlite import guard
from service.store.sqlite.checkpoints import RESTART_FRAMES, WalCheckpointer
from service.store.sqlite.commits import SqliteCommitWatch
from service.store.sqlite.connection import FAULT_MEMORY_S, GuardedConnection, SyncConnection, fault_of
from service.store.sqlite.migrations import migrate
from service.store.sqlite.units import SqliteReadUnit, SqliteWriteUnit

T = TypeVar("T")

# A shared transaction takes queued work until it holds about this many records (see `write_shared`).
MAX_SHARED_WEIGHT = 8000
# Below this much free space a write may fail half-way: /health reports the disk as full before it does.
MIN_FREE_BYTES = 8 * 1024 * 1024


class SqliteTransaction:
    """An open write transaction on the writer (`SqliteStorage.transaction`)."""

    def __init__(self, writer: GuardedConnection) -> None:
        self._writer = writer

    async def run(self, work: Callable[[WriteUnit], T]) -> T:
        return await self._writer.run(lambda conn: work(SqliteWriteUnit(conn)))


class SqliteStorage:
    """The `Storage` of one SQLite file: a single writer and a pool of readers."""

    kind = EngineKind.SQLITE

    def __init__(self, path: str, writer: GuardedConnection, readers: list[GuardedConnection],
                 checkpointer: WalCheckpointer | None = None) -> None:
        self.path = path
        self.writer = writer
        self._checkpointer = checkpointer
        self._readers = readers
        self._idle_readers: asyncio.Queue[GuardedConnection] = asyncio.Queue()
        for reader in readers:
            self._idle_readers.put_nowait(reader)
        self._write_lock = asyncio.Lock()
        self._shared_queue: list[_SharedWork[Any]] = []
        self._committer: asyncio.Task[None] | None = None
        # The storage fault of the last failed write (and when), cleared by the next write that commits.
        self.fault: tuple[Fault, float] | None = None

    @property
    def location(self) -> str:
        return self.path

    def _note(self, error: BaseException) -> None:
        fault = fault_of(error)
        if fault is not None:
            self.fault = (fault, time.monotonic())

    def fault_of(self, error: BaseException) -> Fault | None:
        return fault_of(error)

    def current_fault(self) -> Fault | None:
        if self.fault is None or time.monotonic() - self.fault[1] > FAULT_MEMORY_S:
            return None
        return self.fault[0]

    async def health(self) -> Fault | None:
        """A read, then what keeps the file from taking a write, seen from outside SQLite: a write that
        failed recently (a lock held past the busy timeout, a full disk, an I/O error), a file or folder
        that is not writable (the WAL needs both), or a disk without room. Raises when the read fails."""
        await self.read(lambda unit: unit.ping())
        recent = self.current_fault()
        if recent is not None:
            return recent
        if self.path == ":memory:":
            return None
        path = Path(self.path)
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            return Fault.READ_ONLY
        try:
            if shutil.disk_usage(path.parent).free < MIN_FREE_BYTES:
                return Fault.DISK_FULL
        except OSError as error:
            return fault_of(error) or Fault.IO_ERROR
        return None

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, readers: int = 4) -> SqliteStorage:
        """Open (creating when missing) the app database and bring the service's own tables up to date."""
        db_path = str(path)
        try:
            if db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            writer = await GuardedConnection.open(db_path, read_only=False)
        except (sqlite3.Error, OSError) as error:
            raise StorageUnavailable(db_path, fault_of(error), error) from error
        reader_connections: list[GuardedConnection] = []
        checkpointer: WalCheckpointer | None = None
        try:
            await writer.execute("BEGIN IMMEDIATE")
            await writer.run(migrate)
            await writer.commit()
            for _ in range(readers):
                reader_connections.append(await GuardedConnection.open(db_path, read_only=True))
            if db_path != ":memory:":
                checkpointer = await WalCheckpointer.open(db_path)
                # The writer checkpoints itself only should the checkpointer fall far behind (see `checkpoints`).
                await writer.execute(f"PRAGMA wal_autocheckpoint = {4 * RESTART_FRAMES}")
        except BaseException as error:
            if checkpointer is not None:
                await checkpointer.close()
            for reader in reader_connections:
                await reader.close()
            await writer.close()
            if isinstance(error, sqlite3.Error | OSError) and not isinstance(error, guard.GuardViolation):
                raise StorageUnavailable(db_path, fault_of(error), error) from error
            raise
        return cls(db_path, writer, reader_connections, checkpointer)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.shield(self._committer)  # work already queued is committed and answered
        # Both are always closed: an open connection keeps its thread, and so the process, alive.
        try:
            if self._checkpointer is not None:
                await self._checkpointer.close()
            for reader in self._readers:
                await reader.close()
        finally:
            await self.writer.close()

    @asynccontextmanager
    async def transaction(self, *, commit: bool = True) -> AsyncIterator[SqliteTransaction]:
        """One write transaction at a time; committed on success (unless `commit` is False, as for a
        dry run), rolled back on any error."""
        async with self._write_lock:
            await self._settle_wal()
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
            except BaseException as error:
                self._note(error)
                raise
            try:
                yield SqliteTransaction(self.writer)
            except BaseException as error:
                self._note(error)
                await _rollback_quietly(self.writer)
                raise
            if commit:
                try:
                    await self.writer.commit()
                except BaseException as error:
                    self._note(error)
                    await _rollback_quietly(self.writer)
                    raise
                self.fault = None
                self._committed()
            else:
                await self.writer.rollback()

    @asynccontextmanager
    async def sql_write(self, *, commit: bool = True) -> AsyncIterator[GuardedConnection]:
        """SQLite only, not the interface: the writer connection itself inside a write transaction, for
        the engine's own tests and tools (statements one by one, each a hop)."""
        async with self.transaction(commit=commit):
            yield self.writer

    async def write(self, work: Callable[[WriteUnit], T], *, commit: bool = True) -> T:
        async with self.transaction(commit=commit) as transaction:
            return await transaction.run(work)  # the whole transaction's work in one hop to the writer

    async def write_shared(self, work: Callable[[WriteUnit], T], *, weight: int = 1) -> T:
        """Group commit: one BEGIN, one fsync'd COMMIT for all the work queued meanwhile, and fewer index
        pages written than the same work committed one by one. Each caller's work runs in its own
        savepoint, in the same hop to the writer, so an error in one (raised to its caller) leaves the
        others' writes in."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = _SharedWork(lambda conn: work(SqliteWriteUnit(conn)), weight, future)
        self._shared_queue.append(item)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_shared())
        return await future

    async def _commit_shared(self) -> None:
        try:
            while self._shared_queue:
                group = _take_group(self._shared_queue)
                async with self._write_lock:
                    await self._run_group(group)
        finally:
            self._committer = None

    async def _run_group(self, group: list[_SharedWork[Any]]) -> None:
        writer = self.writer
        done: list[tuple[_SharedWork[Any], Any]] = []
        await self._settle_wal()
        try:
            await writer.execute("BEGIN IMMEDIATE")
        except Exception as error:
            self._note(error)
            _fail(group, error)
            return
        try:
            for item in group:
                if item.future.done():  # its caller went away before it started: nothing to do
                    continue
                try:
                    result = await writer.run(functools.partial(_in_savepoint, work=item.work))
                except _TransactionLost as lost:
                    raise lost.__cause__ or lost from None  # fails the whole group, below
                except Exception as error:  # the caller gets it; the other work goes on
                    self._note(error)
                    if not item.future.done():
                        item.future.set_exception(error)
                    continue
                done.append((item, result))
            await writer.commit()
        except BaseException as error:
            self._note(error)
            await _rollback_quietly(writer)
            _fail(group, error if isinstance(error, Exception) else RuntimeError("the write was cancelled"))
            if not isinstance(error, Exception):
                raise
            return
        self._committed()
        if done:
            self.fault = None
        for item, result in done:
            if not item.future.done():
                item.future.set_result(result)

    def _committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.after_commit()

    async def _settle_wal(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.settle()

    async def watch_commits(self) -> SqliteCommitWatch | None:
        """SQLite only: a watch on commits made through other connections (None for `:memory:`, which no
        other connection shares)."""
        return None if self.path == ":memory:" else await SqliteCommitWatch.open(self.path)

    async def read(self, work: Callable[[ReadUnit], T]) -> T:
        """`work` on a reader's thread, in one consistent snapshot, in a single hop."""
        reader = await self._idle_readers.get()
        try:
            return await reader.run(lambda conn: _in_snapshot(conn, work))
        finally:
            self._idle_readers.put_nowait(reader)


class _TransactionLost(Exception):
    """The shared transaction was rolled back by SQLite under a caller's work (its cause says why)."""


async def _rollback_quietly(conn: GuardedConnection) -> None:
    """After a failed commit (a full disk, an I/O error) SQLite may have rolled back already; the
    original error is what the caller must see."""
    with suppress(sqlite3.Error):
        await conn.rollback()


def _in_savepoint(conn: SyncConnection, work: Callable[[SyncConnection], T]) -> T:
    """`work` inside the open transaction; on an error its own writes, and only those, are undone."""
    conn.execute("SAVEPOINT shared_work")
    try:
        result = work(conn)
    except Exception as error:
        if not conn.in_transaction:
            # SQLite rolled the whole transaction back (a full disk, an I/O error): the work of every
            # caller in it is gone, so none of them may be answered as if it had committed.
            raise _TransactionLost from error
        conn.execute("ROLLBACK TO shared_work")
        conn.execute("RELEASE shared_work")
        raise
    conn.execute("RELEASE shared_work")
    return result


def _in_snapshot(conn: SyncConnection, work: Callable[[ReadUnit], T]) -> T:
    conn.execute("BEGIN")
    try:
        return work(SqliteReadUnit(conn))
    finally:
        conn.execute("ROLLBACK")


@dataclass(slots=True)
class _SharedWork(Generic[T]):
    work: Callable[[SyncConnection], T]
    weight: int
    future: asyncio.Future[T]


def _fail(group: list[_SharedWork[Any]], error: Exception) -> None:
    for item in group:
        if not item.future.done():
            item.future.set_exception(error)


def _take_group(queue: list[_SharedWork[Any]]) -> list[_SharedWork[Any]]:
    """The oldest queued work, up to MAX_SHARED_WEIGHT (always at least one), removed from `queue`."""
    taken = 1
    weight = queue[0].weight
    while taken < len(queue) and weight + queue[taken].weight <= MAX_SHARED_WEIGHT:
        weight += queue[taken].weight
        taken += 1
    group = queue[:taken]
    del queue[:taken]
    return group
