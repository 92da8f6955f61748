"""A SQL dump of the app database (`wrangler d1 export`, sqlite3's `.dump`): its `sync_data` rows.

SQLite reads the dump, not a regular expression: the statements are executed one at a time (cut where
`sqlite3.complete_statement` says one ends) into a scratch database file, then `sync_data` is read
back in a fixed order. The scratch file lives in a temporary directory and is removed afterwards; an
authorizer keeps the dump from attaching other databases (the app database above all).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from service.pipeline import IncomingRecord
from service.replay.model import OwnerClaim, RecordGroup, UnreadableInput
from service.replay.ndjson import LineSource

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
_encode = msgspec.json.Encoder().encode


class DumpRows:
    """The dump's sync_data rows, each as a one-record group owned by its `user_id`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sync_data)")}
        if not columns:
            raise UnreadableInput("the dump has no sync_data table")
        missing = REQUIRED_COLUMNS - columns
        if missing:
            raise UnreadableInput(f"the dump's sync_data has no {', '.join(sorted(missing))} column")
        self._conn = conn
        self._query = _ROWS if "device_id" in columns else _ROWS_WITHOUT_DEVICE
        self.count: int = conn.execute("SELECT COUNT(*) FROM sync_data").fetchone()[0]

    def __iter__(self) -> Iterator[RecordGroup]:
        for user_id, entity_type, entity_id, data, deleted_at, device_id in self._conn.execute(self._query):
            claim = OwnerClaim(user_id) if isinstance(user_id, str) and user_id else None
            yield RecordGroup(claim, device_id, [_record(str(entity_type), entity_id, data, deleted_at)])


def _record(entity_type: str, entity_id: object, data: object, deleted_at: object) -> IncomingRecord:
    if deleted_at is not None:
        # A deletion that keeps its own time: an edit a device made after it still wins (CONTRACT 8).
        return IncomingRecord(entity_type, _encode({"id": entity_id, "deletedAt": deleted_at}))
    if isinstance(data, bytes):
        return IncomingRecord(entity_type, data)
    return IncomingRecord(entity_type, b"null" if data is None else str(data).encode())


@contextmanager
def open_dump(stream: LineSource, on_progress: Callable[[], None] | None = None) -> Iterator[DumpRows]:
    """Load the dump into a scratch database and give its sync_data rows; the scratch file is removed."""
    with tempfile.TemporaryDirectory(prefix="replay-dump-") as scratch:
        conn = sqlite3.connect(Path(scratch) / "dump.db", isolation_level=None)
        try:
            # Throwaway file: no journal, no fsync.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.set_authorizer(_authorize_dump)
            _load(conn, stream, on_progress)
            conn.set_authorizer(None)
            yield DumpRows(conn)
        finally:
            conn.close()


def _authorize_dump(action: int, _arg1: str | None, _arg2: str | None, _db: str | None, _src: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        return sqlite3.SQLITE_IGNORE  # foreign_keys, defer_foreign_keys...: meaningless in the scratch file
    return sqlite3.SQLITE_OK


def _load(conn: sqlite3.Connection, stream: LineSource, on_progress: Callable[[], None] | None) -> None:
    pending = ""  # text of the statement(s) being read
    first_line = 0  # where `pending` starts, for error messages
    number = 0
    while raw := stream.readline():
        number += 1
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise UnreadableInput(f"not UTF-8 text: {error}", line=number) from error
        if not pending.strip():
            pending, first_line = "", number
        pending += line
        if sqlite3.complete_statement(pending):
            for statement in _statements(pending):
                _execute(conn, statement, first_line)
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


def _execute(conn: sqlite3.Connection, statement: str, line: int) -> None:
    try:
        conn.execute(statement)
    except sqlite3.Error as error:
        raise UnreadableInput(f"SQLite refused a statement: {error}", line=line) from error
