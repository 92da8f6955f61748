"""--simulate: apply the migrations to a scratch database holding synthetic rows and count what they lose.

Each file runs inside one transaction, as D1 applies a migration, so `PRAGMA foreign_keys=OFF` in the
file is the same no-op it is on D1 and every cascade really happens.
"""

from __future__ import annotations

import sqlite3

from . import sql_text
from .catalog import read_catalog
from .linter import open_scratch_database
from .model import DroppedTable, FileSimulation, MigrationFile, RowLoss, SimulationError
from .seeding import count_rows, seed_empty_tables


def simulate_migrations(migrations: list[MigrationFile]) -> list[FileSimulation]:
    connection = open_scratch_database()
    results: list[FileSimulation] = []
    try:
        for migration in migrations:
            result = FileSimulation(file=migration.name)
            results.append(result)
            before = row_counts(connection)
            result.error = apply_in_one_transaction(connection, migration)
            if result.error:
                break  # the scratch database no longer follows the migrations; later files mean nothing
            result.lost_rows, result.dropped_tables = compare_row_counts(before, row_counts(connection))
            seeding = seed_empty_tables(connection)
            result.seeded, result.not_seeded = seeding.seeded, seeding.not_seeded
    finally:
        connection.close()
    return results


def apply_in_one_transaction(connection: sqlite3.Connection, migration: MigrationFile) -> SimulationError | None:
    """Run the file as D1 does, all or nothing; return where and why it failed, if it did."""
    connection.execute("BEGIN")
    for statement in migration.statements:
        if sql_text.is_transaction_control(statement):
            continue  # D1 refuses these; the lint reports them
        try:
            connection.execute(statement.sql).fetchall()
        except sqlite3.Error as error:
            connection.execute("ROLLBACK")
            return SimulationError(statement.line, str(error))
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as error:  # deferred foreign key violations surface here
        connection.execute("ROLLBACK")
        last_line = migration.statements[-1].line if migration.statements else 1
        return SimulationError(last_line, f"at COMMIT: {error}")
    return None


def row_counts(connection: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """Row count of every data table, keyed by lower-case name (value: display name, count)."""
    return {
        key: (table.name, count_rows(connection, table.name))
        for key, table in read_catalog(connection).tables.items()
        if table.holds_rows
    }


def compare_row_counts(
    before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]
) -> tuple[list[RowLoss], list[DroppedTable]]:
    """Tables that still exist with fewer rows, and tables that are gone (reported, not counted as loss:
    the lint's drop rules judge deliberate drops)."""
    lost: list[RowLoss] = []
    dropped: list[DroppedTable] = []
    for key, (name, rows_before) in before.items():
        if key not in after:
            dropped.append(DroppedTable(name, rows_before))
        elif after[key][1] < rows_before:
            lost.append(RowLoss(name, rows_before, after[key][1]))
    return lost, dropped
