"""The database: one writer connection that every upload queues for, and a pool of read-only ones.

Every connection is guarded (see `guard`), runs with foreign keys on, WAL and a busy timeout. Writes go
through `Database.write()` or, for uploads, `Database.write_shared()` (group commit): one `BEGIN IMMEDIATE`
transaction at a time, statements batched with `executemany`, committed with `synchronous=FULL` so an
acknowledged upload survives a power loss.

Each connection lives on a thread of its own (the stdlib `sqlite3` module behind a one-thread executor,
which is all aiosqlite is) so that a whole function, not only a statement, can run there in one hop:
an upload's transaction on the writer, a support page's queries on a reader (`GuardedConnection.run`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from service.store import guard
from service.store.interface import Fault, NotAnAppDatabase, StorageUnavailable
from service.store.schema import (
    ADDED_COLUMNS,
    APP_SCHEMA,
    BACKFILLS,
    LEGACY_IDEMPOTENCY_COPY,
    LEGACY_IDEMPOTENCY_TABLE,
    SERVICE_SCHEMA,
)

BUSY_TIMEOUT_MS = 30_000

Params = Sequence[Any] | Mapping[str, Any]  # positional `?` or named `:name` parameters
T = TypeVar("T")

# A shared transaction takes queued work until it holds about this many records (see `write_shared`).
MAX_SHARED_WEIGHT = 8000


# SQLite primary result codes (the low byte of an extended code) of each fault.
_SQLITE_FAULTS = {5: Fault.LOCKED, 6: Fault.LOCKED, 8: Fault.READ_ONLY, 10: Fault.IO_ERROR, 11: Fault.CORRUPT,
                  13: Fault.DISK_FULL, 14: Fault.CANNOT_OPEN, 26: Fault.CORRUPT}
_OS_FAULTS = {errno.ENOSPC: Fault.DISK_FULL, errno.EDQUOT: Fault.DISK_FULL, errno.EROFS: Fault.READ_ONLY,
              errno.EIO: Fault.IO_ERROR, errno.EACCES: Fault.READ_ONLY, errno.EPERM: Fault.READ_ONLY}
# How long a write that failed for one of these keeps /health unhealthy when no write succeeds since.
FAULT_MEMORY_S = 60.0


def fault_of(error: BaseException) -> Fault | None:
    """The storage fault behind an error, or None when it is not one (a bug, a bad statement)."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return _SQLITE_FAULTS.get(code & 0xFF) if isinstance(code, int) else None
    if isinstance(error, OSError):
        return _OS_FAULTS.get(error.errno or 0)
    return None


DatabaseUnavailable = StorageUnavailable  # the name the SQLite engine had before the interface


class SyncConnection:
    """A guarded sqlite3 connection, used synchronously on the thread that owns it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> None:
        guard.check_statement(sql)
        self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Runs `sql` once per row; returns how many rows the statements inserted or changed."""
        guard.check_statement(sql)
        return self._conn.executemany(sql, rows).rowcount

    def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        guard.check_statement(sql)
        return self._conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        guard.check_statement(sql)
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


