"""The statements that write one recovered row into production, idempotently and under D1's size limit.

Shapes (every value a literal rendered by SQLite's quote(); see README.md for the reasoning):

    sync_data         UPDATE sync_sequence ... (claim the row's seq, only if the row will be written);
                      INSERT ... ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE ... WHERE newer version;
    logbook_entries   INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE newer sync_version, same user;
    sync_sequence     INSERT ... ON CONFLICT (id) DO UPDATE SET current_value = MAX(current, recovered);

A row whose INSERT would be too long is written as an INSERT with its long text columns empty, followed
by `UPDATE ... SET col = col || piece` statements, each guarded by the length the column must have at that
point, so a repeated or resumed apply appends each piece exactly once.
"""

# ruff: noqa: S608  (every value in these statements is a literal rendered by SQLite's quote())

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .literals import LiteralRenderer, SqlValue, split_text

Row = Mapping[str, SqlValue]

# D1 refuses statements over 100,000 bytes and strings or rows over 2,000,000 bytes.
D1_MAX_STATEMENT_BYTES = 100_000
D1_MAX_ROW_BYTES = 2_000_000
# A long row's text columns above this size move out of its INSERT into appended pieces; the columns
# left inline are small, so the INSERT then fits whatever the table (20 columns at most).
SPLIT_COLUMNS_ABOVE_BYTES = 1024
# Smallest room for a piece worth writing (a piece must hold at least one character in hex form).
MIN_PIECE_LITERAL_BYTES = 256
# Stand-in for the prefix length in an append statement while its size is worked out (7 digits suffice).
_LENGTH_PLACEHOLDER = "9" * 10


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    conflict_target: tuple[str, ...]
    on_conflict_set: tuple[str, ...]
    # DO UPDATE only when this holds: the incoming row is newer (NULL versions count as 1, as the service does).
    update_condition: str
    # Identify the recovered version of the row in append statements (never the columns being appended).
    row_match: tuple[str, ...]
    key_columns: tuple[str, ...]  # what the reports name a row by
    unique_columns: tuple[str, ...]  # never written in pieces: two rows' first pieces ('') would collide

    def can_split(self, column: str) -> bool:
        return column not in self.row_match and column not in self.unique_columns


SYNC_DATA = TableSpec(
    name="sync_data",
    columns=("id", "user_id", "entity_type", "entity_id", "data", "checksum", "version", "created_at",
             "updated_at", "deleted_at", "device_id", "seq"),
    conflict_target=("user_id", "entity_type", "entity_id"),
    # id and created_at stay production's when the key exists; updated_at is set by the table's trigger.
    on_conflict_set=("data", "checksum", "version", "deleted_at", "device_id", "seq"),
    update_condition="COALESCE(excluded.version, 1) > COALESCE(sync_data.version, 1)",
    row_match=("user_id", "entity_type", "entity_id", "version", "checksum", "deleted_at"),
    key_columns=("user_id", "entity_type", "entity_id"),
    unique_columns=("id", "seq"),
)

LOGBOOK_ENTRIES = TableSpec(
    name="logbook_entries",
    columns=("id", "user_id", "timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids",
             "notes", "mood", "tags", "session_id", "metadata", "created_at", "updated_at", "sync_version",
             "checksum", "deleted_at", "device_id"),
    conflict_target=("id",),
    on_conflict_set=("timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids", "notes",
                     "mood", "tags", "session_id", "metadata", "created_at", "updated_at", "sync_version",
                     "checksum", "deleted_at", "device_id"),
    # The id is global: an id held by another user in production is not taken over (as the service does).
    update_condition="COALESCE(excluded.sync_version, 1) > COALESCE(logbook_entries.sync_version, 1)"
    " AND logbook_entries.user_id = excluded.user_id",
    row_match=("id", "user_id", "sync_version", "checksum", "updated_at", "deleted_at"),
    key_columns=("user_id", "id"),
    unique_columns=("id",),
)

# The row's seq is the value claimed by the UPDATE just before its INSERT.
CLAIMED_SEQ = "(SELECT current_value FROM sync_sequence WHERE id = 1)"
# First in every sync_data file: the claims update this row, so it must exist (it always does in the app).
ENSURE_SEQUENCE_ROW = "INSERT INTO sync_sequence (id, current_value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;"


def sequence_floor_statement(current_value: int) -> str:
    """Raise production's sequence to at least the recovered database's (never lower it)."""
    return (
        f"INSERT INTO sync_sequence (id, current_value) VALUES (1, {int(current_value)})"
        " ON CONFLICT (id) DO UPDATE SET current_value = MAX(current_value, excluded.current_value);"
    )


@dataclass(frozen=True)
class OversizeRow:
    """A row that does not fit one statement: split into pieces, or left out with the reason."""

    table: str
    key: dict[str, SqlValue]
    row_bytes: int
    single_statement_bytes: int
    action: Literal["split", "skipped"]
    reason: str
    split_columns: tuple[str, ...] = ()
    statements: int = 0


@dataclass(frozen=True)
class RowStatements:
    """The statements that write one row, to be applied together and in order (never across files)."""

    table: str
    statements: tuple[str, ...]
    oversize: OversizeRow | None = None

    @property
    def skipped(self) -> bool:
        return not self.statements


