"""A replay gives the same outcomes, rows and ledger counts as the same records pushed over HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.api.schemas import PUSH_GROUPS
from tests.conftest import ADA, BEN, auth
from tests.replay.helpers import (
    ALL_FIXTURES,
    LOCALSTORAGE_DUMP,
    app_database,
    export_changes,
    ledger_counts,
    ndjson,
    progress,
    query,
    replay,
    sync_rows,
)

DEVICE = "dev_a1B2c3D4e5F6g7H8"


def push_body(fixture: Path) -> tuple[dict[str, list[Any]], str | None]:
    """What a device holding this file would push: its entries and goals (and deletions, as markers)."""
    if fixture != LOCALSTORAGE_DUMP:
        if fixture.name.startswith("mirubato-practice-report"):
            return {"entries": json.loads(fixture.read_text(encoding="utf-8")), "goals": []}, None
        return export_changes(fixture), None
    dump = json.loads(fixture.read_text(encoding="utf-8"))
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    markers = [{"id": entry_id, "deletedAt": now} for entry_id in json.loads(dump["mirubato:logbook:deletedEntries"])]
    entries = json.loads(dump["mirubato:logbook:entries"]) + markers
    return {"entries": entries, "goals": json.loads(dump["mirubato:logbook:goals"])}, dump["mirubato:device-id"]


def devices(db: str) -> set[tuple[str, str | None]]:
    return {(r["entity_id"], r["device_id"]) for r in query(db, "SELECT entity_id, device_id FROM sync_data")}


def pushable(rows: set[Any]) -> set[Any]:
    return {r for r in rows if r[1] in PUSH_GROUPS.values()}


async def test_replaying_equals_pushing_the_same_records(
    client: AsyncTestClient[Litestar], db_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = [push_body(fixture) for fixture in ALL_FIXTURES]
    for changes, device in bodies:
        headers = {"X-Device-ID": device} if device else {}
        response = await client.post("/api/sync/push", json={"changes": changes}, headers=auth(ADA, **headers))
        assert response.status_code == 200, response.text
    pushed = db_path

    # The same push bodies as lines of a batch file: the same code path, so exactly the same result.
    lines = ndjson(tmp_path / "pushes.ndjson", *(
        {"user_id": ADA[0], "changes": changes, **({"device_id": device} if device else {})}
        for changes, device in bodies
    ))
    from_lines = app_database(tmp_path / "lines.db", ADA, BEN)
    run = await asyncio.to_thread(replay, capsys, from_lines, lines)
    assert run.exit_code == 0, run.stderr
    assert sync_rows(from_lines) == sync_rows(pushed)
    assert devices(from_lines) == devices(pushed)
    assert ledger_counts(from_lines, "replay") == ledger_counts(pushed, "push")
    assert progress(from_lines) == progress(pushed)
    assert query(from_lines, "SELECT COUNT(*) AS n FROM logbook_entries")[0][0] == query(
        pushed, "SELECT COUNT(*) AS n FROM logbook_entries")[0][0]

    # The files themselves: the same rows for everything a push can carry, and the rest besides.
    from_files = app_database(tmp_path / "files.db", ADA, BEN)
    run = await asyncio.to_thread(replay, capsys, from_files, "--user", ADA[0], *ALL_FIXTURES)
    assert run.exit_code == 0, run.stderr
    assert pushable(sync_rows(from_files)) == sync_rows(pushed)
    assert {r[1:3] for r in sync_rows(from_files) - sync_rows(pushed)} == {
        ("repertoire_item", "nocturne op. 9 no. 2-chopin"), ("user_preferences", ADA[0])}
    assert devices(from_files) - devices(pushed) == {("nocturne op. 9 no. 2-chopin", None), (ADA[0], None)}
    assert {k: v for k, v in progress(from_files).items() if k[1] in PUSH_GROUPS.values()} == progress(pushed)
    assert {r["file_name"] for r in query(from_files, "SELECT file_name FROM recovery_ledger")} == {
        f.name for f in ALL_FIXTURES}
