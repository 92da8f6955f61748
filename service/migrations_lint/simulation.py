"""--simulate: apply the migrations to a scratch database holding synthetic rows and count what they lose.

Each file runs inside one transaction, as D1 applies a migration, so `PRAGMA foreign_keys=OFF` in the
file is the same no-op it is on D1 and every cascade really happens. A statement SQLite cannot execute
here (drifted schema, or synthetic rows a constraint refuses) is skipped and reported, and the rest of
the file still runs, so later cascades are still measured.
"""

from __future__ import annotations

import sqlite3

from . import sql_text
from .baseline import Baseline, apply_baseline
from .catalog import read_catalog
from .linter import open_scratch_database
from .model import DroppedTable, FileSimulation, MigrationFile, RowLoss, SimulationError, StagingTable
from .seeding import count_rows, seed_empty_tables


def simulate_migrations(migrations: list[MigrationFile], baseline: Baseline | None = None) -> list[FileSimulation]:
    connection = open_scratch_database()
    results: list[FileSimulation] = []
    try:
        if baseline:
            apply_baseline(connection, baseline)
            results.append(FileSimulation(file=baseline.name, baseline=True))
            _seed(connection, results[-1], _staging_tables(migrations, after=-1))
        for index, migration in enumerate(migrations):
            result = FileSimulation(file=migration.name)
            results.append(result)
            before = row_counts(connection)
            result.skipped, result.error = apply_in_one_transaction(connection, migration)
            result.lost_rows, result.dropped_tables = compare_row_counts(before, row_counts(connection))
            _seed(connection, result, _staging_tables(migrations, after=index))
    finally:
        connection.close()
    return results


def _seed(connection: sqlite3.Connection, result: FileSimulation, staging: dict[str, str]) -> None:
    seeding = seed_empty_tables(connection, leave_empty=set(staging))
    result.seeded, result.not_seeded = seeding.seeded, seeding.not_seeded
    result.staging = [StagingTable(name, staging[name.lower()]) for name in seeding.left_empty]


def _staging_tables(migrations: list[MigrationFile], *, after: int) -> dict[str, str]:
    """Tables that a file after index `after` fills by copying rows from another table (the first such
    copy, as file:line), keyed by lower-case name. In production they are empty until then, and seeded
    rows would collide with the copied ones (UNIQUE) and hide what the copy keeps."""
    staging: dict[str, str] = {}
    for migration in migrations[after + 1 :]:
        for statement in migration.statements:
            copy = sql_text.copy_of(statement)
            if copy:
                staging.setdefault(copy[0].lower(), f"{migration.name}:{statement.line}")
    return staging


def apply_in_one_transaction(
    connection: sqlite3.Connection, migration: MigrationFile
) -> tuple[list[SimulationError], SimulationError | None]:
    """Run the file as D1 does, in one transaction, skipping what SQLite cannot execute here.

    Returns the skipped statements, and the reason the whole file was rolled back, if it was.
    """
    skipped: list[SimulationError] = []
    connection.execute("BEGIN")
    for statement in migration.statements:
        if sql_text.is_transaction_control(statement):
            continue  # D1 refuses these; the lint reports them
        try:
            connection.execute(statement.sql).fetchall()
        except sqlite3.Error as error:
            skipped.append(SimulationError(statement.line, str(error)))
            if not connection.in_transaction:  # SQLite rolled the whole transaction back (rare: OR ROLLBACK, I/O)
                return skipped, SimulationError(statement.line, f"the file was rolled back: {error}")
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as error:  # deferred foreign key violations surface here
        connection.execute("ROLLBACK")
        last_line = migration.statements[-1].line if migration.statements else 1
        return skipped, SimulationError(last_line, f"at COMMIT: {error}")
    return skipped, None


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
