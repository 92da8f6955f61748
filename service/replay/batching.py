"""Cutting a source's items into batches of at most N units, and skipping the units already done.

Only one batch (and the one read ahead, to know whether it is the last) is held at a time, so memory
depends on the batch size, never on the size of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from service.replay.model import BadLine, Item, RecordGroup


class Batch(msgspec.Struct):
    items: list[Item]
    units: int
    last: bool = False  # no units follow: its checkpoint marks the file finished


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
    if size < 1:
        raise ValueError("batch size must be at least 1")
    ahead: Batch | None = None
    for batch in _batches(items, size):
        if ahead is not None:
            yield ahead
        ahead = batch
    if ahead is not None:
        ahead.last = True
        yield ahead


def _batches(items: Iterable[Item], size: int) -> Iterator[Batch]:
    batch: list[Item] = []
    units = 0
    for item in items:
        rest: Item | None = item
        while rest is not None and rest.units > 0:  # groups with nothing in them are dropped
            room = size - units
            if rest.units <= room:
                piece, rest = rest, None
            else:
                assert not isinstance(rest, BadLine)
                piece, rest = rest.split(room)
            batch.append(piece)
            units += piece.units
            if units == size:
                yield Batch(batch, units)
                batch, units = [], 0
    if batch:
        yield Batch(batch, units)
