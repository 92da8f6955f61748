"""`replay --shard i/n`: several replay processes share one input by user.

Each process reads every file but takes only the items whose resolved owner falls in its shard: a
stable hash (SHA-256, the same in every process and every run) of the owner's key, so each user's
records are replayed by one process, in file order, as one unsharded run would replay them. Records
that name no owner, and unreadable lines, all go to shard 1, so each is replayed exactly once.

The owner is resolved against `users` when the item is read: create users before a sharded replay, or
re-drive after it (`redrive`), since a user created while it runs can move records of theirs to another
shard that has already passed them.
"""

from __future__ import annotations

import hashlib

import msgspec

from service.domain.owners import Owner
from service.replay.model import BadLine, Item
from service.replay.owners import NO_OWNER, OwnerResolver


class Shard(msgspec.Struct, frozen=True):
    index: int  # from 1
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`i/n` with 1 <= i <= n; ValueError says what is wrong."""
        index, slash, count = text.strip().partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError("must be I/N, this process's shard and the number of shards, e.g. 1/4")
        shard = cls(int(index), int(count))
        if shard.count < 1 or not 1 <= shard.index <= shard.count:
            raise ValueError(f"must be I/N with 1 <= I <= N (got {text.strip()})")
        return shard

    def key(self) -> str:
        """How the shard is written in a checkpoint key."""
        return f"shard={self}"

    def holds(self, owner: Owner) -> bool:
        return shard_of(owner, self.count) == self.index


def shard_of(owner: Owner, count: int) -> int:
    """The shard (from 1) an owner's records go to."""
    if owner.user is None and owner.owner == NO_OWNER:
        return 1
    digest = hashlib.sha256(owner.key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


class ShardFilter:
    """Whether an item falls in the shard; the owners it resolves are cached for the upload plan."""

    def __init__(self, shard: Shard, owners: OwnerResolver) -> None:
        self._shard = shard
        self._owners = owners

    async def __call__(self, item: Item) -> bool:
        if isinstance(item, BadLine):
            return self._shard.index == 1  # no owner: one fixed shard
        return self._shard.holds(await self._owners.resolve(item.claim))
