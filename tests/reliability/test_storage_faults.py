"""Storage faults are 503 with Retry-After, never a 500 (issue 13.9): a lock held past the busy timeout, a
full disk, a read-only database, an I/O error. /health says which, and recovers with the storage. A
database the service cannot write at all is refused at start, in one line."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.store.sqlite import connection
from service.store.sqlite.connection import GuardedConnection
from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.units import SqliteWriteUnit
from tests.conftest import ADA, ADMIN, SECRET, add_users, auth, query
from tests.reliability.liveserver import ROOT
from tests.reliability.test_abuse import assert_problem, entry

Client = AsyncTestClient[Litestar]


# The SQLite file's own faults (a held write lock, a full disk, a read-only file); PostgreSQL's are in
# tests/store/postgres/test_engine.py.
pytestmark = pytest.mark.sqlite_only

@pytest.fixture
async def client(db_path: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """The app with a 200 ms busy timeout, so a held lock is a fault in a test's time."""
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 200)
    app = create_app(Settings(db_path=db_path, jwt_secret=SECRET))
    async with AsyncTestClient(app=app) as client:
        add_users(db_path, ADA, ADMIN)
        yield client


def writer(client: Client) -> GuardedConnection:
    db: SqliteStorage = client.app.state.db
    return db.writer


async def push(client: Client, entity_id: str, notes: str = "n") -> Any:
    return await client.post("/api/sync/push", json={"changes": {"entries": [entry(entity_id, notes=notes)]}},
                             headers=auth(ADA))


async def assert_unavailable(client: Client, fault: str) -> None:
    """Every write route answers 503 problem+json naming the fault, with Retry-After; so does /health."""
    for response in (
        await push(client, "during-fault"),
        await client.post("/v1/recovery/uploads", json={"records": [{"entity_type": "goal", "data": {"id": "g"}}]},
                          headers=auth(ADA)),
        await client.post(f"/v1/support/users/{ADA[0]}/review", headers=auth(ADMIN)),
    ):
        body = assert_problem(response, 503, "database")
        assert body["errors"][0]["reason"] == fault
        assert int(response.headers["retry-after"]) > 0
    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["database"] == fault, health.text
    assert int(health.headers["retry-after"]) > 0


async def assert_recovered(client: Client) -> None:
    assert (await push(client, "after-fault")).status_code == 200
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["database"] == "ok"


async def test_a_lock_held_past_the_busy_timeout_is_503_and_clears_with_the_lock(client: Client, db_path: str) -> None:
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        await assert_unavailable(client, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await assert_recovered(client)


async def test_a_full_disk_is_503_and_nothing_half_written(client: Client, db_path: str) -> None:
    """SQLITE_FULL, made by capping the writer's database size at what it holds now."""
    pages = query(db_path, "PRAGMA page_count")[0][0]
    await writer(client).execute(f"PRAGMA max_page_count = {pages}")
    before = query(db_path, "SELECT COUNT(*) FROM sync_data")[0][0]
    response = await client.post("/api/sync/push", json={"changes": {"entries": [
        entry(f"big-{i}", notes="x" * 20_000) for i in range(50)]}}, headers=auth(ADA))
    assert_problem(response, 503, "database")
    assert response.json()["errors"][0]["reason"] == "disk_full"
    assert query(db_path, "SELECT COUNT(*) FROM sync_data")[0][0] == before
    assert (await client.get("/health")).json()["database"] == "disk_full"
    await writer(client).execute("PRAGMA max_page_count = 1073741823")
    await assert_recovered(client)


async def test_a_read_only_database_is_503(client: Client) -> None:
    await writer(client).execute("PRAGMA query_only = ON")  # SQLITE_READONLY on every write
    await assert_unavailable(client, "read_only")
    await writer(client).execute("PRAGMA query_only = OFF")
    await assert_recovered(client)


async def test_an_io_error_is_503(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    real = SqliteWriteUnit.record_upload

    def failing(*args: Any, **kwargs: Any) -> None:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 10  # SQLITE_IOERR, as the storage reports it
        raise error

    monkeypatch.setattr(SqliteWriteUnit, "record_upload", failing)
    response = await push(client, "io")
    assert_problem(response, 503, "database")
    assert response.json()["errors"][0]["reason"] == "io_error"
    assert (await client.get("/health")).json()["database"] == "io_error"
    monkeypatch.setattr(SqliteWriteUnit, "record_upload", real)
    await assert_recovered(client)


def _as_unprivileged() -> list[str]:
    """Run a command as a user the file permissions apply to (root ignores them)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.mark.parametrize("what", ["read-only file and folder", "read-only folder"])
def test_starting_on_a_database_the_service_cannot_write_is_refused_in_one_line(what: str) -> None:
    """Even with -wal and -shm left behind by the last run: exit 2 and one line saying why, no traceback."""
    if os.geteuid() == 0 and subprocess.run(["setpriv", "--version"], capture_output=True).returncode != 0:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    # A clone in a private folder (mktemp -d is 0700) cannot be read by the unprivileged user at all.
    probe = subprocess.run([*_as_unprivileged(), sys.executable, "-c", "import service"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot read this checkout or its venv: permissions cannot be tested")
    folder = Path(tempfile.mkdtemp(prefix="resync-ro-"))
    path = folder / "app.db"
    try:
        conn = sqlite3.connect(path)  # a database with its -wal and -shm, as a killed server leaves them
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert (folder / "app.db-wal").exists()
        for leftover in (path, folder / "app.db-wal", folder / "app.db-shm"):
            if what.startswith("read-only file") or leftover != path:
                os.chmod(leftover, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            else:
                os.chmod(leftover, 0o666)
        os.chmod(folder, 0o555)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESYNC_")}
        result = subprocess.run(
            [*_as_unprivileged(), sys.executable, "-m", "service", "serve", "--db", str(path), "--port", "1"],
            cwd=ROOT, env={**env, "RESYNC_JWT_SECRET": SECRET}, capture_output=True, text=True, timeout=60,
        )
        conn.close()
    finally:
        os.chmod(folder, 0o755)
        for leftover in folder.iterdir():
            os.chmod(leftover, 0o644)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], result.stderr
    assert any(word in lines[0] for word in ("read-only", "cannot be written", "not writable")), lines
