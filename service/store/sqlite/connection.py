"""Guarded SQLite connections, each on a thread of its own.

The stdlib `sqlite3` module behind a one-thread executor (which is all aiosqlite is), so that a whole
function, not only a statement, runs on the connection's thread in one hop: an upload's transaction on
the writer, a support page's queries on a reader (`GuardedConnection.run`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.store.interface import Fault
from service.store.sqlite import guard

BUSY_TIMEOUT_MS = 30_000

Params = Sequence[Any] | Mapping[str, Any]  # positional `?` or named `:name` parameters
T = TypeVar("T")

# SQLite primary result codes (the low byte of an extended code) of each fault.
_SQLITE_FAULTS = {5: Fault.LOCKED, 6: Fault.LOCKED, 8: Fault.READ_ONLY, 10: Fault.IO_ERROR, 11: Fault.CORRUPT,
                  13: Fault.DISK_FULL, 14: Fault.CANNOT_OPEN, 26: Fault.CORRUPT}
_OS_FAULTS = {errno.ENOSPC: Fault.DISK_FULL, errno.EDQUOT: Fault.DISK_FULL, errno.EROFS: Fault.READ_ONLY,
              errno.EIO: Fault.IO_ERROR, errno.EACCES: Fault.READ_ONLY, errno.EPERM: Fault.READ_ONLY}
# How long a write that failed for one of these keeps /health unhealthy when no write succeeds since.
FAULT_MEMORY_S = 60.0

# Rows per multi-row INSERT (`SyncConnection.insert_rows`); the rest of a batch goes in statements of the
# powers of two below it, so each INSERT has at most eight spellings, all in the statement cache.
ROWS_PER_STATEMENT = 128
# Prepared statements each connection keeps (Python's default is 128): the spellings above included.
CACHED_STATEMENTS = 512
_ONE_ROW = re.compile(r"VALUES\s*\((?:\s*\?\s*,)*\s*\?\s*\)")


def fault_of(error: BaseException) -> Fault | None:
    """The storage fault behind an error, or None when it is not one (a bug, a bad statement)."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return _SQLITE_FAULTS.get(code & 0xFF) if isinstance(code, int) else None
    if isinstance(error, OSError):
        return _OS_FAULTS.get(error.errno or 0)
    return None


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

    def insert_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """`sql`, an INSERT of one `VALUES (?, ...)` row, for every row, many rows per statement; returns
        how many rows were inserted or changed, as `executemany` would (rows go in in order, each seeing
        the ones before it, ON CONFLICT clauses included).

        Why not `executemany`: sqlite3 lets go of the GIL around every row's step and must take it back
        before the next, and with the event loop, the pool's threads and the readers busy in the same
        process, each take can wait up to the switch interval (5 ms). One statement of 128 rows waits
        once. Measured (#17): 25,000 rows/s either way alone; beside one busy thread, 129 rows/s by
        `executemany` and 9,000-12,000 by statements of 100-200 rows."""
        guard.check_statement(sql)
        changed = 0
        start = 0
        size = ROWS_PER_STATEMENT
        # A build with a lower limit of parameters a statement (999 before SQLite 3.32) gets fewer rows.
        most = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(1, len(rows[0])) if rows else size
        while size > max(1, most):
            size //= 2
        while start < len(rows):
            while size > len(rows) - start:
                size //= 2
            end = start + size
            values = [value for row in rows[start:end] for value in row]
            changed += self._conn.execute(_rows_statement(sql, size), values).rowcount
            start = end
        return changed

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
    async def open(cls, path: str, *, read_only: bool, role: str | None = None,
                   cache_kib: int | None = None) -> GuardedConnection:
        """`role` names the thread (sqlite-reader or sqlite-writer by default); `cache_kib` is the page
        cache (by default a reader's or the writer's, see `_open`)."""
        name = role or ("sqlite-reader" if read_only else "sqlite-writer")
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _open, path, read_only, cache_kib)
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


@functools.lru_cache(maxsize=256)
def _rows_statement(sql: str, rows: int) -> str:
    """`sql` with its one `VALUES (?, ...)` row written out `rows` times."""
    found = list(_ONE_ROW.finditer(sql))
    if len(found) != 1:
        raise ValueError(f"insert_rows needs exactly one VALUES row of ? parameters, not {len(found)}: {sql}")
    match = found[0]
    row = match.group()[len("VALUES"):].strip()
    return f"{sql[:match.start()]}VALUES {', '.join([row] * rows)}{sql[match.end():]}"


def _open(path: str, read_only: bool, cache_kib: int | None = None) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, cached_statements=CACHED_STATEMENTS)
    try:
        conn.row_factory = sqlite3.Row
        # Pragmas first: the authorizer refuses turning foreign keys off, not on.
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # A page cache that holds the hot index pages of large recoveries (SQLite's default is 2 MB).
        cache_kib = cache_kib if cache_kib is not None else 16384 if read_only else 65536
        conn.execute(f"PRAGMA cache_size = {-cache_kib}")
        if not read_only:
            _journal_mode_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            # Checkpoint the WAL less often than every 4 MB, so fewer commits pay for one. (A file's storage
            # raises it again: a checkpointer copies the WAL back beside the writer, see `checkpoints`.)
            conn.execute("PRAGMA wal_autocheckpoint = 16384")
        conn.set_authorizer(guard.authorize)
    except BaseException:
        conn.close()
        raise
    return conn


def _journal_mode_wal(conn: sqlite3.Connection) -> None:
    """WAL mode, retried while another connection holds the file: SQLite answers SQLITE_BUSY at once,
    without the busy handler, where waiting could deadlock (two processes opening the same fresh file at
    the same moment, as the shards of a replay do, each switching it to WAL), so the wait is here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if fault_of(error) is not Fault.LOCKED or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
