"""Is `--db` a file the service can use? Checked by every command before it opens the database, so a
wrong path gets one line saying what is wrong instead of a traceback from deep inside SQLite, and a
SQLite file of something else never silently gets the app's tables added to it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from service.store.sqlite.migrations import REQUIRED_APP_TABLES

_SQLITE_HEADER = b"SQLite format 3\x00"
INIT_FLAG = "--init-app-schema"


class DatabaseFileError(Exception):
    """The database file cannot be used; the message is one line for the operator."""


def check_database_file(path: str, *, must_exist: bool = False, init_app_schema: bool = False,
                        writable: bool = True) -> None:
    """Raise DatabaseFileError when `path` is not an app database (nor a place to create one).

    A missing or empty file is where a new app database is created (unless `must_exist`); an existing
    SQLite file without the app's `users` table is refused unless `init_app_schema`. Nothing to check
    when a database URL (RESYNC_DATABASE_URL, `--database-url`) names a server instead of the file."""
    if os.environ.get("RESYNC_DATABASE_URL"):
        return
    file = Path(path)
    if file.is_dir():
        raise DatabaseFileError(f"{path} is a directory, not a database file")
    if not file.exists():
        if must_exist:
            raise DatabaseFileError(f"no app database at {path}")
        _check_creatable(file)
        return
    if not file.is_file():
        raise DatabaseFileError(f"{path} is not a regular file")
    if not os.access(file, os.R_OK) or (writable and not os.access(file, os.W_OK)):
        raise DatabaseFileError(f"{path} cannot be {'written' if writable else 'read'} (permissions, or a "
                                "read-only file system)")
    if writable and not os.access(file.parent, os.W_OK):
        raise DatabaseFileError(f"{file.parent} is not writable: SQLite keeps its -wal and -shm files next to "
                                "the database")
    try:
        with file.open("rb") as stream:
            header = stream.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise DatabaseFileError(f"cannot read {path}: {error.strerror or error}") from error
    if not header:
        if must_exist:
            raise DatabaseFileError(f"{path} is empty, not an app database")
        return  # an empty file: created as a new app database
    if header != _SQLITE_HEADER:
        raise DatabaseFileError(f"{path} is not a SQLite database")
    tables = _tables(path)
    if "users" not in tables:
        if tables and not init_app_schema:
            listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise DatabaseFileError(f"{path} is a SQLite database but not the app's (no users table; it holds "
                                    f"{listed}); give {INIT_FLAG} to add the app's tables to it")
        return
    missing = [t for t in REQUIRED_APP_TABLES if t not in tables]
    if missing:
        raise DatabaseFileError(f"{path} has a users table but no {', '.join(missing)}: not an app database")


def _tables(path: str) -> set[str]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise DatabaseFileError(f"{path} cannot be read as a SQLite database: {error}") from error
    return {str(name) for (name,) in rows if not str(name).startswith("sqlite_")}


def _check_creatable(file: Path) -> None:
    ancestor = file.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DatabaseFileError(f"cannot create {file}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise DatabaseFileError(f"cannot create {file}: {ancestor} is not writable")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)  # as opening it would
    except OSError as error:
        raise DatabaseFileError(f"cannot create {file}: {error.strerror or error}") from error
