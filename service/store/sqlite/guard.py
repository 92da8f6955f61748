"""The guard: the service's connections cannot drop, delete from, replace into or rebuild an app table.

Enforced by SQLite itself through an authorizer on every connection the service opens, so it holds for
any statement, including trigger bodies and the cascades SQLite compiles into a statement: an
`INSERT OR REPLACE INTO users` is refused because its cascade deletes from `sync_data`. A REPLACE
into a table without children deletes nothing SQLite reports to the authorizer, so statements naming
REPLACE are refused before they reach SQLite as well.
"""

from __future__ import annotations

import re
import sqlite3

SERVICE_TABLE_PREFIX = "recovery_"

# Refused on app tables: a rebuild needs DROP or ALTER ... RENAME, and deletes lose history.
_DENIED_ON_APP_TABLES = {
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_TRIGGER,
    sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_ALTER_TABLE,
}
# Actions whose table is the second argument (ALTER TABLE's first is the database name).
_DROP_WITH_TABLE_IN_ARG2 = {sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_ALTER_TABLE}
# Pragmas that would switch off the protections the app relies on.
_DENIED_PRAGMAS = {"writable_schema", "legacy_alter_table"}
_REPLACE = re.compile(r"\bREPLACE\b", re.IGNORECASE)


class GuardViolation(sqlite3.DatabaseError):
    """A statement tried to destroy or rewrite app data."""


def is_app_table(name: str | None) -> bool:
    if name is None:
        return False
    lowered = name.lower()
    return not (lowered.startswith(SERVICE_TABLE_PREFIX) or lowered.startswith("sqlite_"))


def authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, _source: str | None) -> int:
    """sqlite3 authorizer callback: deny destructive actions on app tables."""
    if db_name == "temp":
        return sqlite3.SQLITE_OK
    if action in _DENIED_ON_APP_TABLES:
        table = arg2 if action in _DROP_WITH_TABLE_IN_ARG2 else arg1
        if is_app_table(table):
            return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
        pragma = arg1.lower()
        if pragma in _DENIED_PRAGMAS and arg2 is not None:
            return sqlite3.SQLITE_DENY
        if pragma == "foreign_keys" and arg2 is not None and arg2.strip().lower() in {"0", "off", "false", "no"}:
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def check_statement(sql: str) -> None:
    """Refuse REPLACE (INSERT OR REPLACE, REPLACE INTO) before SQLite sees it."""
    if _REPLACE.search(sql):
        raise GuardViolation("REPLACE is not allowed: it deletes rows and cascades to their children")
