"""Shared fixtures: an app on a fresh database, users, and tokens as the app issues them.

`db_path` is the test's database on the engine it is parametrised over (tests/pgfixtures.py): a SQLite
file's path, or a PostgreSQL database's URL; `add_users`, `query`, `settings` and `open_test_storage` take
either. A test about the SQLite file itself is marked `@pytest.mark.sqlite_only`."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.domain.outcomes import RecordResult
from service.domain.owners import UserRecord
from service.store import Storage, open_storage
from service.tokens import issue_token
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from tests.pghelpers import is_postgres, pg_add_users, pg_query

pytest_plugins = ["tests.pgfixtures"]  # PostgreSQL for the tests: the engine parameter, pg_cluster, pg_database

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "test-secret-that-is-long-enough-for-hs256"

ADA = ("user_Q1w2E3r4T5y6U7i8O9p0a", "ada.pianist@example.com", "user")
BEN = ("user_B2c3D4e5F6g7H8i9J0k1l", "Ben.Guitar@Example.com", "user")
ADMIN = ("user_Adm1nAdm1nAdm1nAdm1n", "support@example.com", "admin")


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def token_for(user: tuple[str, str, str], *, lifetime: timedelta = timedelta(days=30), secret: str = SECRET) -> str:
    return issue_token(secret, user[0], user[1], lifetime=lifetime)


def auth(user: tuple[str, str, str], **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}", **headers}


def add_users(db_path: str, *users: tuple[str, str, str]) -> None:
    if is_postgres(db_path):
        pg_add_users(db_path, users)
        return
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)",
            [(u[0], u[1], u[1].split("@")[0], u[2]) for u in users],
        )


def query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    if is_postgres(db_path):
        return pg_query(db_path, sql, params)  # type: ignore[return-value]
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()  # a test's UPDATE arranging the database stays
        return rows
    finally:
        conn.close()


# The engines the storage contract runs on (the `storage` fixture): RESYNC_TEST_ENGINES=sqlite,postgresql.
STORAGE_KINDS = tuple(kind for kind in os.environ.get("RESYNC_TEST_ENGINES", "sqlite,postgresql").split(",") if kind)


_TARGETS: dict[int, str] = {}  # id of an open test storage -> what `query` and `add_users` take for it


async def open_test_storage(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A fresh, empty app database on engine `kind`; `target(storage)` names it for `add_users` and `query`."""
    if kind == "sqlite":
        opened = await open_storage(tmp_path / "app.db")
        _TARGETS[id(opened)] = opened.location
    elif kind == "postgresql":
        database = request.getfixturevalue("pg_database")
        opened = await open_storage(url=database.url)
        _TARGETS[id(opened)] = database.url
    else:
        raise ValueError(f"no such storage engine: {kind}")
    return opened


async def push_entries(
    db: Storage, user: UserRecord, *entries: dict[str, Any], deleted: list[str] | None = None
) -> list[RecordResult]:
    """One push of logbook entries (and deleted ids) by `user` from one device, through `ingest`."""
    upload = Upload(owner=user.id, user=user, device_id="dev_aaaaaaaaaaaaaaaa", source="push",
                    records=[IncomingRecord("logbook_entry", msgspec.json.encode(e)) for e in entries],
                    deleted={"logbook_entry": deleted} if deleted else {})
    result = await ingest(db, upload)
    assert isinstance(result, UploadResult)
    return result.receipt.results


def target(storage: Storage) -> str:
    """The test's handle on `storage`'s database, for `add_users` and `query` (which read it directly)."""
    return _TARGETS[id(storage)]


@pytest.fixture(params=STORAGE_KINDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """The storage every contract test (store, use cases, pipeline) runs against, once per engine."""
    opened = await open_test_storage(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        _TARGETS.pop(id(opened), None)
        await opened.close()


@pytest.fixture
def db_path(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if engine == "postgresql":
        return str(request.getfixturevalue("pg_database").url)
    return str(tmp_path / "app.db")


@pytest.fixture
def settings(db_path: str, tmp_path: Path) -> Settings:
    if is_postgres(db_path):
        return Settings(db_path=str(tmp_path / "app.db"), database_url=db_path, jwt_secret=SECRET,
                        max_body_bytes=2 * 1024 * 1024)
    return Settings(db_path=db_path, jwt_secret=SECRET, max_body_bytes=2 * 1024 * 1024)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar, db_path: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client on a started app whose database holds Ada, Ben and an admin."""
    async with AsyncTestClient(app=app) as client:
        add_users(db_path, ADA, BEN, ADMIN)
        yield client


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"
