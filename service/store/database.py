"""The database: one writer connection that every upload queues for, and a read-only connection.

Every connection is guarded (see `guard`), runs with foreign keys on, WAL and a busy timeout. Writes go
through `Database.write()`: one `BEGIN IMMEDIATE` transaction at a time, statements batched with
`executemany`, committed with `synchronous=FULL` so an acknowledged upload survives a power loss.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from service.store import guard
from service.store.schema import APP_SCHEMA, SERVICE_SCHEMA

BUSY_TIMEOUT_MS = 30_000

Params = Sequence[Any] | Mapping[str, Any]  # positional `?` or named `:name` parameters


class GuardedConnection:
    """An aiosqlite connection that only lets guarded statements through."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> None:
        guard.check_statement(sql)
        await self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        guard.check_statement(sql)
        await self._conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        guard.check_statement(sql)
        rows = await self._conn.execute_fetchall(sql, params)
        return list(rows)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def executescript(self, script: str) -> None:
        guard.check_statement(script)
        await self._conn.executescript(script)

    async def commit(self) -> None:
        await self._conn.commit()

    async def rollback(self) -> None:
        await self._conn.rollback()

    async def close(self) -> None:
        await self._conn.close()


async def _connect(path: str, *, read_only: bool) -> GuardedConnection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # Pragmas first: the authorizer refuses turning foreign keys off, not on.
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA foreign_keys = ON")
    # A page cache that holds the hot index pages of large recoveries (SQLite's default is 2 MB).
    await conn.execute(f"PRAGMA cache_size = {-65536 if not read_only else -16384}")
    if not read_only:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        # Checkpoint the WAL less often than every 4 MB, so fewer commits pay for one.
        await conn.execute("PRAGMA wal_autocheckpoint = 16384")
    await conn.set_authorizer(guard.authorize)
    return GuardedConnection(conn)


class Database:
    """The service's handle on the app database: a single writer and a reader."""

    def __init__(self, path: str, writer: GuardedConnection, readers: list[GuardedConnection]) -> None:
        self.path = path
        self.writer = writer
        self._readers = readers
        self._idle_readers: asyncio.Queue[GuardedConnection] = asyncio.Queue()
        for reader in readers:
            self._idle_readers.put_nowait(reader)
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, readers: int = 4) -> Database:
        """Open (creating when missing) the app database and add the service's own tables."""
        db_path = str(path)
        if db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(db_path, read_only=False)
        try:
            await writer.execute("BEGIN IMMEDIATE")
            await _create_schema(writer)
            await writer.commit()
            reader_connections = [await _connect(db_path, read_only=True) for _ in range(readers)]
        except BaseException:
            await writer.close()
            raise
        return cls(db_path, writer, reader_connections)

    async def close(self) -> None:
        # Both are always closed: an open aiosqlite connection keeps its thread, and the process, alive.
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
            await self.writer.execute("BEGIN IMMEDIATE")
            try:
                yield self.writer
            except BaseException:
                await self.writer.rollback()
                raise
            if commit:
                await self.writer.commit()
            else:
                await self.writer.rollback()

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


class NotAnAppDatabase(RuntimeError):
    """The file holds some of the app's tables but not all the service writes to."""


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
