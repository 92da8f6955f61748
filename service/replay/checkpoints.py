"""Replay checkpoints: how many units of a file are done, committed with the batch that did them.

A checkpoint is keyed by the file's SHA-256, the owner option and the shard (`--shard i/n`), so a
renamed copy of a file is recognised, and the same file replayed for another owner (or shard) is a
different replay. It is written from
`ingest_batch`'s `in_transaction` hook: a kill -9 leaves either the batch and its checkpoint, or
neither. Each write also checks the count it started from, so two runs of the same replay at once
cannot both apply a batch: the second one's transaction is rolled back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from service.replay.owners import OwnerOption
from service.replay.shards import Shard
from service.store.database import Database, GuardedConnection
from service.store.uploads import utc_now_text


class Checkpoint(msgspec.Struct, frozen=True):
    records_done: int
    finished: bool


class CheckpointMoved(Exception):
    """Another run of the same replay wrote the checkpoint since this one read it."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(
            f"another run of this replay moved its checkpoint (expected {expected} records done, found {found})"
        )


def replay_key(file_sha256: str, option: OwnerOption, shard: Shard | None = None) -> str:
    """A sharded replay keeps one checkpoint per shard: each is a position in the whole file."""
    key = f"{file_sha256}:{option.key()}"
    return key if shard is None else f"{key}:{shard.key()}"


async def load_checkpoint(db: Database, key: str) -> Checkpoint | None:
    async with db.read() as conn:
        row = await conn.fetchone(
            "SELECT records_done, finished FROM recovery_replay_checkpoints WHERE replay_key = ?", (key,)
        )
    return None if row is None else Checkpoint(int(row["records_done"]), bool(row["finished"]))


def checkpoint_writer(
    key: str, *, file_name: str, file_sha256: str, done_before: int, done_after: int, finished: bool
) -> Callable[[GuardedConnection], Awaitable[None]]:
    """The `in_transaction` hook that moves the checkpoint from `done_before` to `done_after` units."""

    async def write(conn: GuardedConnection) -> None:
        row = await conn.fetchone(
            "SELECT records_done FROM recovery_replay_checkpoints WHERE replay_key = ?", (key,)
        )
        found = int(row["records_done"]) if row is not None else 0
        if found != done_before:
            raise CheckpointMoved(done_before, found)
        # An upsert, never REPLACE: the guarded connection refuses REPLACE outright.
        await conn.execute(
            """INSERT INTO recovery_replay_checkpoints
                 (replay_key, file_name, file_sha256, records_done, finished, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (replay_key) DO UPDATE SET file_name = excluded.file_name,
                 records_done = excluded.records_done, finished = excluded.finished,
                 updated_at = excluded.updated_at""",
            (key, file_name, file_sha256, done_after, int(finished), utc_now_text()),
        )

    return write
