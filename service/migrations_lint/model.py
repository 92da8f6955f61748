"""Data shared by the linter, the simulation and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


class MigrationInputError(Exception):
    """An input that cannot be read: a missing path, a file that is not UTF-8, a baseline SQLite cannot load
    (exit code 2). A migration statement SQLite cannot execute is not one: it is skipped and reported."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a migration file.

    `sql` is what gets executed; `code` has comments removed and whitespace collapsed (for display and
    for reading PRAGMA values); `masked` is `code` with string literals blanked, so keywords inside
    strings never look like statements.
    """

    line: int
    sql: str
    code: str
    masked: str


@dataclass(frozen=True)
class MigrationFile:
    path: Path
    statements: tuple[Statement, ...]

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class ChildEffect:
    """A table whose rows change when rows of `via` are deleted (its ON DELETE action)."""

    table: str
    on_delete: str
    via: str

    def describe(self, dropped_parent: str) -> str:
        action = f"ON DELETE {self.on_delete}"
        if self.via.lower() == dropped_parent.lower():
            return f"{self.table} ({action})"
        return f"{self.table} ({action} via {self.via})"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    file: str
    line: int
    statement: str
    table: str
    children: tuple[ChildEffect, ...]
    message: str
    safe_pattern: str


@dataclass(frozen=True)
class RowLoss:
    table: str
    before: int
    after: int


@dataclass(frozen=True)
class DroppedTable:
    table: str
    rows: int


@dataclass(frozen=True)
class SeededTable:
    table: str
    rows: int


@dataclass(frozen=True)
class SkippedTable:
    table: str
    reason: str


@dataclass(frozen=True)
class StagingTable:
    """A table left empty by the seeding: a later file copies rows into it (as in production, where it is
    empty until then); seeded rows would only collide with the copied ones."""

    table: str
    filled_at: str  # file:line of the copy


@dataclass(frozen=True)
class SimulationError:
    line: int
    message: str


@dataclass
class FileSimulation:
    """What applying one migration file (or loading the baseline) did to the seeded scratch database."""

    file: str
    baseline: bool = False
    lost_rows: list[RowLoss] = field(default_factory=list)
    dropped_tables: list[DroppedTable] = field(default_factory=list)
    seeded: list[SeededTable] = field(default_factory=list)
    not_seeded: list[SkippedTable] = field(default_factory=list)
    staging: list[StagingTable] = field(default_factory=list)
    # Statements SQLite could not execute on the synthetic data; skipped, the rest of the file still ran.
    skipped: list[SimulationError] = field(default_factory=list)
    # The whole file could not be applied (rolled back at COMMIT): its losses are unmeasured.
    error: SimulationError | None = None

    @property
    def failed(self) -> bool:
        return bool(self.lost_rows) or self.error is not None
