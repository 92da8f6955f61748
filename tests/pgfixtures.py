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
from urllib.parse import urlsplit

import psycopg
import pytest

from service.store.postgres import setup
from tests import pgserver
from tests.pghelpers import _DATABASES, PgDatabase, remember, with_credentials

ENV_URL = "RESYNC_TEST_POSTGRES_URL"
ENV_REQUIRED = "RESYNC_TEST_POSTGRES_REQUIRED"
OWNER_ROLE = "resync_test_owner"
SERVICE_ROLE = "resync_test_service"


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


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: about the SQLite file itself (WAL, the guard, file faults): runs on SQLite only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes the `engine` fixture (through `db_path`, say) runs on both engines, unless
    it is marked `sqlite_only`."""
    if "engine" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("engine", ENGINES[:1] if sqlite_only else ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine this test runs on (parametrised by `pytest_generate_tests`)."""
    return str(getattr(request, "param", "sqlite"))


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