class GuardedConnection:
    """A guarded sqlite3 connection on a thread of its own, used from the event loop.

    Besides single statements it runs whole functions on that thread (`run`): an upload's transaction
    (load its keys' state, plan the merge, write every table) or a support page's reads then cost one
    hop between the event loop and the thread instead of one per statement. Under load each hop waits
    for the GIL twice, so this is what keeps reads fast while large uploads are written.
    """

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._sync = SyncConnection(conn)
        self._conn = conn
        self._thread = thread

    @classmethod
    async def open(cls, path: str, *, read_only: bool) -> GuardedConnection:
        name = "sqlite-reader" if read_only else "sqlite-writer"
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _open, path, read_only)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(conn, thread)

    async def run(self, work: Callable[[SyncConnection], T]) -> T:
        """`work(connection)` on this connection's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, self._sync)

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self.run(lambda conn: conn.execute(sql, params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return await self.run(lambda conn: conn.executemany(sql, rows))

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self.run(lambda conn: conn.fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return await self.run(lambda conn: conn.fetchone(sql, params))

    async def executescript(self, script: str) -> None:
        guard.check_statement(script)
        await self.run(lambda _: self._conn.executescript(script))

    async def commit(self) -> None:
        await self.run(lambda _: self._conn.commit())

    async def rollback(self) -> None:
        await self.run(lambda _: self._conn.rollback())

    async def close(self) -> None:
        try:
            await self.run(lambda _: self._conn.close())
        finally:
            self._thread.shutdown(wait=True)


def _open(path: str, read_only: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        # Pragmas first: the authorizer refuses turning foreign keys off, not on.
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # A page cache that holds the hot index pages of large recoveries (SQLite's default is 2 MB).
        conn.execute(f"PRAGMA cache_size = {-16384 if read_only else -65536}")
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            # Checkpoint the WAL less often than every 4 MB, so fewer commits pay for one.
            conn.execute("PRAGMA wal_autocheckpoint = 16384")
        conn.set_authorizer(guard.authorize)
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """The service's handle on the app database: a single writer and a pool of readers."""

    def __init__(self, path: str, writer: GuardedConnection, readers: list[GuardedConnection]) -> None:
        self.path = path
        self.writer = writer
        self._readers = readers
        self._idle_readers: asyncio.Queue[GuardedConnection] = asyncio.Queue()
        for reader in readers:
            self._idle_readers.put_nowait(reader)
        self._write_lock = asyncio.Lock()
        self._shared_queue: list[_SharedWork[Any]] = []
        self._committer: asyncio.Task[None] | None = None
        # The storage fault of the last failed write (and when), cleared by the next write that commits.
        self.fault: tuple[Fault, float] | None = None

    def _note(self, error: BaseException) -> None:
        fault = fault_of(error)
        if fault is not None:
            self.fault = (fault, time.monotonic())

    def current_fault(self) -> Fault | None:
        """The fault of a recent write that failed with no successful write since (for /health)."""
        if self.fault is None or time.monotonic() - self.fault[1] > FAULT_MEMORY_S:
            return None
        return self.fault[0]

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, readers: int = 4) -> Database:
        """Open (creating when missing) the app database and add the service's own tables."""
        db_path = str(path)
        try:
            if db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            writer = await GuardedConnection.open(db_path, read_only=False)
        except (sqlite3.Error, OSError) as error:
            raise DatabaseUnavailable(db_path, fault_of(error), error) from error
        reader_connections: list[GuardedConnection] = []
        try:
            await writer.execute("BEGIN IMMEDIATE")
            await _create_schema(writer)
            await writer.commit()
            for _ in range(readers):
                reader_connections.append(await GuardedConnection.open(db_path, read_only=True))
        except BaseException as error:
            for reader in reader_connections:
                await reader.close()
            await writer.close()
            if isinstance(error, sqlite3.Error | OSError) and not isinstance(error, guard.GuardViolation):
                raise DatabaseUnavailable(db_path, fault_of(error), error) from error
            raise
        return cls(db_path, writer, reader_connections)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.shield(self._committer)  # work already queued is committed and answered
        # Both are always closed: an open connection keeps its thread, and so the process, alive.
        try:
            for reader in self._readers:
                await reader.close()
        finally:
            await self.writer.close()

    @asynccontextmanager
    async def write(self, *, commit: bool = True) -> AsyncIterator[GuardedConnection]:
        """One write transaction at a time; committed on success (unless `commit` is False, as for a
        dry run), rolled back on any error."""
        async with self._write_lock:
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
            except BaseException as error:
                self._note(error)
                raise
            try:
                yield self.writer
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
            else:
                await self.writer.rollback()

    async def write_shared(self, work: Callable[[SyncConnection], T], *, weight: int = 1) -> T:
        """Run `work` on the writer's thread in a write transaction shared with the work of other callers
        queued meanwhile (group commit): one BEGIN, one fsync'd COMMIT for all of them, and fewer index
        pages written than the same work committed one by one. Each caller's work runs in its own
        savepoint, in the same hop to the writer, so an error in one (raised to its caller) leaves the
        others' writes in. Returns when the transaction that holds the work is durable; `weight`
        (records, say) bounds how much one transaction takes.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = _SharedWork(work, weight, future)
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
        if done:
            self.fault = None
        for item, result in done:
            if not item.future.done():
                item.future.set_result(result)

    async def read_run(self, work: Callable[[SyncConnection], T]) -> T:
        """`work(connection)` on a reader's thread, in one consistent snapshot, in a single hop."""
        reader = await self._idle_readers.get()
        try:
            return await reader.run(lambda conn: _in_snapshot(conn, work))
        finally:
            self._idle_readers.put_nowait(reader)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[GuardedConnection]:
        """A read-only connection of the pool, in a consistent snapshot; reads never wait on writes."""
        reader = await self._idle_readers.get()
        try:
            await reader.execute("BEGIN")
            try:
                yield reader
            finally:
                await reader.rollback()
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


def _in_snapshot(conn: SyncConnection, work: Callable[[SyncConnection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return work(conn)
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


REQUIRED_APP_TABLES = ("users", "sync_data", "sync_sequence", "logbook_entries")


async def _create_schema(conn: GuardedConnection) -> None:
    """The app schema on an empty file only: an existing app database keeps its tables, indexes and
    triggers exactly as they are. The service's own tables are added either way."""
    rows = await conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    existing = {r["name"] for r in rows}
    if "users" not in existing:
        for statement in _statements(APP_SCHEMA):
            await conn.execute(statement)
    else:
        missing = [t for t in REQUIRED_APP_TABLES if t not in existing]
        if missing:
            raise NotAnAppDatabase(f"the database has a users table but no {', '.join(missing)}")
    for statement in _statements(SERVICE_SCHEMA):
        await conn.execute(statement)
    for table, backfill in BACKFILLS.items():
        if table not in existing:
            await conn.execute(backfill)
    for table, column, column_type, fill in ADDED_COLUMNS:
        columns = {r["name"] for r in await conn.fetchall(f"PRAGMA table_info({table})")}
        if column not in columns:
            await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type}")
            await conn.execute(fill)
    if LEGACY_IDEMPOTENCY_TABLE in existing and "recovery_idempotency_keys" not in existing:
        await conn.execute(LEGACY_IDEMPOTENCY_COPY)
    # A write on every start (the same row, rewritten): a database the service cannot write is refused
    # now, not at the first upload.
    await conn.execute(
        "INSERT INTO recovery_service (key, value) VALUES ('writable', 'yes')"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


def _statements(script: str) -> list[str]:
    """Split a schema script into statements, trigger bodies kept whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
