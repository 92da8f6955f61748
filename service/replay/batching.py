"""Cutting a source's items into batches of at most N units, and skipping the units already done.

Only one batch (and the one read ahead, to know whether it is the last) is held at a time, so memory
depends on the batch size, never on the size of the file. A sharded replay (`--shard i/n`) passes the
items of other shards along uncounted: its batches hold N units of its own shard, and each batch also
covers the other shards' units read with it, so a checkpoint is always a position in the whole file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import msgspec

from service.replay.model import BadLine, Item, RecordGroup


class Batch(msgspec.Struct):
    items: list[Item]  # this shard's items (every item when not sharded)
    units: int  # the file's units the batch covers, other shards' included: what its checkpoint adds
    last: bool = False  # no units follow: its checkpoint marks the file finished
    taken: int = -1  # units of `items` (this shard's); -1: the same as `units`

    def __post_init__(self) -> None:
        if self.taken < 0:
            self.taken = self.units


def skip_units(items: Iterable[Item], count: int) -> Iterator[Item]:
    """The items after the first `count` units (a group is cut where the count ends inside it)."""
    for item in items:
        if count == 0:
            yield item
        elif item.units <= count:
            count -= item.units
        else:
            assert isinstance(item, RecordGroup)  # a BadLine is one unit, so it never straddles
            yield item.split(count)[1]
            count = 0


def cut_batches(items: Iterable[Item], size: int) -> Iterator[Batch]:
    """Batches of exactly `size` units (the last may be smaller), each flagged whether it is the last."""
    cutter = _Cutter(size)
    ahead: Batch | None = None
    for item in items:
        for batch in cutter.add(item, taken=True):
            if ahead is not None:
                yield ahead
            ahead = batch
    yield from cutter.finish(ahead)


async def cut_shard_batches(
    items: Iterable[Item], size: int, in_shard: Callable[[Item], Awaitable[bool]]
) -> AsyncIterator[Batch]:
    """Batches of `size` units of the items `in_shard` takes (the last may be smaller); the units of the
    others ride along with the batch being filled, and those after the last taken one with the last batch."""
    cutter = _Cutter(size)
    ahead: Batch | None = None
    for item in items:
        if item.units == 0:
            continue  # groups with nothing in them are dropped, without asking whose they are
        for batch in cutter.add(item, taken=await in_shard(item)):
            if ahead is not None:
                yield ahead
            ahead = batch
    for batch in cutter.finish(ahead):
        yield batch


class _Cutter:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._size = size
        self._items: list[Item] = []
        self._units = 0  # of the file, since the last batch
        self._taken = 0  # of `_items`

    def add(self, item: Item, *, taken: bool) -> Iterator[Batch]:
        """The batches `item` fills (none, one or several: a group larger than a batch is cut)."""
        if not taken:
            self._units += item.units
            return
        rest: Item | None = item
        while rest is not None and rest.units > 0:  # groups with nothing in them are dropped
            room = self._size - self._taken
            if rest.units <= room:
                piece, rest = rest, None
            else:
                assert not isinstance(rest, BadLine)
                piece, rest = rest.split(room)
            self._items.append(piece)
            self._units += piece.units
            self._taken += piece.units
            if self._taken == self._size:
                yield Batch(self._items, self._units, taken=self._taken)
                self._items, self._units, self._taken = [], 0, 0

    def finish(self, ahead: Batch | None) -> list[Batch]:
        """The file's last batches: `ahead` and what is left, flagged last; other shards' units read after
        the last taken item go with `ahead` rather than in a batch of their own."""
        rest = Batch(self._items, self._units, taken=self._taken) if self._units else None
        if rest is not None and rest.taken == 0 and ahead is not None:
            ahead.units += rest.units
            rest = None
        batches = [b for b in (ahead, rest) if b is not None]
        if batches:
            batches[-1].last = True
        return batches
