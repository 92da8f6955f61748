"""Durability: the commit that acknowledges an upload runs in WAL mode with `synchronous=FULL`."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.store.sqlite.engine import SqliteStorage
from tests.conftest import ADA, SECRET, add_users, auth, load_fixture, query

SYNCHRONOUS_FULL = 2


def push_body() -> dict[str, Any]:
    export = load_fixture("exports/mirubato-data-export-2025-09-01.json")
    return {"changes": {"entries": export["logbook"]}}


async def test_the_commit_of_an_acknowledged_upload_runs_with_synchronous_full_in_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit is observed on the writer connection itself: one commit per push, each with
    `synchronous=FULL` and `journal_mode=wal` in force at that moment; the rows are readable by another
    connection as soon as the answer arrives."""
    db_path = str(tmp_path / "app.db")
    app = create_app(Settings(db_path=db_path, jwt_secret=SECRET))
    async with AsyncTestClient(app=app) as client:
        add_users(db_path, ADA)
        db: SqliteStorage = app.state.db
        writer = db.writer
        commits: list[tuple[int, str]] = []
        commit = writer.commit

        async def observed_commit() -> None:
            synchronous = await writer.fetchone("PRAGMA synchronous")
            journal = await writer.fetchone("PRAGMA journal_mode")
            assert synchronous is not None and journal is not None
            commits.append((synchronous[0], journal[0]))
            await commit()

        monkeypatch.setattr(writer, "commit", observed_commit)
        response = await client.post("/api/sync/push", json=push_body(), headers=auth(ADA))
        assert response.status_code == 200, response.text
        assert commits == [(SYNCHRONOUS_FULL, "wal")]
        stored = query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"]
        assert stored == len(push_body()["changes"]["entries"])

        synchronous = await writer.fetchone("PRAGMA synchronous")
        assert synchronous is not None and synchronous[0] == SYNCHRONOUS_FULL


async def test_reopening_an_existing_database_keeps_wal_and_synchronous_full(tmp_path: Path) -> None:
    """A restart on an existing file (the crash-recovery case) sets the same pragmas again, and the file
    itself stays in WAL mode for any other connection."""
    db_path = str(tmp_path / "app.db")
    for _ in range(2):
        app = create_app(Settings(db_path=db_path, jwt_secret=SECRET))
        async with AsyncTestClient(app=app):
            writer = app.state.db.writer
            synchronous = await writer.fetchone("PRAGMA synchronous")
            journal = await writer.fetchone("PRAGMA journal_mode")
            assert synchronous is not None and synchronous[0] == SYNCHRONOUS_FULL
            assert journal is not None and journal[0] == "wal"
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
