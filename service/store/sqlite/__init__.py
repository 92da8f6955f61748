"""The SQLite engine (the embedded default): `SqliteStorage` and its units of work."""

from service.store.sqlite.engine import SqliteStorage

__all__ = ["SqliteStorage"]
