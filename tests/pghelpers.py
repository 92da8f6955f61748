"""Engine-neutral test helpers for PostgreSQL (imported by tests/conftest.py; the fixtures are in pgfixtures.py):
a test database's URLs, and a test's SQL (SQLite's `?` placeholders) run on a PostgreSQL database."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg


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
