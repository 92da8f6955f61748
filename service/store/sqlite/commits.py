"""Commits made through other connections of the same SQLite file (another `serve --workers` process, a
replay), seen by polling a read connection of its own: `PRAGMA data_version` changes only when another
connection committed, so an idle poll reads no table at all, and a moved one reads the new rows' users
by the `seq` index (only the rows committed since the last poll)."""

from __future__ import annotations

from service.store.sqlite.connection import GuardedConnection, SyncConnection


class SqliteCommitWatch:
    """`CommitWatch` of one SQLite file (`SqliteStorage.watch_commits`)."""

    def __init__(self, conn: GuardedConnection) -> None:
        self._conn = conn
        self._version: int | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteCommitWatch:
        return cls(await GuardedConnection.open(path, read_only=True))

    async def latest_seq(self) -> int | None:
        return await self._conn.run(self._latest_seq)

    def _latest_seq(self, conn: SyncConnection) -> int | None:
        row = conn.fetchone("PRAGMA data_version")
        version = int(row[0]) if row is not None else 0
        if version == self._version:
            return None
        self._version = version
        top = conn.fetchone("SELECT MAX(seq) FROM sync_data")
        return int(top[0]) if top is not None and top[0] is not None else 0

    async def users_changed(self, after_seq: int, up_to_seq: int) -> list[tuple[str, int]]:
        rows = await self._conn.fetchall(
            "SELECT user_id, MAX(seq) FROM sync_data WHERE seq > ? AND seq <= ? GROUP BY user_id",
            (after_seq, up_to_seq),
        )
        return [(str(row[0]), int(row[1])) for row in rows]

    async def close(self) -> None:
        await self._conn.close()
