"""The recovered database, read-only, in one snapshot: which rows to export, and what the file was."""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.domain.times import APP_TIMESTAMP_FORMAT

from .literals import SqlValue
from .statements import LOGBOOK_ENTRIES, SYNC_DATA, TableSpec

REQUIRED_TABLES: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    SYNC_DATA.name: SYNC_DATA.columns,
    LOGBOOK_ENTRIES.name: LOGBOOK_ENTRIES.columns,
    "sync_sequence": ("id", "current_value"),
}
UPLOAD_TABLES: dict[str, tuple[str, ...]] = {
    "recovery_ledger": ("upload_id",),
    "recovery_raw_records": ("user_id", "entity_type", "entity_id", "upload_id"),
}


class SourceError(Exception):
    """The database cannot be exported as asked (missing, unreadable, not an app database, unknown upload)."""


@dataclass(frozen=True)
class Selection:
    """Which sync_data rows to export; with neither filter, every row of every user in `users`."""

    since: str | None = None  # app time text, `YYYY-MM-DD HH:MM:SS` UTC: sync_data.updated_at >= since
    upload_id: str | None = None  # keys whose raw records came with this upload

    @property
    def everything(self) -> bool:
        return self.since is None and self.upload_id is None


def parse_since(text: str) -> str:
    """`--since` (ISO 8601 with or without offset, or the app's `YYYY-MM-DD HH:MM:SS`; no offset means UTC)
    as the app's UTC time text. Fractions of a second are dropped: stored times have whole seconds, so
    the filter keeps the rows of that second too."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2025-12-01T09:30:00Z) or 'YYYY-MM-DD HH:MM:SS' (UTC)"
        ) from error
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(APP_TIMESTAMP_FORMAT)


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    bytes: int
    # A write-ahead log with content: its commits are in the snapshot read but not in the hash.
    wal_pending: bool


class SourceDatabase:
    """Read-only queries on the recovered database, all inside one read transaction (one snapshot)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def sequence_value(self) -> int:
        row = self._conn.execute("SELECT current_value FROM sync_sequence WHERE id = 1").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def check_upload(self, upload_id: str) -> None:
        _check_tables(self._conn, UPLOAD_TABLES, "--upload needs the recovery service's tables")
        found = self._conn.execute("SELECT 1 FROM recovery_ledger WHERE upload_id = ?", (upload_id,)).fetchone()
        if found is None:
            raise SourceError(f"no upload {upload_id!r} in recovery_ledger")

    def sync_data_rows(self, selection: Selection) -> Iterator[dict[str, SqlValue]]:
        """The selected rows in the order they changed in the recovered database (seq order)."""
        where = " AND ".join(["s.user_id IN (SELECT id FROM users)", *_selected(selection)])
        query = f"SELECT {_columns(SYNC_DATA, 's')} FROM sync_data s WHERE {where} ORDER BY s.seq, s.id"  # noqa: S608
        yield from self._rows(query, selection)

    def logbook_rows(self, selection: Selection) -> Iterator[dict[str, SqlValue]]:
        """Every logbook row of a user in `users`; with a filter, those whose sync_data entry is selected."""
        conditions = ["l.user_id IN (SELECT id FROM users)"]
        if not selection.everything:
            entry = " AND ".join(
                ["s.user_id = l.user_id", "s.entity_type = 'logbook_entry'", "s.entity_id = l.id",
                 *_selected(selection)]
            )
            conditions.append(f"EXISTS (SELECT 1 FROM sync_data s WHERE {entry})")  # noqa: S608
        where = " AND ".join(conditions)
        query = f"SELECT {_columns(LOGBOOK_ENTRIES, 'l')} FROM logbook_entries l WHERE {where}"  # noqa: S608
        yield from self._rows(query + " ORDER BY l.user_id, l.id", selection)

    def _rows(self, query: str, selection: Selection) -> Iterator[dict[str, SqlValue]]:
        params = {"since": selection.since, "upload_id": selection.upload_id}
        cursor = self._conn.execute(query, params)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            yield dict(zip(names, values, strict=True))


def _selected(selection: Selection) -> list[str]:
    """Conditions on the sync_data row `s` for the filters asked for (parameters :since, :upload_id)."""
    conditions = []
    if selection.since is not None:
        conditions.append("s.updated_at >= :since")
    if selection.upload_id is not None:
        conditions.append(
            "EXISTS (SELECT 1 FROM recovery_raw_records r WHERE r.upload_id = :upload_id"
            " AND r.user_id = s.user_id AND r.entity_type = s.entity_type AND r.entity_id = s.entity_id)"
        )
    return conditions


def _columns(spec: TableSpec, alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in spec.columns)


@contextmanager
def open_source(path: str | Path) -> Iterator[SourceDatabase]:
    """Open the database read-only (`mode=ro`), check it has the app's tables, and hold one snapshot."""
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"{path}: no such database file")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise SourceError(f"{path}: cannot open: {error}") from error
    try:
        conn.execute("BEGIN")
        _check_tables(conn, REQUIRED_TABLES, f"{path} is not an app database")
        yield SourceDatabase(conn)
    except sqlite3.Error as error:
        raise SourceError(f"{path}: cannot read: {error}") from error
    finally:
        conn.close()


def _check_tables(conn: sqlite3.Connection, tables: dict[str, tuple[str, ...]], problem: str) -> None:
    try:
        for table, needed in tables.items():
            present = {r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
            if not present:
                raise SourceError(f"{problem}: no table {table}")
            missing = [c for c in needed if c not in present]
            if missing:
                raise SourceError(f"{problem}: {table} has no column {', '.join(missing)}")
    except sqlite3.DatabaseError as error:
        raise SourceError(f"{problem}: {error}") from error


def describe_file(path: str | Path) -> SourceFile:
    """The database file's SHA-256 (of the main file as it is on disk) and size."""
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        wal = file.with_name(file.name + "-wal")
        wal_pending = wal.is_file() and wal.stat().st_size > 0
        return SourceFile(str(file.resolve()), digest.hexdigest(), file.stat().st_size, wal_pending)
    except OSError as error:
        raise SourceError(f"{path}: cannot read: {error}") from error
