"""Shared by the replay tests: app databases, running the command, and reading what it wrote."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.replay.cli import main
from service.store.schema import APP_SCHEMA, SERVICE_SCHEMA
from tests.conftest import FIXTURES, add_users, query

EXPORTS = FIXTURES / "exports"
EXPORT_2_0 = EXPORTS / "mirubato-data-export-2025-11-30.json"
EXPORT_1_0 = EXPORTS / "mirubato-data-export-2025-09-01.json"
PRACTICE_REPORT = EXPORTS / "mirubato-practice-report-2025-08-15.json"
LOCALSTORAGE_DUMP = EXPORTS / "localstorage-dump-dev_a1B2c3D4e5F6g7H8.json"
ALL_FIXTURES = (EXPORT_1_0, EXPORT_2_0, PRACTICE_REPORT, LOCALSTORAGE_DUMP)

Row = tuple[str, str, str, str, bool]  # user, entity type, entity id, checksum, deleted


def app_database(path: Path, *users: tuple[str, str, str]) -> str:
    """An app database as the service finds it after the incident: users, no history."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(APP_SCHEMA + SERVICE_SCHEMA)
    finally:
        conn.close()
    add_users(str(path), *users)
    return str(path)


class Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def summary(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.stdout)
        return parsed

    def file(self, name: str) -> dict[str, Any]:
        matches = [f for f in self.summary["files"] if f["file_name"] == name]
        assert len(matches) == 1, (name, self.summary["files"])
        return matches[0]


def replay(capsys: pytest.CaptureFixture[str], db: str, *args: str | Path) -> Run:
    """`python -m service replay --db DB --json ARGS...`, in process."""
    capsys.readouterr()
    exit_code = main(["--db", db, "--json", *map(str, args)])
    out = capsys.readouterr()
    return Run(exit_code, out.out, out.err)


def count(db: str, table: str) -> int:
    return int(query(db, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])  # noqa: S608 (test-chosen names)


def sync_rows(db: str) -> set[Row]:
    return {
        (r["user_id"], r["entity_type"], r["entity_id"], r["checksum"], r["deleted_at"] is not None)
        for r in query(db, "SELECT user_id, entity_type, entity_id, checksum, deleted_at FROM sync_data")
    }


def ledger_counts(db: str, source: str | None = None) -> dict[str, Counter[str]]:
    """Per user: the outcome counts of all its ledger rows added up, and `received`."""
    totals: dict[str, Counter[str]] = {}
    for row in query(db, "SELECT user_id, source, received, counts FROM recovery_ledger"):
        if source is not None and row["source"] != source:
            continue
        total = totals.setdefault(row["user_id"], Counter())
        total.update({k: v for k, v in json.loads(row["counts"]).items() if v})
        total["received"] += row["received"]
    return totals


def progress(db: str) -> dict[tuple[str, str, str], int]:
    return {(r["user_id"], r["entity_type"], r["outcome"]): r["n"]
            for r in query(db, "SELECT user_id, entity_type, outcome, n FROM recovery_progress")}


def ndjson(path: Path, *lines: Any) -> Path:
    """Write lines: dicts and lists as JSON; str and bytes as they are (to write broken lines)."""

    def raw(line: Any) -> bytes:
        if isinstance(line, bytes):
            return line
        return (line if isinstance(line, str) else json.dumps(line)).encode()

    path.write_bytes(b"".join(raw(line) + b"\n" for line in lines))
    return path


def export_changes(path: Path) -> dict[str, list[Any]]:
    """The push body `changes` of the pushable parts of an export file."""
    export = json.loads(path.read_text(encoding="utf-8"))
    return {"entries": export.get("logbook", []), "goals": export.get("goals", [])}
