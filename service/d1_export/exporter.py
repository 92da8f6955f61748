"""One export: the selected rows of the recovered database as SQL files, in the order D1 must apply them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import MANIFEST_NAME, OVERSIZE_NAME, ExportFile, ExportWriter, oversize_document, write_json
from .literals import LiteralRenderer
from .source import Selection, SourceDatabase, SourceFile
from .statements import (
    ENSURE_SEQUENCE_ROW,
    LOGBOOK_ENTRIES,
    SYNC_DATA,
    OversizeRow,
    RowStatements,
    StatementBuilder,
    sequence_floor_statement,
)

SYNC_SEQUENCE = "sync_sequence"


@dataclass(frozen=True)
class Limits:
    max_statement_bytes: int
    max_file_statements: int
    max_file_bytes: int


@dataclass
class ExportResult:
    out_dir: Path
    files: list[ExportFile]
    rows: Counter[str]
    sequence_value: int
    oversize: list[OversizeRow] = field(default_factory=list)

    @property
    def skipped(self) -> list[OversizeRow]:
        return [row for row in self.oversize if row.action == "skipped"]

    @property
    def split(self) -> list[OversizeRow]:
        return [row for row in self.oversize if row.action == "split"]

    @property
    def statements(self) -> int:
        return sum(f.statements for f in self.files)

    @property
    def max_statement_bytes(self) -> int:
        return max((f.max_statement_bytes for f in self.files), default=0)


def export_rows(source: SourceDatabase, selection: Selection, out_dir: Path, limits: Limits) -> ExportResult:
    """sync_data first (each file opens by making sure the sequence row exists), then logbook_entries,
    then production's sequence raised to the recovered one."""
    writer = ExportWriter(out_dir, max_statements=limits.max_file_statements, max_bytes=limits.max_file_bytes,
                          preambles={SYNC_DATA.name: [ENSURE_SEQUENCE_ROW]})
    renderer = LiteralRenderer()
    try:
        builder = StatementBuilder(renderer, limits.max_statement_bytes)
        result = ExportResult(out_dir, writer.files, Counter(), source.sequence_value())
        for row in source.sync_data_rows(selection):
            _add(writer, result, builder.sync_data(row))
        for row in source.logbook_rows(selection):
            _add(writer, result, builder.logbook_entry(row))
        writer.add_row(SYNC_SEQUENCE, [sequence_floor_statement(result.sequence_value)])
        result.rows[SYNC_SEQUENCE] += 1
        writer.flush()
    finally:
        renderer.close()
    return result


def _add(writer: ExportWriter, result: ExportResult, row: RowStatements) -> None:
    if row.oversize is not None:
        result.oversize.append(row.oversize)
    if not row.skipped:
        writer.add_row(row.table, row.statements)
        result.rows[row.table] += 1


def write_reports(result: ExportResult, source_file: SourceFile, selection: Selection, limits: Limits) -> None:
    """The oversize report (when a row did not fit one statement), then the manifest, written last so a
    directory with a manifest holds a finished export."""
    if result.oversize:
        write_json(result.out_dir / OVERSIZE_NAME, oversize_document(result.oversize, limits.max_statement_bytes))
    write_json(result.out_dir / MANIFEST_NAME, manifest(result, source_file, selection, limits))


def manifest(result: ExportResult, source_file: SourceFile, selection: Selection, limits: Limits) -> dict[str, Any]:
    return {
        "tool": "python -m service export-d1",
        "source": {
            "path": source_file.path,
            "sha256": source_file.sha256,
            "bytes": source_file.bytes,
            "wal_pending": source_file.wal_pending,
        },
        "selection": {"since": selection.since, "upload_id": selection.upload_id},
        "limits": {
            "max_statement_bytes": limits.max_statement_bytes,
            "max_file_statements": limits.max_file_statements,
            "max_file_bytes": limits.max_file_bytes,
        },
        "files": [
            {"name": f.name, "table": f.table, "statements": f.statements, "rows": f.rows, "bytes": f.bytes,
             "max_statement_bytes": f.max_statement_bytes, "sha256": f.sha256}
            for f in result.files
        ],
        "rows": {table: result.rows[table] for table in (SYNC_DATA.name, LOGBOOK_ENTRIES.name, SYNC_SEQUENCE)},
        "statements": result.statements,
        "max_statement_bytes": result.max_statement_bytes,
        "sync_sequence": result.sequence_value,
        "oversize": {
            "split": len(result.split),
            "skipped": len(result.skipped),
            "report": OVERSIZE_NAME if result.oversize else None,
        },
    }
