"""A SQL dump of the app database (`wrangler d1 export`, sqlite3's `.dump`): its `sync_data` rows.

SQLite reads the dump, not a regular expression: the statements are executed one at a time (cut where
`sqlite3.complete_statement` says one ends) into a scratch database file, then `sync_data` is read
back in a fixed order. The scratch file lives in a temporary directory and is removed afterwards; an
authorizer keeps the dump from attaching other databases (the app database above all).

A dump is untrusted SQL: a recursive CTE or a view over one never ends, and a statement can grow the
process or the scratch file without bound. Every statement (and every read of the rows) runs under a
budget, enforced by SQLite's progress handler and `max_page_count`: `STATEMENT_SECONDS` of time,
`STATEMENT_MEMORY_BYTES` of growth of the process, and a scratch file of at most `SCRATCH_FACTOR` times
the dump (plus `SCRATCH_SLACK_BYTES`). Past it the dump is reported unreadable with the reason.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import msgspec

from service.replay.model import OwnerClaim, RecordGroup, UnreadableInput
from service.replay.ndjson import LineSource
from service.usecases.ingest import IncomingRecord

REQUIRED_COLUMNS = frozenset({"user_id", "entity_type", "entity_id", "data", "deleted_at"})
# One user's rows together, then one device's, so consecutive rows share an upload. `rowid` breaks
# ties, so the order (and with it a checkpoint's count of rows done) is the same on every run.
_ROWS = """
SELECT user_id, entity_type, entity_id, data, deleted_at, device_id FROM sync_data
ORDER BY user_id, device_id, entity_type, entity_id, rowid
"""
_ROWS_WITHOUT_DEVICE = """
SELECT user_id, entity_type, entity_id, data, deleted_at, NULL AS device_id FROM sync_data
ORDER BY user_id, entity_type, entity_id, rowid
"""
_PROGRESS_EVERY_LINES = 10_000

STATEMENT_SECONDS = 60.0
STATEMENT_MEMORY_BYTES = 512 * 1024 * 1024
SCRATCH_FACTOR = 4
SCRATCH_SLACK_BYTES = 64 * 1024 * 1024
MAX_STATEMENT_BYTES = 64 * 1024 * 1024  # longer statements are refused before SQLite sees them
_BUDGET_CHECK_EVERY = 100_000  # SQLite virtual-machine instructions between two checks
_PAGE_SIZE = 4096
_encode = msgspec.json.Encoder().encode
T = TypeVar("T")


class Budget:
    """SQLite's progress handler: stops the statement running when it is past its time or memory.
    `arm()` starts a new allowance (before each statement, and before each row is read back)."""

    def __init__(self, seconds: float, memory_bytes: int) -> None:
        self.seconds, self.memory_bytes = seconds, memory_bytes
        self.exceeded: str | None = None
        self._deadline = 0.0
        self._memory_limit = 0

    def arm(self) -> None:
        self.exceeded = None
        self._deadline = time.monotonic() + self.seconds
        self._memory_limit = _resident_bytes() + self.memory_bytes

    def __call__(self) -> int:
        if time.monotonic() > self._deadline:
            self.exceeded = f"ran longer than {self.seconds:g} s"
        elif _resident_bytes() > self._memory_limit:
            self.exceeded = f"took more than {self.memory_bytes // (1024 * 1024):,} MB of memory"
        return 1 if self.exceeded else 0  # non-zero interrupts the statement

    def explain(self, error: sqlite3.Error, what: str) -> str | None:
        """Why SQLite stopped, when it was the budget: a reason for the operator."""
        if self.exceeded is not None:
            return (f"{what} {self.exceeded} (a recursive query or view that never ends?); the dump is not "
                    "replayed")
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
            return f"{what} grew the scratch database past its limit ({error}); the dump is not replayed"
        return None


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far, which only grows
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class DumpRows:
    """The dump's sync_data rows, each as a one-record group owned by its `user_id`."""

    def __init__(self, conn: sqlite3.Connection, budget: Budget) -> None:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sync_data)")}
        if not columns:
            raise UnreadableInput("the dump has no sync_data table")
        missing = REQUIRED_COLUMNS - columns
        if missing:
            raise UnreadableInput(f"the dump's sync_data has no {', '.join(sorted(missing))} column")
        self._conn = conn
        self._budget = budget
        self._query = _ROWS if "device_id" in columns else _ROWS_WITHOUT_DEVICE
        self.count: int = self._step(lambda: conn.execute("SELECT COUNT(*) FROM sync_data").fetchone())[0]

    def __iter__(self) -> Iterator[RecordGroup]:
        cursor = self._step(lambda: self._conn.execute(self._query))
        while row := self._step(cursor.fetchone):
            user_id, entity_type, entity_id, data, deleted_at, device_id = row
            claim = OwnerClaim(user_id) if isinstance(user_id, str) and user_id else None
            yield RecordGroup(claim, device_id, [_record(str(entity_type), entity_id, data, deleted_at)])

    def _step(self, read: Callable[[], T]) -> T:
        self._budget.arm()
        try:
            return read()
        except sqlite3.Error as error:
            reason = self._budget.explain(error, "reading sync_data")
            raise UnreadableInput(reason or f"SQLite refused to read sync_data: {error}") from error


