"""The output directory: numbered SQL files of whole rows, the manifest and the oversize report."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .statements import OversizeRow

MANIFEST_NAME = "manifest.json"
OVERSIZE_NAME = "oversize.json"
# The files an export writes; --force replaces these and nothing else.
_EXPORT_FILE = re.compile(r"^\d{4}-[a-z_]+\.sql$")


class OutputError(Exception):
    """The output directory cannot be used."""


def prepare_out_dir(out_dir: Path, *, force: bool) -> None:
    """Create DIR; refuse a non-empty one unless `force`, which removes an earlier export's files only."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a directory")
    try:
        present = sorted(out_dir.iterdir()) if out_dir.exists() else []
        if present and not force:
            raise OutputError(f"{out_dir} is not empty (an earlier export?): use --force to replace its export files")
        for path in present:
            if path.is_file() and (_EXPORT_FILE.match(path.name) or path.name in (MANIFEST_NAME, OVERSIZE_NAME)):
                path.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out_dir}: {error}") from error


@dataclass(frozen=True)
class ExportFile:
    name: str
    table: str
    statements: int
    rows: int
    bytes: int
    max_statement_bytes: int
    sha256: str


@dataclass
class _OpenFile:
    table: str
    statements: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0


class ExportWriter:
    """Packs the rows' statements into files of at most `max_statements` / `max_bytes`, one table per file,
    numbered in the order they must be applied. A row's statements always share a file."""

    def __init__(self, out_dir: Path, *, max_statements: int, max_bytes: int,
                 preambles: dict[str, Sequence[str]] | None = None) -> None:
        self.out_dir = out_dir
        self.max_statements = max_statements
        self.max_bytes = max_bytes
        self.preambles = preambles or {}
        self.files: list[ExportFile] = []
        self._open: _OpenFile | None = None

    def add_row(self, table: str, statements: Sequence[str]) -> None:
        size = sum(_size(s) + 1 for s in statements)
        current = self._open
        if current is not None and (
            current.table != table
            or len(current.statements) + len(statements) > self.max_statements
            or current.bytes + size > self.max_bytes
        ):
            self.flush()
        if self._open is None:
            preamble = list(self.preambles.get(table, ()))
            self._open = _OpenFile(table, preamble, 0, sum(_size(s) + 1 for s in preamble))
        self._open.statements += statements
        self._open.rows += 1
        self._open.bytes += size

    def flush(self) -> None:
        current, self._open = self._open, None
        if current is None:
            return
        name = f"{len(self.files) + 1:04d}-{current.table}.sql"
        header = (
            f"-- {name}: {current.rows} {current.table} rows in {len(current.statements)} statements."
            " Apply the files in name order, each is idempotent.\n"
        )
        text = header + "".join(f"{s}\n" for s in current.statements)
        data = text.encode("utf-8")
        try:
            (self.out_dir / name).write_bytes(data)
        except OSError as error:
            raise OutputError(f"{self.out_dir / name}: {error}") from error
        self.files.append(
            ExportFile(name, current.table, len(current.statements), current.rows, len(data),
                       max(_size(s) for s in current.statements), hashlib.sha256(data).hexdigest())
        )


def _size(statement: str) -> int:
    return len(statement.encode("utf-8"))


def write_json(path: Path, document: Any) -> None:
    try:
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: {error}") from error


def oversize_document(rows: list[OversizeRow], max_statement_bytes: int) -> dict[str, Any]:
    return {
        "max_statement_bytes": max_statement_bytes,
        "note": "rows too long for one statement: 'split' rows are written as an INSERT and appended pieces"
        " (complete, nothing truncated); 'skipped' rows are NOT in the SQL files and need another way in",
        "rows": [asdict(row) for row in rows],
    }
