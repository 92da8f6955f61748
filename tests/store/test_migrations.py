"""A database made by the previous version keeps opening, and its rows keep their meaning."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from service.store.interface import WriteUnit
from service.store.rows import StoredResponse
from service.store.sqlite.engine import SqliteStorage
from service.usecases.redrive import redrive_user, users_to_redrive
from tests.conftest import ADA, BEN, add_users, query

PREVIOUS = Path(__file__).parent / "fixtures" / "previous_version.sql"
CARLA = ("user_CarlaCarlaCarlaCarla0", "carla@example.com", "user")


def previous_version_db(tmp_path: Path) -> str:
    path = str(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(PREVIOUS.read_text())
        conn.execute("UPDATE recovery_idempotency SET created_at = ?", (time.time() - 60,))  # a recent key
    return path


async def test_a_previous_version_database_opens_and_is_migrated(tmp_path: Path) -> None:
    """The quarantine gets `owner_known` (1 for Ada's row, whose owner is a user; 0 for the unknown
    subject's), the unscoped idempotency key is copied to the route it was used on (a push: its answer
    has `success`), and opening it again changes nothing more."""
    path = previous_version_db(tmp_path)
    for _ in range(2):
        db = await SqliteStorage.open(path)
        try:
            rows = query(path, "SELECT owner, email, owner_known FROM recovery_quarantine ORDER BY id")
            assert [tuple(r) for r in rows] == [(ADA[0], BEN[1], 1), ("user_UnknownSubjectUnknown", CARLA[1], 0)]
            keys = query(path, "SELECT user_id, route, key FROM recovery_idempotency_keys")
            assert [tuple(k) for k in keys] == [(ADA[0], "POST /api/sync/push", "legacy_key_1")]

            def lookup(route: str) -> Callable[[WriteUnit], StoredResponse | None]:
                def run(unit: WriteUnit) -> StoredResponse | None:
                    return unit.claim_idempotency(ADA[0], route, "legacy_key_1", "sha", time.time())

                return run

            # A claim answers with the stored response when there is one (rolled back: nothing claimed).
            found = await db.write(lookup("POST /api/sync/push"), commit=False)
            assert found is not None and b'"success":true' in found.response
            assert await db.write(lookup("POST /v1/recovery/uploads"), commit=False) is None
        finally:
            await db.close()


async def test_re_drive_on_a_previous_version_database_keeps_records_with_their_known_owner(tmp_path: Path) -> None:
    """Ada's quarantined row carries Ben's email: re-driving Ben takes nothing. The unknown subject's row
    goes to the user its email names once that user exists."""
    path = previous_version_db(tmp_path)
    db = await SqliteStorage.open(path)
    try:
        assert await users_to_redrive(db) == [ADA[0]]  # her own row (Ben's email in it changes nothing)
        add_users(path, CARLA)
        assert await users_to_redrive(db) == sorted([ADA[0], CARLA[0]])
        assert (await redrive_user(db, BEN[0])).redriven == 0
        carla = await redrive_user(db, CARLA[0])
        assert (carla.redriven, carla.resolved) == (1, 1)
    finally:
        await db.close()
    assert [r["entity_id"] for r in query(path, "SELECT entity_id FROM sync_data WHERE user_id = ?", (CARLA[0],))] \
        == ["e-3"]
    assert query(path, "SELECT COUNT(*) AS n FROM sync_data WHERE user_id = ?", (BEN[0],))[0]["n"] == 0
