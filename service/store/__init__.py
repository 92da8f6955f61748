"""Storage: the interface the use cases speak (`interface`, `rows`) and its engines (`sqlite`, ...).

`open_storage` is the one place an engine is chosen: a `postgresql://` URL (`RESYNC_DATABASE_URL` or
`--database-url`) names a PostgreSQL server, anything else is the path of an SQLite file (`--db`).
"""

from __future__ import annotations

import argparse
import os

from service.store.interface import Storage

DATABASE_URL_ENV = "RESYNC_DATABASE_URL"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class UnsupportedDatabaseUrl(ValueError):
    """A database URL this build cannot open (the message is one line saying why)."""


def is_postgres_url(url: str | None) -> bool:
    return url is not None and url.startswith(_POSTGRES_SCHEMES)


def database_url_from_env() -> str | None:
    return os.environ.get(DATABASE_URL_ENV) or None


def add_database_url_argument(parser: argparse.ArgumentParser) -> None:
    """`--database-url`: `python -m service` puts it in RESYNC_DATABASE_URL for every command and worker."""
    parser.add_argument("--database-url", metavar="URL",
                        help=f"a postgresql:// server instead of the SQLite file (env {DATABASE_URL_ENV})")


async def open_storage(db_path: str | os.PathLike[str] | None = None, *, url: str | None = None,
                       readers: int = 4) -> Storage:
    """The engine `url` names (a `postgresql://` server, or `sqlite:///path`), else the SQLite file at
    `db_path`."""
    if url is not None and is_postgres_url(url):
        from service.store.postgres import PostgresStorage

        return await PostgresStorage.open(url)
    if url is not None:
        if not url.startswith("sqlite:///"):
            raise UnsupportedDatabaseUrl(f"{url}: a database URL is postgresql://... or sqlite:///PATH")
        db_path = url.removeprefix("sqlite:///") or None
    if db_path is None:
        raise UnsupportedDatabaseUrl("no database: give --db PATH or --database-url URL")
    from service.store.sqlite import SqliteStorage

    return await SqliteStorage.open(db_path, readers=readers)


__all__ = ["DATABASE_URL_ENV", "Storage", "UnsupportedDatabaseUrl", "open_storage"]
