"""Synthetic rows for the simulation: a few per empty table, parents before children."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field

from .catalog import Catalog, Column, ForeignKey, Table, read_catalog
from .model import SeededTable, SkippedTable

ROWS_PER_TABLE = 3

_LITERAL = re.compile(r"'((?:[^']|'')*)'|(-?\d+(?:\.\d+)?)")


@dataclass
class SeedReport:
    seeded: list[SeededTable] = field(default_factory=list)
    not_seeded: list[SkippedTable] = field(default_factory=list)
    left_empty: list[str] = field(default_factory=list)  # empty tables named in leave_empty


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def count_rows(connection: sqlite3.Connection, table: str) -> int:
    # The name comes from sqlite_master and is quoted, so building the query is safe.
    (count,) = connection.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()  # noqa: S608
    return int(count)


def seed_empty_tables(connection: sqlite3.Connection, leave_empty: Collection[str] = ()) -> SeedReport:
    """Seed every empty data table except those whose lower-case name is in `leave_empty`."""
    catalog = read_catalog(connection)
    report = SeedReport()
    for table in parents_first(catalog):
        if not table.holds_rows or count_rows(connection, table.name) > 0:
            continue
        if table.name.lower() in leave_empty:
            report.left_empty.append(table.name)
            continue
        inserted, reason = _seed_table(connection, catalog, table)
        if inserted and count_rows(connection, table.name) == 0:
            inserted, reason = 0, "its trigger deleted the rows again (a cleanup trigger on insert)"
        if inserted:
            report.seeded.append(SeededTable(table.name, inserted))
        else:
            report.not_seeded.append(SkippedTable(table.name, reason))
    return report


def parents_first(catalog: Catalog) -> list[Table]:
    """Tables ordered so every parent comes before its children; a cycle is broken at its oldest table."""
    remaining = dict(catalog.tables)
    ordered: list[Table] = []
    while remaining:
        ready = [
            key
            for key, table in remaining.items()
            if all(_is_self(key, fk) or fk.parent.lower() not in remaining for fk in table.foreign_keys)
        ]
        for key in ready or [next(iter(remaining))]:
            ordered.append(remaining.pop(key))
    return ordered


def _is_self(table_key: str, key: ForeignKey) -> bool:
    return key.parent.lower() == table_key


def _seed_table(connection: sqlite3.Connection, catalog: Catalog, table: Table) -> tuple[int, str]:
    """Insert up to ROWS_PER_TABLE rows; return how many went in and the last reason one did not."""
    allowed = _check_literals(table)
    parent_rows = {fk: _parent_key_rows(connection, catalog, fk) for fk in table.foreign_keys}
    inserted, reason = 0, ""
    for number in range(1, ROWS_PER_TABLE + 1):
        # First only the columns that need a value (defaults and NULLs tend to satisfy CHECKs), then all.
        for fill_all in (False, True):
            row = _synthetic_row(table, number, allowed, parent_rows, fill_all=fill_all)
            if isinstance(row, str):
                reason = row
                break
            try:
                _insert(connection, table.name, row)
            except sqlite3.Error as error:
                reason = str(error)
            else:
                inserted += 1
                break
    return inserted, reason


def _synthetic_row(
    table: Table,
    number: int,
    allowed: dict[str, list[object]],
    parent_rows: dict[ForeignKey, list[tuple[object, ...]] | None],
    *,
    fill_all: bool,
) -> dict[str, object] | str:
    """Column values for one row, or the reason no row can be made."""
    row: dict[str, object] = {}
    for column in table.columns:
        needs_value = column.primary_key_position or (column.not_null and not column.has_default)
        if not column.generated and (fill_all or needs_value):
            row[column.name] = synthetic_value(column, number, allowed.get(column.name.lower()))
    for key in table.foreign_keys:
        candidates = parent_rows[key]
        values = None if candidates is None else _foreign_key_values(table, key, number, candidates, row)
        if values is None:
            if any(_column(table, name).not_null for name in key.child_columns):
                missing = "does not exist" if candidates is None else "has no row to reference"
                return f"parent table {key.parent} {missing}"
            values = dict.fromkeys(key.child_columns)
        row.update(values)
    return row


def _foreign_key_values(
    table: Table,
    key: ForeignKey,
    number: int,
    parent_rows: list[tuple[object, ...]],
    row: dict[str, object],
) -> dict[str, object] | None:
    if key.parent.lower() == table.name.lower():
        # Self-reference: point the row at itself.
        referenced = _referenced_columns(table, key)
        if not all(name in row for name in referenced):
            return None
        return {child: row[parent] for child, parent in zip(key.child_columns, referenced, strict=True)}
    if not parent_rows:
        return None
    chosen = parent_rows[(number - 1) % len(parent_rows)]
    return dict(zip(key.child_columns, chosen, strict=True))


def _parent_key_rows(
    connection: sqlite3.Connection, catalog: Catalog, key: ForeignKey
) -> list[tuple[object, ...]] | None:
    """Key values of up to ROWS_PER_TABLE parent rows; None when the parent table does not exist."""
    parent = catalog.get(key.parent)
    if parent is None:
        return None
    if parent.name.lower() == key.child.lower():
        return []
    columns = ", ".join(quote(name) for name in _referenced_columns(parent, key))
    query = f"SELECT {columns} FROM {quote(parent.name)} LIMIT {ROWS_PER_TABLE}"  # noqa: S608 (quoted names)
    return [tuple(row) for row in connection.execute(query).fetchall()]


def _referenced_columns(parent: Table, key: ForeignKey) -> tuple[str, ...]:
    if all(name is not None for name in key.parent_columns):
        return tuple(name for name in key.parent_columns if name is not None)
    # REFERENCES parent without columns means the parent's primary key (rowid when it has none).
    return parent.primary_key or ("rowid",)


def _column(table: Table, name: str) -> Column:
    return next(column for column in table.columns if column.name.lower() == name.lower())


def synthetic_value(column: Column, number: int, allowed: list[object] | None = None) -> object:
    """A value for the column's declared type (SQLite's affinity rules), unique per row number."""
    if allowed:
        return allowed[(number - 1) % len(allowed)]
    declared = column.declared_type.upper()
    if "INT" in declared:
        return number
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")) or not declared:
        return f"seed{number}@example.test" if "email" in column.name.lower() else f"{column.name}_{number}"
    if "BLOB" in declared:
        return f"{column.name}_{number}".encode()
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return number + 0.5
    if "DATE" in declared or "TIME" in declared:
        return f"2024-01-{number:02d} 12:00:00"
    if "BOOL" in declared:
        return number % 2
    return number


def _check_literals(table: Table) -> dict[str, list[object]]:
    """Values allowed by `CHECK (col IN (...))` or `CHECK (col = ...)` in the table's DDL, per column."""
    allowed: dict[str, list[object]] = {}
    for column in table.columns:
        name = re.escape(column.name)
        column_pattern = rf'(?:"{name}"|`{name}`|\[{name}\]|\b{name}\b)'
        match = re.search(rf"CHECK\s*\(\s*{column_pattern}\s+IN\s*\(([^)]*)\)", table.sql, re.I) or re.search(
            rf"CHECK\s*\(\s*{column_pattern}\s*=\s*('(?:[^']|'')*'|-?\d+(?:\.\d+)?)\s*\)", table.sql, re.I
        )
        if match:
            values = [_literal(text, number) for text, number in _LITERAL.findall(match.group(1))]
            if values:
                allowed[column.name.lower()] = values
    return allowed


def _literal(text: str, number: str) -> object:
    if number:
        return float(number) if "." in number else int(number)
    return text.replace("''", "'")


def _insert(connection: sqlite3.Connection, table: str, row: dict[str, object]) -> None:
    if not row:
        connection.execute(f"INSERT INTO {quote(table)} DEFAULT VALUES")
        return
    columns = ", ".join(quote(name) for name in row)
    placeholders = ", ".join("?" for _ in row)
    insert = f"INSERT INTO {quote(table)} ({columns}) VALUES ({placeholders})"  # noqa: S608 (quoted names)
    connection.execute(insert, tuple(row.values()))
