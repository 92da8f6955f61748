"""export-d1 from PostgreSQL (RESYNC_DATABASE_URL) writes, for the same rows, exactly the files it writes from
SQLite: one exporter, two sources. Whole export, `--since` and `--upload` selections alike."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.d1_export import cli as export_cli
from service.store.postgres.engine import PostgresStorage
from tests.conftest import ADA, BEN
from tests.d1_export.helpers import create_app_database, logbook_row
from tests.pghelpers import PgDatabase

SYNC_ROWS: list[tuple[Any, ...]] = [
    # id, user, type, entity id, data, checksum, version, updated_at, deleted_at, seq
    ("sync_a1", ADA[0], "logbook_entry", "e1", '{"id":"e1","notes":"it\'s \\"quoted\\" \u2013 ünïcode 🎹"}', "c1", 1,
     "2025-12-01 09:00:00", None, 7),
    ("sync_a2", ADA[0], "goal", "g1", '{"id":"g1","title":"Scales"}', "c2", 3, "2025-12-02 10:00:00", None, 9),
    ("sync_a3", ADA[0], "logbook_entry", "e2", '{"id":"e2"}', "c3", 2, "2025-12-03 11:00:00",
     "2025-12-03T11:00:00.000Z", 12),
    ("sync_b1", BEN[0], "repertoire_item", "nocturne-chopin", '{"scoreId":"nocturne-chopin"}', "c4", 1,
     "2025-12-04 12:00:00", None, 2**40),
]
SYNC_SQL = ("INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, updated_at,"
            " deleted_at, seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '2025-11-30 08:00:00')")
LOGBOOK_COLUMNS = ", ".join(logbook_row("x", "y"))


def _logbook_sql(mark: str) -> str:
    return f"INSERT INTO logbook_entries ({LOGBOOK_COLUMNS}) VALUES ({', '.join([mark] * len(logbook_row('x', 'y')))})"  # noqa: S608


LOGBOOK = [logbook_row("e1", ADA[0], notes="line\nbreak", mood="satisfied", metadata='{"k":1}'),
           logbook_row("e2", ADA[0], deleted_at="2025-12-03T11:00:00.000Z", sync_version=2)]
RAW_SQL = ("INSERT INTO recovery_raw_records (user_id, entity_type, entity_id, raw_sha256, raw, checksum, upload_id,"
           " received_at) VALUES (?, 'goal', 'g1', 'h', '{}', 'c2', 'upl_one', '2025-12-02 10:00:00')")
LEDGER_SQL = ("INSERT INTO recovery_ledger (upload_id, user_id, source, payload_sha256, received, counts, created_at)"
              " VALUES ('upl_one', ?, 'push', 'h', 1, '{}', '2025-12-02 10:00:00')")


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


async def _postgres_source(db: PgDatabase) -> None:
    await (await PostgresStorage.open(db.url)).close()  # the service's own tables, by its migrations
    with psycopg.connect(db.superuser_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO users (id, email, role) VALUES (%s, %s, %s)", [ADA, BEN])
        cur.executemany(_pg(SYNC_SQL), SYNC_ROWS)
        cur.executemany(_logbook_sql("%s"), [tuple(r.values()) for r in LOGBOOK])
        cur.execute("UPDATE sync_sequence SET current_value = 20")
        cur.execute(_pg(RAW_SQL), (ADA[0],))
        cur.execute(_pg(LEDGER_SQL), (ADA[0],))


def _sqlite_source(path: Path) -> None:
    from service.store.sqlite.schema import SERVICE_SCHEMA

    create_app_database(path, ADA, BEN, sequence=20)
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(SERVICE_SCHEMA)
        conn.executemany(SYNC_SQL, SYNC_ROWS)
        conn.executemany(_logbook_sql("?"), [tuple(r.values()) for r in LOGBOOK])
        conn.execute(RAW_SQL, (ADA[0],))
        conn.execute(LEDGER_SQL, (ADA[0],))
        conn.commit()


@contextmanager
def _env(url: str | None) -> Iterator[None]:
    before = os.environ.pop("RESYNC_DATABASE_URL", None)
    if url is not None:
        os.environ["RESYNC_DATABASE_URL"] = url
    try:
        yield
    finally:
        os.environ.pop("RESYNC_DATABASE_URL", None)
        if before is not None:
            os.environ["RESYNC_DATABASE_URL"] = before


def _export(out: Path, extra: list[str], *, db: Path | None = None, url: str | None = None) -> dict[str, str]:
    parser = export_cli.argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(out), *(["--db", str(db)] if db else []), *extra])
    with _env(url):
        assert export_cli.run(args) == 0
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("[0-9]*.sql"))}


@pytest.mark.parametrize("extra", [[], ["--since", "2025-12-02 00:00:00"], ["--upload", "upl_one"]],
                         ids=["everything", "since", "upload"])
async def test_the_export_from_postgresql_is_the_export_from_sqlite(
    pg_database: PgDatabase, tmp_path: Path, extra: list[str]
) -> None:
    await _postgres_source(pg_database)
    sqlite_path = tmp_path / "app.db"
    _sqlite_source(sqlite_path)
    from_sqlite = _export(tmp_path / "from-sqlite", extra, db=sqlite_path)
    from_postgres = _export(tmp_path / "from-postgres", extra, url=pg_database.url)
    assert from_sqlite  # something was exported
    assert from_postgres == from_sqlite


async def test_a_postgresql_database_without_the_app_tables_is_refused_in_one_line(
    pg_database: PgDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_database.owner_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE sync_sequence RENAME TO sync_sequence_gone")
    parser = export_cli.argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    with _env(pg_database.url):
        assert export_cli.run(parser.parse_args(["--out", str(tmp_path / "out")])) == export_cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "is not an app database: no table sync_sequence" in error and pg_database.url not in error
