"""--baseline: the live schema the migrations start from, read from a schema dump or a SQLite database file.

A production database whose schema drifted from its migrations (a column added by hand) cannot be
rebuilt by replaying them on an empty database. The baseline puts that schema in place first. Accepted:
`wrangler d1 export DB --remote --no-data` output, `sqlite3 db .schema` / `.dump`, a hand-written
schema.sql, or a SQLite database file itself (e.g. wrangler's local copy under .wrangler/state).
Only the schema is used: data statements are counted and ignored, PRAGMAs and transaction statements
are skipped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import sql_text
from .model import MigrationInputError, Statement

_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Baseline:
    path: Path
    statements: tuple[Statement, ...]

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class BaselineLoad:
    # Data statements (INSERT/UPDATE/DELETE) of a full export that were not applied.
    ignored_data_statements: int


def read_baseline(path: Path) -> Baseline:
    """Read the file into statements; a SQLite database file yields its schema's CREATE statements."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise MigrationInputError(str(path), f"cannot read the baseline: {error}") from error
    if header == _SQLITE_HEADER:
        return Baseline(path, tuple(sql_text.split_statements(_schema_of_database(path))))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise MigrationInputError(
            str(path), f"the baseline is neither SQL text nor a SQLite database: {error}"
        ) from error
    return Baseline(path, tuple(sql_text.split_statements(text)))


def _schema_of_database(path: Path) -> str:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise MigrationInputError(str(path), f"cannot open the baseline database: {error}") from error
    try:
        rows = connection.execute(
            # Tables first (indexes, triggers and views need them), each kind in creation order.
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY type <> 'table', rowid"
        ).fetchall()
    except sqlite3.Error as error:
        raise MigrationInputError(str(path), f"cannot read the baseline database's schema: {error}") from error
    finally:
        connection.close()
    return "".join(f"{sql};\n" for (sql,) in rows)


def apply_baseline(connection: sqlite3.Connection, baseline: Baseline) -> BaselineLoad:
    """Create the baseline's schema in the (empty) scratch database; exit-2 error on what SQLite refuses."""
    ignored = 0
    deferred: list[Statement] = []
    for statement in baseline.statements:
        if sql_text.is_transaction_control(statement) or sql_text.is_pragma(statement):
            continue
        if sql_text.is_schema_table_insert(statement):
            _create_virtual_tables(connection, baseline, statement)
        elif sql_text.is_ddl(statement):
            if _execute(connection, statement, statement.sql) is not None:
                deferred.append(statement)  # maybe written before the table it needs: tried again at the end
        else:
            ignored += sql_text.changes_data(statement)
    for statement in deferred:
        _execute_or_raise(connection, baseline, statement, statement.sql)
    return BaselineLoad(ignored)


def _execute(connection: sqlite3.Connection, statement: Statement, sql: str) -> str | None:
    """Run one schema statement; SQLite's message when it refuses it, else None."""
    if _creates_reserved_table(statement):
        return None  # sqlite_sequence & co: SQLite makes them itself
    try:
        connection.execute(sql)
    except sqlite3.Error as error:
        if "already exists" in str(error):
            return None  # a virtual table's storage tables, created with it; or a duplicate: the first stands
        return str(error)
    return None


def _execute_or_raise(connection: sqlite3.Connection, baseline: Baseline, statement: Statement, sql: str) -> None:
    error = _execute(connection, statement, sql)
    if error is not None:
        raise MigrationInputError(
            f"{baseline.name}:{statement.line}", f"SQLite cannot load this baseline statement: {error}"
        )


def _creates_reserved_table(statement: Statement) -> bool:
    words = statement.masked.split()
    return len(words) >= 3 and words[1].upper() == "TABLE" and sql_text.unquote_name(words[2]).startswith("sqlite_")


def _create_virtual_tables(connection: sqlite3.Connection, baseline: Baseline, statement: Statement) -> None:
    """Run the CREATE VIRTUAL TABLE that `.dump` stores as a row of sqlite_schema."""
    connection.execute("CREATE TEMP TABLE baseline_schema_rows (type, name, tbl_name, rootpage, sql)")
    try:
        connection.execute(sql_text.retarget_schema_table_insert(statement, "temp.baseline_schema_rows"))
        rows = connection.execute(
            "SELECT sql FROM temp.baseline_schema_rows WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
        ).fetchall()
    except sqlite3.Error as error:
        raise MigrationInputError(
            f"{baseline.name}:{statement.line}", f"SQLite cannot load this baseline statement: {error}"
        ) from error
    finally:
        connection.execute("DROP TABLE temp.baseline_schema_rows")
    for (sql,) in rows:
        _execute_or_raise(connection, baseline, statement, sql)
