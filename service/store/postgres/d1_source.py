"""export-d1 from PostgreSQL: the exporter's `SourceDatabase` queries run on a PostgreSQL snapshot.

The exporter speaks SQLite's placeholders (`?`, `:name`); `_Connection` passes its statements to psycopg
with them translated, so the one exporter (and its statements, limits and reports) serves both engines.
One REPEATABLE READ READ ONLY transaction holds the snapshot for the whole export.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from service.d1_export.source import REQUIRED_TABLES, UPLOAD_TABLES, SourceDatabase, SourceError, SourceFile
from service.store.postgres.engine import redact

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def translate(sql: str) -> str:
    """SQLite's `?` and `:name` placeholders as psycopg's `%s` and `%(name)s` (a literal `%` doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


class _Connection:
    """The part of `sqlite3.Connection` the exporter uses (`execute`), over a psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(translate(sql), params)


def _check_tables(conn: psycopg.Connection[Any], tables: dict[str, tuple[str, ...]], problem: str) -> None:
    for table, needed in tables.items():
        present = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s", (table,))}
        if not present:
            raise SourceError(f"{problem}: no table {table}")
        missing = [c for c in needed if c not in present]
        if missing:
            raise SourceError(f"{problem}: {table} has no column {', '.join(missing)}")


class PgSourceDatabase(SourceDatabase):
    """The exporter's queries; only the table check differs (information_schema, not SQLite's pragma)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__(_Connection(conn))  # type: ignore[arg-type]
        self._pg = conn

    def check_upload(self, upload_id: str) -> None:
        _check_tables(self._pg, UPLOAD_TABLES, "--upload needs the recovery service's tables")
        found = self._conn.execute("SELECT 1 FROM recovery_ledger WHERE upload_id = ?", (upload_id,)).fetchone()
        if found is None:
            raise SourceError(f"no upload {upload_id!r} in recovery_ledger")


@contextmanager
def open_pg_source(url: str) -> Iterator[tuple[SourceDatabase, SourceFile]]:
    """One read-only snapshot of the PostgreSQL database, checked to hold the app's tables; with what
    stands for the "file" in the export's manifest (the URL without its password, the snapshot's id)."""
    location = redact(url)
    try:
        conn = psycopg.connect(url)
    except psycopg.Error as error:
        raise SourceError(f"{location}: cannot connect: {' '.join(str(error).split())}") from error
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        _check_tables(conn, REQUIRED_TABLES, f"{location} is not an app database")
        row = conn.execute("SELECT pg_current_snapshot()::text, pg_database_size(current_database())").fetchone()
        snapshot, size = (str(row[0]), int(row[1])) if row is not None else ("", 0)
        described = SourceFile(location, hashlib.sha256(f"{location} {snapshot}".encode()).hexdigest(), size, False)
        yield PgSourceDatabase(conn), described
    except psycopg.Error as error:
        raise SourceError(f"{location}: cannot read: {' '.join(str(error).split())}") from error
    finally:
        conn.close()
