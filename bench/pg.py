"""PostgreSQL for the benchmark: a durable throwaway server (tests/pgserver.py with fsync on: the figures are
what a real server pays) or one the caller names (`--postgres-url`, a superuser's URL), app databases set up
as an operator does (`postgres-setup`: the app's tables owned by their owner role, the service connecting as
a role with SELECT/INSERT/UPDATE only), and the PostgreSQL ceilings: `COPY` of the final rows into the app
tables alone, a commit per push's worth, per replay batch, or one transaction."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.domain.records import LOGBOOK_ENTRY  # noqa: E402
from service.store.postgres import setup  # noqa: E402
from tests import pgserver  # noqa: E402

PostgresUnavailable = pgserver.PostgresUnavailable
SYNC_COLUMNS = ("id", "user_id", "entity_type", "entity_id", "data", "checksum", "version", "device_id", "seq")


def _url(base: str, user: str, password: str, database: str) -> str:
    parts = urlsplit(base)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


class PgBench:
    """One server for the run; `new_database` gives a fresh app database holding the users.

    Without `url` a durable server of our own is started (and stopped by `close`); with `url` (a superuser's)
    that server is used, and the roles and databases made on it are dropped by `close`. Role and database
    names carry a random suffix, so a run never meets a previous run's leftovers."""

    def __init__(self, url: str | None = None) -> None:
        self.server = pgserver.start(durable=True) if url is None else None
        self.admin_url = self.server.url if self.server is not None else url
        assert self.admin_url is not None
        suffix = secrets.token_hex(3)
        self.owner, self.service = f"bench_owner_{suffix}", f"bench_service_{suffix}"
        self.password = secrets.token_urlsafe(12)
        self.databases: list[str] = []
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
                conn.execute(f"CREATE ROLE {self.owner} LOGIN PASSWORD '{self.password}'")
                conn.execute(f"CREATE ROLE {self.service} LOGIN PASSWORD '{self.password}'")
        except psycopg.Error as error:
            self.close()
            raise PostgresUnavailable(f"{self._where()}: {error}".strip()) from error

    def _where(self) -> str:
        parts = urlsplit(self.admin_url or "")
        return f"postgresql://{parts.hostname}:{parts.port}"

    def describe(self) -> str:
        own = "a durable server of its own (fsync on, default settings)" if self.server else self._where()
        return f"PostgreSQL {self.version}, {own}"

    def new_database(self, name: str, users: Sequence[Any]) -> str:
        """The service role's URL of a new app database holding `users` (BenchUser), set up as
        `postgres-setup` says: the app's tables made by their owner, the service granted SELECT/INSERT/UPDATE."""
        name = f"{name}_{self.owner.rsplit('_', 1)[1]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f"CREATE DATABASE {name} OWNER {self.owner} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                         " TEMPLATE template0")
            self.databases.append(name)
            conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {self.service}")
        owner = _url(self.admin_url, self.owner, self.password, name)  # type: ignore[arg-type]
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(setup.app_schema_sql())
            conn.execute(setup.grants_sql(self.service))
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO users (id, email, display_name, role) VALUES (%s, %s, %s, %s)",
                                   [(u.id, u.email, f"Bench {u.index}", u.role) for u in users])
        return _url(self.admin_url, self.service, self.password, name)  # type: ignore[arg-type]

    def drop(self, url: str) -> None:
        """Drop the database `url` names (the benchmark's own, made by `new_database`)."""
        name = urlsplit(url).path.lstrip("/")
        if name not in self.databases:
            raise ValueError(f"{name} is not a database this benchmark made")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.databases.remove(name)

    def close(self) -> None:
        if self.server is not None:
            pgserver.stop(self.server.folder, self.server.bin_dir)
            return
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:  # type: ignore[arg-type]
                for name in list(self.databases):
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"DROP ROLE IF EXISTS {self.service}")
                conn.execute(f"DROP ROLE IF EXISTS {self.owner}")
        except psycopg.Error:
            pass  # the server went away: nothing of ours is left to tidy on it


def _copy_chunk(conn: psycopg.Connection[Any], sync: Sequence[Sequence[Any]], logbook: Sequence[Sequence[Any]],
                logbook_columns: Sequence[str]) -> None:
    """sync_data rows, then their logbook_entries rows, by COPY in one transaction (a durable COMMIT)."""
    with conn.cursor() as cursor:
        with cursor.copy(f"COPY sync_data ({', '.join(SYNC_COLUMNS)}) FROM STDIN") as copy:
            for row in sync:
                copy.write_row(row)
        if logbook:
            with cursor.copy(f"COPY logbook_entries ({', '.join(logbook_columns)}) FROM STDIN") as copy:
                for row in logbook:
                    copy.write_row(row)
    conn.commit()


def copy_batched(url: str, sync: list[tuple[Any, ...]], logbook: list[tuple[Any, ...]], logbook_columns: Sequence[str],
                 batch: int) -> float:
    """Rows/s of `COPY` of the final app rows (sync_data, then their logbook_entries rows) as the service's
    role, a transaction (and a durable COMMIT) per `batch` records. The final rows: a record sent again
    (the data set's verbatim duplicates) is written once, as the SQLite baseline's ON CONFLICT DO NOTHING;
    the rate is per record sent, as the SQLite baseline's."""
    sent = len(sync)
    final: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in sync:
        final.setdefault(row[1:4], row)
    sync = list(final.values())
    logbook_by_id = {row[0]: row for row in logbook}
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for start in range(0, len(sync), batch):
            chunk = sync[start : start + batch]
            _copy_chunk(conn, chunk, [logbook_by_id[r[3]] for r in chunk if r[3] in logbook_by_id], logbook_columns)
        spent = time.perf_counter() - started
    return sent / spent if spent > 0 else 0.0


def copy_database(source_url: str, target_url: str, logbook_columns: Sequence[str], batch: int) -> tuple[float, int]:
    """Rows/s of writing a service database's final app rows again into an empty app database, in arrival
    order (seq), a transaction per `batch` records, by COPY; only the writes are timed. And the row count."""
    spent = 0.0
    done = 0
    logbook_sql = (f"SELECT {', '.join(logbook_columns)} FROM logbook_entries"  # noqa: S608 - constant columns
                   " WHERE id = ANY(%s)")
    with psycopg.connect(source_url) as source, psycopg.connect(target_url) as target:
        reader = source.cursor(name="bench_rows")  # server-side: a million rows are not held in memory
        reader.execute(f"SELECT {', '.join(SYNC_COLUMNS)} FROM sync_data ORDER BY seq")  # noqa: S608
        lookup = source.cursor()
        while chunk := reader.fetchmany(batch):
            ids = [r[3] for r in chunk if r[2] == LOGBOOK_ENTRY]
            logbook = lookup.execute(logbook_sql, (ids,)).fetchall()
            started = time.perf_counter()
            _copy_chunk(target, chunk, logbook, logbook_columns)
            spent += time.perf_counter() - started
            done += len(chunk)
        reader.close()
    return (done / spent if spent > 0 else 0.0), done


def querier(url: str) -> tuple[Callable[..., list[tuple[Any, ...]]], Callable[[], None]]:
    """`query(sql, *params)` with `?` placeholders (the checks' SQL, shared with SQLite) on `url`, and close."""
    conn = psycopg.connect(url, autocommit=True)

    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()

    return query, conn.close
