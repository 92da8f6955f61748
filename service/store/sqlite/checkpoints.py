"""The WAL copied back into the database file on a thread of its own, beside the writer.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: the writer itself copies
every page of the last 64 MB of WAL into the database file and fsyncs it, while no other transaction can
start. Here a connection of its own runs a PASSIVE checkpoint after commits instead: PASSIVE takes no
lock that writers or readers wait for, and sqlite3 lets go of the GIL while it copies, so the copying
runs on another core while the writer goes on with the next transaction.

The WAL starts over from its beginning only at a write transaction that begins when every frame is
copied back. Under a steady stream of commits that moment never comes by itself, so once the WAL is
longer than `RESTART_FRAMES`, the next transaction first waits for the copying to catch up (`settle`):
a short wait for the last frames, not the whole copy.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import suppress

from service.store.sqlite.connection import GuardedConnection, SyncConnection

log = logging.getLogger(__name__)

# The WAL length (pages) past which the next write transaction waits for the copying to catch up, so
# that it starts the WAL over: what SQLite's own automatic checkpoint ran at before (64 MB of 4 KB pages).
RESTART_FRAMES = 16384


class WalCheckpointer:
    """PASSIVE checkpoints of one SQLite file, one at a time, after the writer's commits."""

    def __init__(self, conn: GuardedConnection) -> None:
        self._conn = conn
        self._running: asyncio.Task[None] | None = None
        self._again = False  # a commit came while a checkpoint ran: its frames need another
        self.wal_frames = 0  # the WAL's length at the last checkpoint (0 once a transaction starts it over)
        self._settle_at = RESTART_FRAMES  # the length at which the next transaction waits for the copy
        self.failures = 0

    @classmethod
    async def open(cls, path: str) -> WalCheckpointer:
        # A small page cache: a checkpoint copies WAL frames, it reads no tables.
        return cls(await GuardedConnection.open(path, read_only=False, role="sqlite-checkpointer", cache_kib=2048))

    def after_commit(self) -> None:
        """Copy the frames just committed back, after the one running (if any) is done."""
        if self._running is not None:
            self._again = True
            return
        self._running = asyncio.create_task(self._copy_until_caught_up())

    async def settle(self) -> None:
        """Before a write transaction: when the WAL has grown past `RESTART_FRAMES`, wait until it is all
        copied back, so that this transaction, beginning with nothing left to copy, writes from the WAL's
        start again. (The writer begins each transaction right after the last one's commit, while the
        copy of that commit still runs: left alone, the WAL would never start over.)"""
        if self.wal_frames < self._settle_at:
            return
        if self._running is not None:
            await asyncio.shield(self._running)
        if await self._checkpoint():
            self.wal_frames, self._settle_at = 0, RESTART_FRAMES
        else:
            # A reader's snapshot (a long support read, an export) holds frames back, or another process
            # was checkpointing: wait again only once the WAL has grown by as much, not at every transaction.
            self._settle_at = self.wal_frames + RESTART_FRAMES

    async def _copy_until_caught_up(self) -> None:
        try:
            while True:
                self._again = False
                await self._checkpoint()
                if not self._again:
                    return
        finally:
            self._running = None

    async def _checkpoint(self) -> bool:
        """One PASSIVE checkpoint; True when it copied the whole WAL back."""
        try:
            busy, frames, copied = await self._conn.run(_passive_checkpoint)
        except sqlite3.Error as error:
            # The writer's own commits meet the same fault (a full disk, an I/O error) and report it; the
            # WAL keeps every committed frame until a checkpoint succeeds.
            self.failures += 1
            log.warning("WAL checkpoint failed: %s", error)
            return False
        if busy:  # another connection (another process's) was checkpointing
            return False
        self.wal_frames = frames
        if copied == frames:  # nothing holds frames back any more: the next transaction may start it over
            self._settle_at = RESTART_FRAMES
        return copied == frames

    async def close(self) -> None:
        if self._running is not None:
            with suppress(Exception):
                await asyncio.shield(self._running)
        await self._conn.close()


def _passive_checkpoint(conn: SyncConnection) -> tuple[int, int, int]:
    """(busy, frames in the WAL, frames copied back): busy when another connection was checkpointing."""
    row = conn.fetchone("PRAGMA wal_checkpoint(PASSIVE)")
    return (int(row[0]), int(row[1]), int(row[2])) if row is not None else (1, 0, 0)
