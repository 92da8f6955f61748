"""Replay checkpoints: how many units of a file are done, committed with the batch that did them.

A checkpoint is keyed by the file's SHA-256, the owner option and the shard (`--shard i/n`), so a
renamed copy of a file is recognised, and the same file replayed for another owner (or shard) is a
different replay. It is written from
`ingest_batch`'s `in_transaction` hook: a kill -9 leaves either the batch and its checkpoint, or
neither. Each write also checks the count it started from, so two runs of the same replay at once
cannot both apply a batch: the second one's transaction is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable

from service.replay.owners import OwnerOption
from service.replay.shards import Shard
from service.store.interface import Storage, WriteUnit
from service.store.rows import Checkpoint

__all__ = ["Checkpoint", "CheckpointMoved", "checkpoint_writer", "load_checkpoint", "replay_key"]


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


async def load_checkpoint(db: Storage, key: str) -> Checkpoint | None:
    return await db.read(lambda unit: unit.checkpoint(key))


def checkpoint_writer(
    key: str, *, file_name: str, file_sha256: str, done_before: int, done_after: int, finished: bool
) -> Callable[[WriteUnit], None]:
    """The `in_transaction` hook that moves the checkpoint from `done_before` to `done_after` units."""

    def write(unit: WriteUnit) -> None:
        found = unit.checkpoint(key)
        done = found.records_done if found is not None else 0
        if done != done_before:
            raise CheckpointMoved(done_before, done)
        unit.save_checkpoint(key, file_name=file_name, file_sha256=file_sha256, records_done=done_after,
                             finished=finished)

    return write
