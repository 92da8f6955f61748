"""On PostgreSQL "the service never drops, deletes, truncates or alters an app table" holds by privilege:
the service's role (as `python -m service postgres-setup` grants it) is refused each of these by the server
itself, on every app table, while it can read, add and change rows and create its own tables."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import errors

from service.store.interface import SchemaTooNew
from service.store.postgres import migrate, setup
from tests import pgserver
from tests.pgfixtures import Cluster
from tests.pghelpers import PgDatabase, with_credentials

FORBIDDEN = {
    "drop": "DROP TABLE {t}",
    "drop_cascade": "DROP TABLE {t} CASCADE",
    "delete": "DELETE FROM {t}",
    "truncate": "TRUNCATE {t}",
    "truncate_cascade": "TRUNCATE {t} CASCADE",
    "alter_add_column": "ALTER TABLE {t} ADD COLUMN recovery_extra TEXT",
    "alter_drop_column": "ALTER TABLE {t} DROP COLUMN id",
    "alter_rename": "ALTER TABLE {t} RENAME TO {t}_old",
    "alter_owner": "ALTER TABLE {t} OWNER TO CURRENT_USER",
    "create_index": "CREATE INDEX recovery_sneaky ON {t} (id)",
    "create_trigger": "CREATE TRIGGER recovery_sneaky BEFORE UPDATE ON {t} FOR EACH ROW"
                      " EXECUTE FUNCTION sync_data_touch_updated_at()",
    "create_rule": "CREATE RULE recovery_sneaky AS ON UPDATE TO {t} DO INSTEAD NOTHING",
    "disable_trigger": "ALTER TABLE {t} DISABLE TRIGGER ALL",
}
ROOT = Path(__file__).resolve().parents[3]
ID_COLUMN = {"sync_metadata": "user_id"}


@pytest.mark.parametrize("table", setup.APP_TABLES)
@pytest.mark.parametrize("statement", sorted(FORBIDDEN))
def test_the_service_role_is_refused_every_destructive_statement(
    pg_database: PgDatabase, table: str, statement: str
) -> None:
    sql = FORBIDDEN[statement].format(t=table).replace("(id)", f"({ID_COLUMN.get(table, 'id')})")
    with psycopg.connect(pg_database.url) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(sql)
    # And nothing changed: the owner still finds the table whole.
    with psycopg.connect(pg_database.owner_url) as conn:
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() == (True,)


@pytest.mark.parametrize("table", setup.APP_TABLES)
def test_the_service_role_cannot_grant_itself_more(pg_database: PgDatabase, table: str) -> None:
    """A GRANT by a role without the grant option grants nothing (PostgreSQL only warns)."""
    with psycopg.connect(pg_database.url) as conn:
        conn.execute(f"GRANT DELETE, TRUNCATE ON {table} TO CURRENT_USER")
        held = conn.execute(
            "SELECT has_table_privilege(%s, 'DELETE') OR has_table_privilege(%s, 'TRUNCATE')", (table, table)
        ).fetchone()
    assert held == (False,)


def test_the_service_role_reads_adds_and_changes_rows(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.url) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES ('user_x', 'x@example.com')")
        conn.execute("UPDATE users SET display_name = 'X' WHERE id = 'user_x'")
        conn.execute("UPDATE sync_sequence SET current_value = current_value + 1 WHERE id = 1")
        row = conn.execute("SELECT display_name, created_at FROM users WHERE id = 'user_x'").fetchone()
    assert row is not None and row[0] == "X"
    assert len(row[1]) == len("2025-01-01 00:00:00")  # the app's TIMESTAMP text form


def test_only_the_service_role_passes_the_start_up_check(pg_database: PgDatabase) -> None:
    """The service refuses to run as a role that could drop or empty an app table: the owner, a
    superuser, or a role granted DELETE or TRUNCATE on one."""
    with psycopg.connect(pg_database.url) as conn:
        assert setup.role_problems(conn) == []
    with psycopg.connect(pg_database.owner_url) as conn:
        assert any("owns" in p for p in setup.role_problems(conn))
    with psycopg.connect(pg_database.superuser_url) as conn:
        assert any("superuser" in p for p in setup.role_problems(conn))
    with psycopg.connect(pg_database.owner_url, autocommit=True) as conn:
        conn.execute("GRANT DELETE ON sync_data TO resync_test_service")
    with psycopg.connect(pg_database.url) as conn:
        assert setup.role_problems(conn) == ["the role holds DELETE on sync_data"]


def test_the_service_creates_its_own_tables_by_numbered_migrations(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.url, autocommit=True) as conn:
        applied = migrate.migrate(conn)
        assert applied == [m.version for m in migrate.migrations()]
        assert migrate.migrate(conn) == []  # applied once
        owners = dict(conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall())
    assert owners[migrate.VERSION_TABLE] == "resync_test_service"
    assert {t for t, o in owners.items() if o == "resync_test_owner"} == set(setup.APP_TABLES)
    assert all(t.startswith("recovery_") for t, o in owners.items() if o == "resync_test_service")


def test_a_database_migrated_by_a_newer_release_is_refused_in_one_line(pg_database: PgDatabase) -> None:
    """A release would misread what a newer one wrote (#17's rows without merge state or device rows):
    it refuses the database instead, and applies nothing."""
    with psycopg.connect(pg_database.url, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute("INSERT INTO recovery_schema_version VALUES (999, 'from_the_future', '2030-01-01 00:00:00')")
        with pytest.raises(SchemaTooNew, match="migration 999, newer than this release knows"):
            migrate.migrate(conn)


def test_a_migration_that_names_an_app_table_is_refused_before_it_runs() -> None:
    for sql in ("ALTER TABLE users ADD COLUMN x TEXT", "DROP TABLE sync_data", "delete from logbook_entries",
                "CREATE INDEX i ON sync_data (seq)", "TRUNCATE TABLE sync_metadata"):
        assert migrate._touches_app_table(sql) is not None, sql
    assert migrate._touches_app_table("CREATE TABLE recovery_users_x (user_id TEXT)") is None


def test_the_operators_setup_script_gives_a_database_the_service_can_use_and_only_so(pg_cluster: Cluster) -> None:
    """`python -m service postgres-setup`, run by psql as a superuser, makes both roles, the database and
    the app's tables; the service's role then passes the start-up check and can migrate, and no more."""
    suffix = secrets.token_hex(4)
    database, owner, service = f"setup_{suffix}", f"owner_{suffix}", f"service_{suffix}"
    script = setup.setup_sql(database=database, owner_role=owner, service_role=service, service_password="pw")
    psql = shutil.which("psql") or str(pgserver.find_bin_dir() or "") + "/psql"
    try:
        subprocess.run([psql, "-q", "-v", "ON_ERROR_STOP=1", pg_cluster.superuser_url], input=script, text=True,
                       check=True, capture_output=True)
        url = with_credentials(pg_cluster.superuser_url, user=service, password="pw", database=database)
        with psycopg.connect(url, autocommit=True) as conn:
            assert setup.role_problems(conn) == []
            assert migrate.migrate(conn)
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("TRUNCATE sync_data")
            collation = conn.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
            assert collation.fetchone() == ("C",)
    finally:
        with psycopg.connect(pg_cluster.superuser_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {service}")
            conn.execute(f"DROP ROLE IF EXISTS {owner}")


def test_the_setup_script_takes_plain_names_only() -> None:
    with pytest.raises(ValueError, match="plain lower-case"):
        setup.grants_sql("resync; DROP TABLE users")


def test_the_compose_files_init_sql_is_what_postgres_setup_prints() -> None:
    committed = (ROOT / "deploy/postgres/init.sql").read_text(encoding="utf-8")
    assert committed == setup.setup_sql(database="mirubato", owner_role="mirubato_app", service_role="resync"), (
        "regenerate it: python -m service postgres-setup > deploy/postgres/init.sql"
    )


async def test_the_compose_init_script_sets_up_a_database_the_service_opens(pg_cluster: Cluster) -> None:
    """deploy/postgres/init.sh as the postgres image runs it (psql as the superuser, PG* variables)."""
    from service.store.postgres.engine import PostgresStorage

    su = urlsplit(pg_cluster.superuser_url)
    env = {**os.environ, "PGHOST": su.hostname or "", "PGPORT": str(su.port), "PGPASSWORD": su.password or "",
           "POSTGRES_USER": su.username or "", "RESYNC_PG_PASSWORD": "compose-pw",
           "RESYNC_INIT_SQL": str(ROOT / "deploy/postgres/init.sql")}
    psql_dir = str(Path(shutil.which("psql") or "/usr/bin/psql").parent)
    env["PATH"] = f"{psql_dir}:{env.get('PATH', '')}"
    try:
        await asyncio.to_thread(subprocess.run, ["sh", str(ROOT / "deploy/postgres/init.sh")], env=env, check=True,
                                capture_output=True)
        url = with_credentials(pg_cluster.superuser_url, user="resync", password="compose-pw", database="mirubato")
        storage = await PostgresStorage.open(url)
        await storage.close()
    finally:
        with psycopg.connect(pg_cluster.superuser_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS mirubato WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS resync")
            conn.execute("DROP ROLE IF EXISTS mirubato_app")
