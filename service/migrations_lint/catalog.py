"""The schema as SQLite itself reports it: tables, columns and foreign keys, read from a live connection."""

from __future__ import annotations

import sqlite3
from collections import deque
from dataclasses import dataclass

from .model import ChildEffect

# ON DELETE actions that change child rows when parent rows go away (NO ACTION / RESTRICT make the
# delete fail instead, which is loud rather than lossy).
ROW_CHANGING_ACTIONS = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})


@dataclass(frozen=True)
class Column:
    name: str
    declared_type: str
    not_null: bool
    has_default: bool
    primary_key_position: int  # 0 when not part of the primary key
    generated: bool


@dataclass(frozen=True)
class ForeignKey:
    child: str
    parent: str
    child_columns: tuple[str, ...]
    # None where the constraint names no column: it then refers to the parent's primary key.
    parent_columns: tuple[str | None, ...]
    on_delete: str


@dataclass(frozen=True)
class Table:
    name: str
    sql: str
    virtual: bool
    shadow: bool  # storage table of a virtual table (e.g. an FTS index)
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...]

    @property
    def holds_rows(self) -> bool:
        """A table the migrations' data lives in (not a virtual table or its storage)."""
        return not (self.virtual or self.shadow)

    @property
    def primary_key(self) -> tuple[str, ...]:
        keyed = sorted((c.primary_key_position, c.name) for c in self.columns if c.primary_key_position)
        return tuple(name for _, name in keyed)


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, Table]  # keyed by lower-case name: SQLite table names are case-insensitive

    def get(self, name: str) -> Table | None:
        return self.tables.get(name.lower())

    def has(self, name: str) -> bool:
        return name.lower() in self.tables

    def names(self) -> set[str]:
        return {table.name for table in self.tables.values()}

    def referencing(self, parent: str) -> list[ForeignKey]:
        """Foreign keys of other tables that point at `parent` with a row-changing ON DELETE action."""
        return [
            key
            for table in self.tables.values()
            for key in table.foreign_keys
            if key.parent.lower() == parent.lower()
            and key.child.lower() != parent.lower()
            and key.on_delete in ROW_CHANGING_ACTIONS
        ]

    def all_referencing(self, parent: str) -> tuple[str, ...]:
        """Names of the other tables with any foreign key to `parent`, whatever its ON DELETE action."""
        return tuple(
            dict.fromkeys(
                table.name
                for table in self.tables.values()
                for key in table.foreign_keys
                if key.parent.lower() == parent.lower() and table.name.lower() != parent.lower()
            )
        )

    def effects_of_deleting_rows(self, parent: str) -> tuple[ChildEffect, ...]:
        """Every table whose rows are deleted or changed when rows of `parent` are deleted.

        Follows CASCADE transitively (a child that is itself a parent loses its own children's rows);
        SET NULL / SET DEFAULT children are changed, not deleted, so the walk stops there.
        """
        effects: dict[tuple[str, str, str], ChildEffect] = {}
        visited = {parent.lower()}
        pending = deque([parent])
        while pending:
            current = pending.popleft()
            for key in self.referencing(current):
                effect = ChildEffect(table=key.child, on_delete=key.on_delete, via=current)
                effects.setdefault((key.child.lower(), key.on_delete, current.lower()), effect)
                if key.on_delete == "CASCADE" and key.child.lower() not in visited:
                    visited.add(key.child.lower())
                    pending.append(key.child)
        return tuple(effects.values())


class CatalogReader:
    """Reads the catalog of a connection, re-reading only when the schema has changed."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._schema_version: int | None = None
        self._catalog = Catalog(tables={})

    def current(self) -> Catalog:
        (version,) = self._connection.execute("PRAGMA schema_version").fetchone()
        if version != self._schema_version:
            self._catalog = read_catalog(self._connection)
            self._schema_version = version
        return self._catalog


def read_catalog(connection: sqlite3.Connection) -> Catalog:
    rows = connection.execute(
        "SELECT name, coalesce(sql, '') FROM sqlite_master "
        "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
    ).fetchall()
    virtual_names = [name for name, sql in rows if sql.upper().startswith("CREATE VIRTUAL")]
    tables = {}
    for name, sql in rows:
        virtual = name in virtual_names
        shadow = not virtual and any(name.startswith(f"{owner}_") for owner in virtual_names)
        tables[name.lower()] = Table(
            name=name,
            sql=sql,
            virtual=virtual,
            shadow=shadow,
            columns=_read_columns(connection, name),
            foreign_keys=() if virtual else _read_foreign_keys(connection, name),
        )
    return Catalog(tables=tables)


def _read_columns(connection: sqlite3.Connection, table: str) -> tuple[Column, ...]:
    rows = connection.execute(
        'SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid',
        (table,),
    ).fetchall()
    return tuple(
        Column(
            name=name,
            declared_type=declared_type or "",
            not_null=bool(not_null),
            has_default=default is not None,
            primary_key_position=primary_key,
            generated=hidden != 0,
        )
        for name, declared_type, not_null, default, primary_key, hidden in rows
    )


def _read_foreign_keys(connection: sqlite3.Connection, table: str) -> tuple[ForeignKey, ...]:
    rows = connection.execute(
        'SELECT id, "table", "from", "to", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq',
        (table,),
    ).fetchall()
    grouped: dict[int, list[tuple[str, str, str | None, str]]] = {}
    for key_id, parent, child_column, parent_column, on_delete in rows:
        grouped.setdefault(key_id, []).append((parent, child_column, parent_column, on_delete))
    return tuple(
        ForeignKey(
            child=table,
            parent=parts[0][0],
            child_columns=tuple(part[1] for part in parts),
            parent_columns=tuple(part[2] for part in parts),
            on_delete=parts[0][3].upper(),
        )
        for parts in grouped.values()
    )