def _record(entity_type: str, entity_id: object, data: object, deleted_at: object) -> IncomingRecord:
    if deleted_at is not None:
        # A deletion that keeps its own time: an edit a device made after it still wins (CONTRACT 8).
        return IncomingRecord(entity_type, _encode({"id": entity_id, "deletedAt": deleted_at}))
    if isinstance(data, bytes):
        return IncomingRecord(entity_type, data)
    return IncomingRecord(entity_type, b"null" if data is None else str(data).encode())


@contextmanager
def open_dump(
    stream: LineSource, on_progress: Callable[[], None] | None = None, *, dump_bytes: int = 0
) -> Iterator[DumpRows]:
    """Load the dump (of `dump_bytes`) into a scratch database and give its sync_data rows; the scratch
    file is removed."""
    budget = Budget(STATEMENT_SECONDS, STATEMENT_MEMORY_BYTES)
    with tempfile.TemporaryDirectory(prefix="replay-dump-") as scratch:
        conn = sqlite3.connect(Path(scratch) / "dump.db", isolation_level=None)
        try:
            # Throwaway file: no journal, no fsync. Set before the authorizer, which ignores the dump's pragmas.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            pages = (SCRATCH_FACTOR * dump_bytes + SCRATCH_SLACK_BYTES) // _PAGE_SIZE
            conn.execute(f"PRAGMA max_page_count = {pages}")
            conn.set_progress_handler(budget, _BUDGET_CHECK_EVERY)
            conn.set_authorizer(_authorize_dump)
            _load(conn, stream, on_progress, budget)
            conn.set_authorizer(None)
            yield DumpRows(conn, budget)
        finally:
            conn.close()


def _authorize_dump(action: int, _arg1: str | None, _arg2: str | None, _db: str | None, _src: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        return sqlite3.SQLITE_IGNORE  # foreign_keys, defer_foreign_keys...: meaningless in the scratch file
    return sqlite3.SQLITE_OK


def _load(
    conn: sqlite3.Connection, stream: LineSource, on_progress: Callable[[], None] | None, budget: Budget
) -> None:
    pending = ""  # text of the statement(s) being read
    first_line = 0  # where `pending` starts, for error messages
    number = 0
    while raw := stream.readline(MAX_STATEMENT_BYTES + 1):
        number += 1
        if len(raw) + len(pending) > MAX_STATEMENT_BYTES:
            raise UnreadableInput(f"a statement longer than {MAX_STATEMENT_BYTES:,} bytes; the dump is not replayed",
                                  line=first_line if pending.strip() else number)
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise UnreadableInput(f"not UTF-8 text: {error}", line=number) from error
        if not pending.strip():
            pending, first_line = "", number
        pending += line
        if sqlite3.complete_statement(pending):
            for statement in _statements(pending):
                _execute(conn, statement, first_line, budget)
            pending = ""
        if on_progress is not None and number % _PROGRESS_EVERY_LINES == 0:
            on_progress()
    if pending.strip() and not _only_comments(pending):
        raise UnreadableInput("the dump ends in the middle of a statement (is it cut short?)", line=first_line)
    if conn.in_transaction:
        raise UnreadableInput("the dump ends inside a transaction it never commits (is it cut short?)", line=number)


def _statements(text: str) -> Iterator[str]:
    """The complete statements of `text`, which usually holds exactly one."""
    start = 0
    end = text.find(";")
    while end != -1:
        # A `;` inside a string or a trigger body does not end the statement; SQLite knows which do.
        if sqlite3.complete_statement(text[start : end + 1]):
            yield text[start : end + 1]
            start = end + 1
        end = text.find(";", end + 1)


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("--") for line in text.splitlines())


def _execute(conn: sqlite3.Connection, statement: str, line: int, budget: Budget) -> None:
    budget.arm()
    try:
        conn.execute(statement)
    except sqlite3.Error as error:
        reason = budget.explain(error, "a statement")
        raise UnreadableInput(reason or f"SQLite refused a statement: {error}", line=line) from error
