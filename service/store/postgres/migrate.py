"""The service's own tables on PostgreSQL: numbered migrations (`migrations/NNNN_name.sql`) applied in order,
each in its own transaction with its row in `recovery_schema_version`, under an advisory lock so replicas
starting together apply each one once. The service never creates or changes an app table (setup.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from service.store.interface import SchemaTooNew
from service.store.postgres.setup import APP_TABLES

# pg_advisory_lock key of the migrations (any fixed number; user locks use the other, two-key, form).
MIGRATION_LOCK = 0x7265_7379_6E63  # "resync"
VERSION_TABLE = "recovery_schema_version"
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the service, oldest first."""
    found: list[Migration] = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the PostgreSQL migrations are not numbered 1..n: {versions}")
    return found


def _touches_app_table(sql: str) -> str | None:
    """A migration statement that names an app table after CREATE/ALTER/DROP/TRUNCATE/DELETE (a mistake the
    role's privileges refuse anyway; this says so before it reaches the server)."""
    for table in APP_TABLES:
        pattern = rf"\b(ALTER|DROP|TRUNCATE|DELETE\s+FROM|CREATE\s+(UNIQUE\s+)?INDEX\s+\w*\s*ON)\s+(TABLE\s+)?{table}\b"
        if re.search(pattern, sql, re.IGNORECASE):
            return table
    return None


def applied_versions(conn: Any) -> list[int]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in conn.execute(f"SELECT version FROM {VERSION_TABLE} ORDER BY version")]  # noqa: S608


def migrate(conn: Any) -> list[int]:
    """Apply the migrations not applied yet; returns their versions. `conn` is a psycopg connection in
    autocommit mode (each migration is one transaction of its own)."""
    done: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with conn.transaction():
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        applied = set(applied_versions(conn))
        known = migrations()
        if applied and max(applied) > known[-1].version:
            raise SchemaTooNew(f"the database's service tables are at migration {max(applied)}, newer than "
                               f"this release knows ({known[-1].version}): run the newer release")
        for migration in known:
            if migration.version in applied:
                continue
            table = _touches_app_table(migration.sql)
            if table is not None:
                raise RuntimeError(f"migration {migration.version:04d} would change the app table {table}")
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, name, applied_at)"  # noqa: S608
                    " VALUES (%s, %s, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))",
                    (migration.version, migration.name),
                )
            done.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return done