@dataclass
class StatementBuilder:
    renderer: LiteralRenderer
    max_statement_bytes: int = D1_MAX_STATEMENT_BYTES - 1000

    def sync_data(self, row: Row) -> RowStatements:
        literals = self._literals(SYNC_DATA, row)
        claim = self._claim_seq(literals, row["seq"] is not None)
        return self._row(SYNC_DATA, row, literals | {"seq": CLAIMED_SEQ}, before=(claim,))

    def logbook_entry(self, row: Row) -> RowStatements:
        return self._row(LOGBOOK_ENTRIES, row, self._literals(LOGBOOK_ENTRIES, row), before=())

    def fits(self, statement: str) -> bool:
        return _size(statement) <= self.max_statement_bytes

    def _literals(self, spec: TableSpec, row: Row) -> dict[str, str]:
        return dict(zip(spec.columns, self.renderer.render([row[c] for c in spec.columns]), strict=True))

    def _row(self, spec: TableSpec, row: Row, literals: dict[str, str], before: tuple[str, ...]) -> RowStatements:
        single = (*before, _upsert(spec, literals))
        if all(self.fits(s) for s in single):
            return RowStatements(spec.name, single)
        return self._split_row(spec, row, literals, before, single_bytes=_size(single[-1]))

    def _split_row(
        self, spec: TableSpec, row: Row, literals: dict[str, str], before: tuple[str, ...], single_bytes: int
    ) -> RowStatements:
        key = {c: row[c] for c in spec.key_columns}
        size = row_bytes(row)

        def skipped(reason: str) -> RowStatements:
            return RowStatements(spec.name, (), OversizeRow(spec.name, key, size, single_bytes, "skipped", reason))

        if size > D1_MAX_ROW_BYTES:
            return skipped(f"the row is {size} bytes, over D1's {D1_MAX_ROW_BYTES}-byte row limit")
        # Scaled down for a small statement limit, so that the columns left inline always fit.
        threshold = min(SPLIT_COLUMNS_ABOVE_BYTES, self.max_statement_bytes // 32)
        long_texts = {
            c: value for c in spec.columns
            if isinstance(value := row[c], str) and spec.can_split(c) and _size(literals[c]) > threshold
        }
        statements = [*before, _upsert(spec, literals | dict.fromkeys(long_texts, "''"))]
        for column, text in long_texts.items():
            appends = self._appends(spec, literals, column, text)
            if appends is None:
                statements = []
                break
            statements += appends
        if not statements or not all(self.fits(s) for s in statements):
            return skipped(f"its key or version columns are too long for a {self.max_statement_bytes}-byte statement")
        oversize = OversizeRow(spec.name, key, size, single_bytes, "split",
                               f"written in {len(statements)} statements", tuple(long_texts), len(statements))
        return RowStatements(spec.name, tuple(statements), oversize)

    def _appends(self, spec: TableSpec, literals: dict[str, str], column: str, value: str) -> list[str] | None:
        """`column = column || piece` per piece, each applied only while the column holds exactly the pieces
        before it (its byte length), and only to the recovered version of the row. None when the row's
        match columns leave no room for a piece."""
        match = " AND ".join(_equals(c, literals[c]) for c in spec.row_match)
        head = f"UPDATE {spec.name} SET {column} = {column} || "
        tail = f" WHERE {match} AND length(CAST({column} AS BLOB)) = "
        budget = self.max_statement_bytes - len(f"{head}{tail}{_LENGTH_PLACEHOLDER};".encode())
        if budget < MIN_PIECE_LITERAL_BYTES:
            return None
        statements: list[str] = []
        written = 0
        for piece in split_text(value, budget):
            statements.append(f"{head}{self.renderer.render_one(piece)}{tail}{written};")
            written += len(piece.encode("utf-8"))
        return statements

    def _claim_seq(self, literals: dict[str, str], has_recovered_seq: bool) -> str:
        """Take the next value of production's sequence for this row, or the recovered seq when that is
        higher, but only when the upsert after it will write the row (the same version test)."""
        candidates = ["current_value + 1", "(SELECT COALESCE(MAX(seq), 0) + 1 FROM sync_data)"]
        if has_recovered_seq:
            candidates.append(literals["seq"])
        key = " AND ".join(f"{c} = {literals[c]}" for c in SYNC_DATA.conflict_target)
        return (
            f"UPDATE sync_sequence SET current_value = MAX({', '.join(candidates)}) WHERE id = 1"
            f" AND NOT EXISTS (SELECT 1 FROM sync_data WHERE {key}"
            f" AND COALESCE(version, 1) >= COALESCE({literals['version']}, 1));"
        )


def _upsert(spec: TableSpec, literals: Mapping[str, str]) -> str:
    columns = ", ".join(spec.columns)
    values = ", ".join(literals[c] for c in spec.columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in spec.on_conflict_set)
    return (
        f"INSERT INTO {spec.name} ({columns}) VALUES ({values})"
        f" ON CONFLICT ({', '.join(spec.conflict_target)}) DO UPDATE SET {updates} WHERE {spec.update_condition};"
    )


def _size(statement: str) -> int:
    return len(statement.encode("utf-8"))


def _equals(column: str, literal: str) -> str:
    return f"{column} IS NULL" if literal == "NULL" else f"{column} = {literal}"


def row_bytes(row: Row) -> int:
    """Roughly what the row weighs in D1 (its text and blob bytes, 8 per number)."""
    size = 0
    for value in row.values():
        if isinstance(value, str):
            size += len(value.encode("utf-8"))
        elif isinstance(value, bytes):
            size += len(value)
        elif value is not None:
            size += 8
    return size


__all__ = [
    "D1_MAX_ROW_BYTES",
    "D1_MAX_STATEMENT_BYTES",
    "ENSURE_SEQUENCE_ROW",
    "LOGBOOK_ENTRIES",
    "SYNC_DATA",
    "OversizeRow",
    "RowStatements",
    "StatementBuilder",
    "TableSpec",
    "sequence_floor_statement",
]
