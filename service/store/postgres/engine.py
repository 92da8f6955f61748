"""The PostgreSQL engine: `Storage` over psycopg 3's synchronous connections, each on a thread of its own.

A use case's work is a synchronous function of a unit; the engine runs it on a connection's thread in one
hop, inside one transaction: writers in READ COMMITTED (a user's writes are serialised by the advisory lock
the unit's `lock_user` takes, so several writers run different users' work at once), readers in REPEATABLE
READ READ ONLY (one consistent snapshot). Nothing is process-local: every rule that keeps replicas apart
(the user lock, the change sequence, idempotency keys) lives in the database, so any number of service
processes may share one server.

After a commit that wrote change numbers the app's `sync_sequence` row is raised to the highest of them in
a transaction of its own (asynchronous commit): holding that one row's lock inside every user's transaction
would serialise all users on it. `current_seq` reads the greater of the row and MAX(seq), so it never lags.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import IsolationLevel
from psycopg.rows import dict_row

from service.store.interface import (
    EngineKind,
    Fault,
    NotAnAppDatabase,
    ReadUnit,
    StorageUnavailable,
    UnstorableText,
    WriteTransaction,
    WriteUnit,
)
from service.store.postgres import migrate, setup
from service.store.postgres.unit import SEQUENCE, PgReadUnit, PgWriteUnit

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_WRITERS = 4
DEFAULT_READERS = 4
LOCK_TIMEOUT_MS = 30_000  # as SQLite's busy timeout: a user's lock (or a row) waited for this long is a fault
CONNECT_TIMEOUT_S = 10
FAULT_MEMORY_S = 60.0

# SQLSTATEs (and classes, by their first two characters) of the faults: the request was fine, the storage
# is not. Connection loss and a server shutting down are CANNOT_OPEN: the next try may reach it again.
_STATE_FAULTS = {
    "53100": Fault.DISK_FULL,
    "25006": Fault.READ_ONLY,  # read_only_sql_transaction: a standby, or default_transaction_read_only
    "42501": Fault.READ_ONLY,  # insufficient_privilege: the service's grants were taken away
    "40001": Fault.LOCKED, "40P01": Fault.LOCKED, "55P03": Fault.LOCKED, "57014": Fault.LOCKED,
    "57P01": Fault.CANNOT_OPEN, "57P02": Fault.CANNOT_OPEN, "57P03": Fault.CANNOT_OPEN,
    "53300": Fault.CANNOT_OPEN,
    "XX001": Fault.CORRUPT, "XX002": Fault.CORRUPT,
}
_CLASS_FAULTS = {"08": Fault.CANNOT_OPEN, "53": Fault.IO_ERROR, "58": Fault.IO_ERROR}


def fault_of(error: BaseException) -> Fault | None:
    """The storage fault behind an error (or its causes), or None when it is not one (a bug, a bad
    statement, a constraint)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg.Error):
            state = current.sqlstate
            if state is not None:
                fault = _STATE_FAULTS.get(state) or _CLASS_FAULTS.get(state[:2])
                if fault is not None:
                    return fault
            elif isinstance(current, psycopg.OperationalError | psycopg.InterfaceError):
                return Fault.CANNOT_OPEN  # no answer from the server at all: the connection is gone
        current = current.__cause__ or current.__context__
    return None


class _OneLine(Exception):
    """A driver's error, its several lines (psycopg's hints) put on one."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(" ".join(str(error).split()))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


class _Connection:
    """One psycopg connection on a thread of its own; reconnected before work when the old one broke."""

    def __init__(self, url: str, name: str, *, read_only: bool) -> None:
        self._url = url
        self._read_only = read_only
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: psycopg.Connection[dict[str, Any]] | None = None

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        conn = psycopg.connect(
            self._url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c lock_timeout={LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout=600000",
        )
        if self._read_only:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        else:
            conn.isolation_level = IsolationLevel.READ_COMMITTED
        return conn

    def _ready(self) -> psycopg.Connection[dict[str, Any]]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                with suppress(Exception):
                    self.conn.close()
            self.conn = None
            self.conn = self._connect()
        return self.conn

    async def run(self, work: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: work(self._ready()))

    async def close(self) -> None:
        def close() -> None:
            if self.conn is not None:
                with suppress(Exception):
                    self.conn.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        finally:
            self._thread.shutdown(wait=True)


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    with suppress(Exception):
        conn.rollback()


def _raise_sync_sequence(conn: psycopg.Connection[Any], seq: int) -> None:
    """Raise the app's counter row to `seq` (never lower it), in a short transaction of its own."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")  # MAX(seq) covers it should it be lost
            conn.execute("UPDATE sync_sequence SET current_value = %s WHERE id = 1 AND current_value < %s",
                         (seq, seq))
    except psycopg.Error as error:
        log.warning("sync_sequence was not raised to %s (current_seq still reads MAX(seq)): %s", seq, error)
        _rollback_quietly(conn)


