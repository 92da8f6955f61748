"""PostgreSQL for the tests (a pytest plugin, loaded by tests/conftest.py).

The server: RESYNC_TEST_POSTGRES_URL (a superuser's URL; `scripts/test` starts one and sets it), else one
this session starts itself (tests/pgserver.py). Where neither can be had the PostgreSQL tests skip and say
why, except under RESYNC_TEST_POSTGRES_REQUIRED=1 (`scripts/test`, so CI), where they fail instead.

Each test gets a database of its own, copied from a template that holds the app's tables created by their
owner role (as in a real deployment, never by the service) and the service role's grants; the service
connects as that role and adds its own tables by its migrations.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from service.store.postgres import setup
from tests import pgserver

ENV_URL = "RESYNC_TEST_POSTGRES_URL"
ENV_REQUIRED = "RESYNC_TEST_POSTGRES_REQUIRED"
OWNER_ROLE = "resync_test_owner"
SERVICE_ROLE = "resync_test_service"


def with_credentials(url: str, *, user: str, password: str, database: str) -> str:
    """`url` with another user, password and database (host and port kept)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


@dataclass(frozen=True)
class PgDatabase:
    """One test's database: the service connects with `url`; the app's owner with `owner_url`."""

    name: str
    url: str
    owner_url: str
    superuser_url: str


class Cluster:
    """A PostgreSQL server with the test roles, and a template database to copy for each test."""

    def __init__(self, superuser_url: str) -> None:
        self.superuser_url = superuser_url
        self.owner_password = secrets.token_urlsafe(12)
        self.service_password = secrets.token_urlsafe(12)
        self.template = f"resync_template_{secrets.token_hex(4)}"
        with psycopg.connect(superuser_url, autocommit=True) as conn:
            for role, password in ((OWNER_ROLE, self.owner_password), (SERVICE_ROLE, self.service_password)):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                # A literal, not a parameter: utility statements take none (the password is ours, URL-safe).
                conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
            conn.execute(
                f"CREATE DATABASE {self.template} OWNER {OWNER_ROLE} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            )
        with psycopg.connect(self._url(self.template, owner=True), autocommit=True) as conn:
            conn.execute(setup.app_schema_sql())
            conn.execute(setup.grants_sql(SERVICE_ROLE))

    def _url(self, database: str, *, owner: bool = False) -> str:
        if owner:
            return with_credentials(self.superuser_url, user=OWNER_ROLE, password=self.owner_password,
                                    database=database)
        return with_credentials(self.superuser_url, user=SERVICE_ROLE, password=self.service_password,
                                database=database)

    def new_database(self) -> PgDatabase:
        name = f"resync_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template} OWNER {OWNER_ROLE}")
        return PgDatabase(name, self._url(name), self._url(name, owner=True),
                          with_credentials(self.superuser_url, user=urlsplit(self.superuser_url).username or "",
                                           password=urlsplit(self.superuser_url).password or "", database=name))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        self.drop_database(self.template)


def _unavailable(reason: str) -> None:
    if os.environ.get(ENV_REQUIRED) == "1":
        pytest.fail(f"PostgreSQL is required ({ENV_REQUIRED}=1) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL for the tests: {reason}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server (see the module's docstring)."""
    url = os.environ.get(ENV_URL)
    server: pgserver.Server | None = None
    if not url:
        try:
            server = pgserver.start()
        except pgserver.PostgresUnavailable as error:
            _unavailable(f"{ENV_URL} is not set and none could be started here: {error}")
        assert server is not None
        url = server.url
    try:
        cluster = Cluster(url)
    except psycopg.Error as error:
        if server is not None:
            pgserver.stop(server.folder, server.bin_dir)
        _unavailable(f"the server at {ENV_URL} cannot be used: {error}")
        raise
    try:
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            if server is not None:
                pgserver.stop(server.folder, server.bin_dir)


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[PgDatabase]:
    """A database of this test's own, with the app's tables (owned by the owner role) and the grants."""
    database = remember(pg_cluster.new_database())
    try:
        yield database
    finally:
        _DATABASES.pop(database.url, None)
        pg_cluster.drop_database(database.name)


# ---- engine-neutral helpers: a test's SQL (SQLite's `?` placeholders) run on a PostgreSQL database -----

_DATABASES: dict[str, PgDatabase] = {}  # the service URL a test got -> its database (for the superuser URL)


def remember(database: PgDatabase) -> PgDatabase:
    _DATABASES[database.url] = database
    return database


def is_postgres(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class Row(dict[str, object]):
    """A result row readable by name and by position, as a `sqlite3.Row` is."""

    def __init__(self, names: list[str], values: tuple[object, ...]) -> None:
        super().__init__(zip(names, values, strict=True))
        self._values = values

    def __getitem__(self, key: object) -> object:
        if isinstance(key, int):
            return self._values[key]
        return super().__getitem__(key)  # type: ignore[index]

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return self._values == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


def pg_sql(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def pg_query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
    """`sql` on the test's database as its superuser (tests read and arrange every table); committed."""
    database = _DATABASES.get(url)
    target = database.superuser_url if database is not None else url
    with psycopg.connect(target, autocommit=True) as conn:
        cursor = conn.execute(pg_sql(sql), params)  # type: ignore[arg-type]
        if cursor.description is None:
            return []
        names = [c.name for c in cursor.description]
        return [Row(names, tuple(r)) for r in cursor.fetchall()]


def pg_add_users(url: str, users: tuple[tuple[str, str, str], ...]) -> None:
    database = _DATABASES.get(url)
    target = database.owner_url if database is not None else url
    with psycopg.connect(target, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO users (id, email, display_name, role) VALUES (%s, %s, %s, %s)",
            [(u[0], u[1], u[1].split("@")[0], u[2]) for u in users],
        )
