"""What a device has sent, from the rows either engine's probe returns: one decision, so the two engines
cannot come to disagree on a device's counts.

A device has sent a key when a raw record of that key came from it (`recovery_raw_records.device_id`),
or when `recovery_device_records` says so. A device row is written only where no raw record of the
device's can say it: a byte-identical copy of what another device sent first (one raw row per distinct
content), and records that are not kept raw (quarantined ones). Every other key's raw row is its device
record, so a first upload writes no device rows at all (#17: they were an insert into a random-key
B-tree per record). A database of an earlier version, a device row for every key, reads the same.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import msgspec

from service.domain.merge import EntityKey
from service.store.rows import RawRecordRow


class SentBefore(msgspec.Struct, frozen=True):
    """One probe row: a raw record of the key (`raw_sha256` set; `mine` when it came from this device),
    or the device's own row for the key (`raw_sha256` None, `mine` True)."""

    entity_type: str
    entity_id: str
    raw_sha256: str | None
    mine: bool


class DeviceReceipt(msgspec.Struct, frozen=True):
    """What one upload adds to a device's record: the device rows to write and the count per entity type
    of keys new to the device."""

    rows: list[EntityKey]
    new_per_type: dict[str, int]


def device_receipt(
    sent: Iterable[EntityKey],
    kept: Iterable[RawRecordRow],
    found: Iterable[SentBefore],
    known: Collection[EntityKey] = (),
) -> DeviceReceipt:
    """`sent`: every key the upload carried (repeats allowed); `kept`: the raw records about to be inserted
    with this device's id (ON CONFLICT DO NOTHING); `found`: the probe's rows, read before that insert, for
    the keys not in `known` (already known to be the device's)."""
    before: set[EntityKey] = set(known)
    stored_raw: set[tuple[str, str, str]] = set()
    for row in found:
        if row.mine:
            before.add((row.entity_type, row.entity_id))
        if row.raw_sha256 is not None:
            stored_raw.add((row.entity_type, row.entity_id, row.raw_sha256))
    # A raw row this upload inserts (its content not stored yet) carries the device's id: it is the record.
    recorded_by_raw = {(r.entity_type, r.entity_id) for r in kept
                       if r.entity_id is not None and (r.entity_type, r.entity_id, r.raw_sha256) not in stored_raw}
    rows: list[EntityKey] = []
    new_per_type: dict[str, int] = {}
    for key in dict.fromkeys(sent):
        if key in before:
            continue
        new_per_type[key[0]] = new_per_type.get(key[0], 0) + 1
        if key not in recorded_by_raw:
            rows.append(key)
    return DeviceReceipt(rows, new_per_type)


def receipt_of_upload(
    sent: list[EntityKey],
    kept: list[RawRecordRow],
    known: Collection[EntityKey],
    probe: Callable[[list[EntityKey]], list[SentBefore]],
) -> DeviceReceipt:
    """The receipt of one upload, `probe` (the engine's read, before the raw rows go in) asked only for
    the keys not already known to be the device's (none, for a device re-pushing its history)."""
    unknown = [key for key in dict.fromkeys(sent) if key not in known]
    return device_receipt(sent, kept, probe(unknown) if unknown else [], known)
