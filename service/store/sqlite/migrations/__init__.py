"""The SQLite schema: the app's tables on an empty file, and the service's own tables by numbered migrations.

`NNNN_name.sql` in this package, applied in order inside the caller's write transaction, each recorded in
`recovery_schema_version` (the same table as on PostgreSQL). Migrations create and change `recovery_`
tables only; the app's tables are created once, on an empty file, and never changed after.

A database made before migrations existed has the service's tables but no version: `adopt_unversioned`
brings it to 0001 the way those releases did on every start (tables and indexes it lacks, columns added
since, backfills of tables added since, the previous version's idempotency keys), then marks it 0001.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from service.domain.times import app_timestamp
from service.store.interface import NotAnAppDatabase, SchemaTooNew
from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.schema import (
    ADDED_COLUMNS,
    APP_SCHEMA,
    BACKFILLS,
    LEGACY_IDEMPOTENCY_COPY,
    LEGACY_IDEMPOTENCY_TABLE,
)

REQUIRED_APP_TABLES = ("users", "sync_data", "sync_sequence", "logbook_entries")
VERSION_TABLE = "recovery_schema_version"
ADOPTED = 1  # the version a database made before migrations existed is brought to
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_SERVICE_TABLE = re.compile(r"recovery_\w+", re.IGNORECASE)
# What a migration statement creates, changes or removes, and the table it names.
_TARGET = re.compile(
    r"^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s+\w+\s+ON|CREATE\s+TABLE|CREATE\s+VIEW|ALTER\s+TABLE|DROP\s+\w+|INSERT\s+INTO|"
    r"UPDATE|DELETE\s+FROM|CREATE\s+TRIGGER\s+\w+\s+\w+\s+\w+\s+ON)\s+(\w+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return statements(self.sql)


def migrations() -> list[Migration]:
    """Every migration shipped with the service, oldest first (numbered 1..n without gaps)."""
    found = [
        Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8"))
        for entry in resources.files(__package__).iterdir()
        if (match := _FILE.fullmatch(entry.name))
    ]
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the SQLite migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


def tables_named(statement: str) -> list[str]:
    """The tables a migration statement writes to or changes (its target)."""
    return [match[1] for match in [_TARGET.match(statement)] if match is not None]


def applied_versions(conn: SyncConnection) -> list[int]:
    found = conn.fetchone("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,))
    if found is None:
        return []
    return [int(r["version"]) for r in conn.fetchall(f"SELECT version FROM {VERSION_TABLE} ORDER BY version")]  # noqa: S608


def migrate(conn: SyncConnection) -> list[int]:
    """Bring the database up to the latest migration inside the caller's write transaction; returns the
    versions applied now. The app schema goes on an empty file only: an existing app database keeps its
    tables, indexes and triggers exactly as they are."""
    existing = {r["name"] for r in conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "users" not in existing:
        for statement in statements(APP_SCHEMA):
            conn.execute(statement)
    else:
        missing = [t for t in REQUIRED_APP_TABLES if t not in existing]
        if missing:
            raise NotAnAppDatabase(f"the database has a users table but no {', '.join(missing)}")
    known = migrations()
    applied = set(applied_versions(conn))
    if applied and max(applied) > known[-1].version:
        raise SchemaTooNew(f"the database's service tables are at migration {max(applied)}, newer than this "
                           f"release knows ({known[-1].version}): run the newer release")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("  # the one table that cannot be a migration of its own
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done: list[int] = []
    if not applied and any(_SERVICE_TABLE.fullmatch(t) for t in existing):
        adopt_unversioned(conn, existing, known[ADOPTED - 1])
        for migration in known[:ADOPTED]:
            _record(conn, migration)
            applied.add(migration.version)
            done.append(migration.version)
    for migration in known:
        if migration.version in applied:
            continue
        for statement in migration.statements():
            outside = [t for t in tables_named(statement) if not _SERVICE_TABLE.fullmatch(t)]
            if outside:
                raise RuntimeError(f"migration {migration.version:04d} would change the app table {outside[0]}")
            conn.execute(statement)
        _record(conn, migration)
        done.append(migration.version)
    # A write on every start (the same row, rewritten): a database the service cannot write is refused
    # now, not at the first upload.
    conn.execute(
        "INSERT INTO recovery_service (key, value) VALUES ('writable', 'yes')"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    return done


def _record(conn: SyncConnection, migration: Migration) -> None:
    conn.execute(f"INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",  # noqa: S608
                 (migration.version, migration.name, app_timestamp()))


_CREATE = re.compile(r"^(\s*CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX))\s+", re.IGNORECASE)


def adopt_unversioned(conn: SyncConnection, existing: set[str], baseline: Migration) -> None:
    """What every start did before migrations existed, once: the baseline's tables and indexes the
    database lacks, the columns added since its release (with what fills them), the backfill of each
    table it did not have, and the previous version's unscoped idempotency keys."""
    for statement in baseline.statements():
        conn.execute(_CREATE.sub(r"\1 IF NOT EXISTS ", statement, count=1))
    for table, backfill in BACKFILLS.items():
        if table not in existing:
            conn.execute(backfill)
    for table, column, column_type, fill in ADDED_COLUMNS:
        columns = {r["name"] for r in conn.fetchall(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type}")
            conn.execute(fill)
    if LEGACY_IDEMPOTENCY_TABLE in existing and "recovery_idempotency_keys" not in existing:
        conn.execute(LEGACY_IDEMPOTENCY_COPY)


def statements(script: str) -> list[str]:
    """Split a schema script into statements, trigger bodies kept whole."""
    found: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        found.append(buffer.strip())
    return found
