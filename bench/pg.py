"""PostgreSQL for the benchmark: a durable throwaway server (tests/pgserver.py with fsync on: the figures are
what a real server pays), app databases set up as an operator does (`postgres-setup`: the app's tables owned
by their owner role, the service connecting as a role with SELECT/INSERT/UPDATE only), and the PostgreSQL
ceiling: `COPY` of the final rows, a commit per push's worth."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.store.postgres import setup  # noqa: E402
from tests import pgserver  # noqa: E402

OWNER, SERVICE = "bench_owner", "bench_service"
SYNC_COLUMNS = ("id", "user_id", "entity_type", "entity_id", "data", "checksum", "version", "device_id", "seq")


def _url(base: str, user: str, password: str, database: str) -> str:
    parts = urlsplit(base)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, "/" + database, "", ""))


class PgBench:
    """One server for the run; `new_database` gives a fresh app database holding the users."""

    def __init__(self) -> None:
        self.server = pgserver.start(durable=True)
        self.password = secrets.token_urlsafe(12)
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {OWNER} LOGIN PASSWORD '{self.password}'")
            conn.execute(f"CREATE ROLE {SERVICE} LOGIN PASSWORD '{self.password}'")

    def new_database(self, name: str, users: Sequence[Any]) -> str:
        """The service role's URL of a new app database holding `users` (BenchUser)."""
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {OWNER} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                         " TEMPLATE template0")
        owner = _url(self.server.url, OWNER, self.password, name)
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(setup.app_schema_sql())
            conn.execute(setup.grants_sql(SERVICE))
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO users (id, email, display_name, role) VALUES (%s, %s, %s, %s)",
                                   [(u.id, u.email, f"Bench {u.index}", u.role) for u in users])
        return _url(self.server.url, SERVICE, self.password, name)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        pgserver.stop(self.server.folder, self.server.bin_dir)


def copy_batched(url: str, sync: list[tuple[Any, ...]], logbook: list[tuple[Any, ...]], logbook_columns: Sequence[str],
                 batch: int) -> float:
    """Rows/s of `COPY` of the final app rows (sync_data, then their logbook_entries rows) as the service's
    role, a transaction (and a durable COMMIT) per `batch` records. The final rows: a record sent again
    (the data set's verbatim duplicates) is written once, as the SQLite baseline's ON CONFLICT DO NOTHING."""
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
            with conn.cursor() as cursor:
                with cursor.copy(f"COPY sync_data ({', '.join(SYNC_COLUMNS)}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row(row)
                with cursor.copy(f"COPY logbook_entries ({', '.join(logbook_columns)}) FROM STDIN") as copy:
                    for row in chunk:
                        if row[3] in logbook_by_id:
                            copy.write_row(logbook_by_id[row[3]])
            conn.commit()
        spent = time.perf_counter() - started
    return sent / spent if spent > 0 else 0.0