def _in_transaction(conn: psycopg.Connection[dict[str, Any]], work: Callable[[WriteUnit], T], commit: bool) -> T:
    unit = PgWriteUnit(conn)
    try:
        result = work(unit)
        if commit:
            conn.commit()
        else:
            conn.rollback()
    except BaseException:
        _rollback_quietly(conn)
        raise
    if commit and unit.max_seq:
        _raise_sync_sequence(conn, unit.max_seq)
    return result


def _in_snapshot(conn: psycopg.Connection[dict[str, Any]], work: Callable[[ReadUnit], T]) -> T:
    try:
        return work(PgReadUnit(conn))
    finally:
        _rollback_quietly(conn)


class _Transaction:
    """`Storage.transaction`'s open transaction: each `run` is one hop to the writer, one unit for all."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.unit: PgWriteUnit | None = None

    async def run(self, work: Callable[[WriteUnit], T]) -> T:
        def hop(conn: psycopg.Connection[dict[str, Any]]) -> T:
            if self.unit is None or self.unit.conn is not conn:
                self.unit = PgWriteUnit(conn)
            return work(self.unit)

        return await self._connection.run(hop)


class PostgresStorage:
    """`Storage` on PostgreSQL (see the module's docstring)."""

    def __init__(self, url: str, writers: list[_Connection], readers: list[_Connection]) -> None:
        self.url = url
        self._writers = writers
        self._readers = readers
        self._idle_writers: asyncio.Queue[_Connection] = asyncio.Queue()
        self._idle_readers: asyncio.Queue[_Connection] = asyncio.Queue()
        for writer in writers:
            self._idle_writers.put_nowait(writer)
        for reader in readers:
            self._idle_readers.put_nowait(reader)
        self.fault: tuple[Fault, float] | None = None
        self._busy = 0
        self._closed = asyncio.Event()

    @property
    def kind(self) -> EngineKind:
        return EngineKind.POSTGRESQL

    @property
    def location(self) -> str:
        return redact(self.url)

    @classmethod
    async def open(cls, url: str, *, writers: int = DEFAULT_WRITERS, readers: int = DEFAULT_READERS) -> PostgresStorage:
        """Connect, refuse a role that could drop or empty an app table, apply the service's migrations,
        then open the writers and readers."""
        location = redact(url)
        try:
            await asyncio.to_thread(prepare, url)
        except psycopg.Error as error:
            raise StorageUnavailable(location, fault_of(error), _OneLine(error)) from error
        opened: list[_Connection] = []
        try:
            for i in range(writers):
                opened.append(_Connection(url, f"pg-writer-{i}", read_only=False))
            for i in range(readers):
                opened.append(_Connection(url, f"pg-reader-{i}", read_only=True))
            for connection in opened:
                await connection.run(lambda conn: None)
        except BaseException as error:
            for connection in opened:
                await connection.close()
            if isinstance(error, psycopg.Error):
                raise StorageUnavailable(location, fault_of(error), _OneLine(error)) from error
            raise
        return cls(url, opened[:writers], opened[writers:])

    # -- faults
    def _note(self, error: BaseException) -> None:
        fault = fault_of(error)
        if fault is not None:
            self.fault = (fault, time.monotonic())

    def current_fault(self) -> Fault | None:
        if self.fault is None or time.monotonic() - self.fault[1] > FAULT_MEMORY_S:
            return None
        return self.fault[0]

    def fault_of(self, error: BaseException) -> Fault | None:
        return fault_of(error)

    async def health(self) -> Fault | None:
        def check(conn: psycopg.Connection[dict[str, Any]]) -> Fault | None:
            try:
                row = conn.execute(
                    "SELECT pg_is_in_recovery() AS standby, current_setting('default_transaction_read_only') AS ro,"
                    " (SELECT current_value FROM sync_sequence WHERE id = 1) AS seq"
                ).fetchone()
            finally:
                _rollback_quietly(conn)
            if row is not None and (row["standby"] or row["ro"] == "on"):
                return Fault.READ_ONLY
            return None

        try:
            found = await self._with(self._idle_readers, check, retry=True)
        except Exception as error:
            return fault_of(error) or Fault.CANNOT_OPEN
        return found or self.current_fault()

    # -- work
    async def _with(
        self, idle: asyncio.Queue[_Connection], work: Callable[[psycopg.Connection[Any]], T], *, retry: bool = False
    ) -> T:
        """`work` on an idle connection; with `retry` (reads only) once more when the connection turned out
        to be gone, on a new one: reading twice changes nothing."""
        connection = await idle.get()
        try:
            try:
                return await connection.run(work)
            except psycopg.Error as error:
                if not retry or fault_of(error) is not Fault.CANNOT_OPEN:
                    raise
            return await connection.run(work)
        finally:
            idle.put_nowait(connection)

    async def write(self, work: Callable[[WriteUnit], T], *, commit: bool = True) -> T:
        try:
            result = await self._with(self._idle_writers, lambda conn: _in_transaction(conn, work, commit))
        except psycopg.DataError as error:
            raise _unstorable(error) from error
        except BaseException as error:
            self._note(error)
            raise
        if commit:
            self.fault = None
        return result

    async def write_shared(self, work: Callable[[WriteUnit], T], *, weight: int = 1) -> T:
        """A transaction of its own on any free writer: PostgreSQL commits several connections' transactions
        at once (its WAL flush is shared), so there is no queue to share here, and an error in one caller's
        work is that caller's alone by construction."""
        return await self.write(work)

    @asynccontextmanager
    async def _transaction(self, commit: bool) -> AsyncIterator[WriteTransaction]:
        connection = await self._idle_writers.get()
        try:
            transaction = _Transaction(connection)
            try:
                yield transaction
            except psycopg.DataError as error:
                await connection.run(_rollback_quietly)
                raise _unstorable(error) from error
            except BaseException as error:
                self._note(error)
                await connection.run(_rollback_quietly)
                raise
            unit = transaction.unit

            def finish(conn: psycopg.Connection[Any]) -> None:
                try:
                    if commit:
                        conn.commit()
                    else:
                        conn.rollback()
                except BaseException:
                    _rollback_quietly(conn)
                    raise
                if commit and unit is not None and unit.max_seq:
                    _raise_sync_sequence(conn, unit.max_seq)

            try:
                await connection.run(finish)
            except BaseException as error:
                self._note(error)
                raise
            if commit:
                self.fault = None
        finally:
            self._idle_writers.put_nowait(connection)

    def transaction(self, *, commit: bool = True) -> AbstractAsyncContextManager[WriteTransaction]:
        return self._transaction(commit)

    async def read(self, work: Callable[[ReadUnit], T]) -> T:
        """A read is tried again once when its connection turned out to be gone (the server restarted, an
        idle connection was cut); a write is not: its caller is told (503), and retries."""
        try:
            return await self._with(self._idle_readers, lambda conn: _in_snapshot(conn, work), retry=True)
        except psycopg.DataError as error:
            raise _unstorable(error) from error

    async def close(self) -> None:
        connections = self._writers + self._readers
        # Work in flight holds its connection out of the queues: wait for each to come back, then close.
        for _ in self._writers:
            await self._idle_writers.get()
        for _ in self._readers:
            await self._idle_readers.get()
        for connection in connections:
            await connection.close()


def prepare(url: str) -> None:
    """Start-up, on one connection: the role check, the migrations, the change sequence caught up with
    rows written by someone else (an import of the app's data)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        missing = setup.missing_app_tables(conn)
        if missing:
            raise NotAnAppDatabase(
                f"{redact(url)} has no {', '.join(missing)}: the app's tables are created by their owner"
                " (python -m service postgres-setup prints the SQL), never by the service"
            )
        problems = setup.role_problems(conn)
        if problems:
            raise UnsafeRole(redact(url), problems)
        migrate.migrate(conn)
        conn.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK,))
        try:
            conn.execute(
                f"""SELECT setval('{SEQUENCE}', m) FROM (
                      SELECT GREATEST((SELECT MAX(seq) FROM sync_data),
                                      (SELECT current_value FROM sync_sequence WHERE id = 1)) AS m) t
                    WHERE m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                               FROM {SEQUENCE})"""  # noqa: S608 - a constant
            )
            conn.execute(
                "INSERT INTO recovery_service (key, value) VALUES ('writable', 'yes')"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK,))


class UnsafeRole(StorageUnavailable):
    """The service's role could drop, empty or alter an app table: refused, so that it never can."""

    def __init__(self, location: str, problems: list[str]) -> None:
        cause = PermissionError(
            "; ".join(problems) + ". Connect as a role that owns none of the app's tables and holds only SELECT,"
            " INSERT and UPDATE on them (python -m service postgres-setup prints the SQL)"
        )
        RuntimeError.__init__(self, f"refusing the database {location}: {cause}")
        self.fault = None


def _unstorable(error: psycopg.DataError) -> Exception:
    """A NUL in text is the request's fault, not the storage's: psycopg refuses it in a parameter sent as
    text before it reaches the server, and the server refuses it in one sent in binary (the arrays)."""
    nul_in_binary = isinstance(error, psycopg.errors.CharacterNotInRepertoire) and "0x00" in str(error)
    return UnstorableText(str(error)) if "NUL" in str(error) or nul_in_binary else error
