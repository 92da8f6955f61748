"""Shared by the replay tests: app databases, running the command, and reading what it wrote."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.replay.cli import main
from service.store.sqlite.schema import APP_SCHEMA, SERVICE_SCHEMA
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


# A batch file of many users and devices, shared by the resume and shard suites.
USERS = [(f"user_ReplayTestUser{n:07d}", f"user{n}@example.com", "user") for n in range(20)]
UNKNOWN = "user_NobodyNobodyNobody00"
LINES = 3000
RECORDS_PER_LINE = 10


def entry(entry_id: str, day: int, notes: str, updated: str = "2025-06-01T18:30:12.345Z") -> dict[str, Any]:
    return {
        "id": entry_id, "timestamp": f"2025-{1 + day % 12:02d}-{1 + day % 28:02d}T17:45:00.000Z",
        "duration": 5 + day % 55, "type": "practice", "instrument": "piano",
        "pieces": [{"title": f"Etude {day % 40}", "composer": "Czerny"}], "notes": notes,
        "createdAt": "2025-06-01T18:30:12.345Z", "updatedAt": updated,
    }


def batch_file(path: Path, count: int = LINES) -> tuple[Path, int]:
    """`count` lines of many users and devices, edits re-sent later, deletions, an unknown user and bad lines;
    and how many units they hold."""
    lines: list[Any] = []
    units = 0
    for i in range(count):
        user = UNKNOWN if i % 250 == 7 else USERS[i % len(USERS)][0]
        records = [{"entity_type": "logbook_entry", "data": entry(f"e{i}_{j}", i + j, f"line {i} record {j}")}
                   for j in range(RECORDS_PER_LINE - 1)]
        if i >= 40:  # the same user's entry from 40 lines back, edited later
            records.append({"entity_type": "logbook_entry",
                            "data": entry(f"e{i - 40}_1", i, f"edit of e{i - 40}_1", "2025-08-01T10:00:00.000Z")})
        device = f"dev_{i % len(USERS):02d}{i % 7 == 0:014d}"  # a second device now and then
        line: dict[str, Any] = {"user_id": user, "device_id": device, "records": records}
        if i % 100 == 50:
            line["deleted"] = {"logbook_entry": [f"e{i - 20}_2"]}
        lines.append(line)
        units += len(records) + (1 if "deleted" in line else 0)
        if i % 700 == 3:
            lines.append('{"user_id": "' + USERS[0][0] + '", "records": [')  # cut short
            units += 1
    return ndjson(path, *lines), units


def versioned_rows(db: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in query(db, "SELECT user_id, entity_type, entity_id, checksum, version,"
                                        " deleted_at IS NOT NULL FROM sync_data")}


def live_logbook(db: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in query(db, "SELECT id, user_id, checksum, sync_version FROM logbook_entries"
                                        " WHERE deleted_at IS NULL")}
