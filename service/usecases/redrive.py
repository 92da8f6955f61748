"""Re-driving a user's quarantined records: the one function the support API and the CLI both call.

Which records may go into which account is `ReadUnit.redrivable_quarantine`: only those kept under
the user's id, or kept for an unknown owner whose email names this user; never a record of a known
owner by the email it carried.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.domain.owners import UserRecord
from service.domain.sources import Source
from service.store.interface import ReadUnit, Storage, WriteUnit
from service.store.rows import RedrivableRecord
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest_batch


class NoSuchUser(LookupError):
    """The user to re-drive into does not exist (re-create them first)."""


class RedriveRaced(RuntimeError):
    """Another re-drive of the same records committed first; this one wrote nothing."""


class RedriveOutcome(msgspec.Struct):
    user_id: str
    redriven: int  # records taken through the pipeline again
    resolved: int  # of them, those that went in
    still_quarantined: int  # those quarantined again (a new row each, with the new reason)
    results: list[UploadResult]


def _redrive_record(row: RedrivableRecord) -> tuple[str, IncomingRecord | Any]:
    """A kept deletion-list entry goes back to the deleted list; any other record as it came."""
    raw: bytes = row.raw.encode()
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "record", IncomingRecord(row.entity_type, raw)
    if isinstance(value, dict) and set(value) == {"entity_type", "id", "deleted"} and value["deleted"] is True:
        return "deleted", value["id"]
    return "record", IncomingRecord(row.entity_type, raw, value)


async def redrive_user(db: Storage, user_id: str) -> RedriveOutcome:
    """Take every quarantined record that belongs to `user_id` through the pipeline again, in one
    transaction that also marks the old rows resolved (never deleted). Raises `NoSuchUser`, and
    `RedriveRaced` when a concurrent re-drive took some of the same rows first (nothing is written)."""

    def select(unit: ReadUnit) -> tuple[UserRecord | None, list[RedrivableRecord]]:
        user = unit.user_by_id(user_id)
        return user, unit.redrivable_quarantine(user) if user is not None else []

    user, waiting = await db.read(select)
    if user is None:
        raise NoSuchUser(user_id)
    by_device: dict[str | None, Upload] = {}
    redriven_ids: dict[str, list[int]] = {}
    for row in waiting:
        upload = by_device.get(row.device_id)
        if upload is None:
            upload = Upload(owner=user.id, user=user, device_id=row.device_id, source=Source.REDRIVE, records=[],
                            email=user.email, upload_id=f"upl_{uuid.uuid4().hex}")
            by_device[row.device_id] = upload
        kind, item = _redrive_record(row)
        if kind == "deleted":
            upload.deleted.setdefault(row.entity_type, []).append(item)
        else:
            upload.records.append(item)
        assert upload.upload_id is not None
        redriven_ids.setdefault(upload.upload_id, []).append(row.id)

    def mark_resolved(unit: WriteUnit) -> None:
        if not all(unit.resolve_redriven(ids, upload_id) == len(ids) for upload_id, ids in redriven_ids.items()):
            raise RedriveRaced(user.id)  # rolls the whole transaction back: each record is re-driven once

    uploads = list(by_device.values())
    results = await ingest_batch(db, uploads, in_transaction=mark_resolved) if uploads else []
    still = sum(r.receipt.counts()["quarantined"] for r in results)
    return RedriveOutcome(user.id, len(waiting), len(waiting) - still, still, results)


async def users_to_redrive(db: Storage) -> list[str]:
    """The users `redrive_user` would take records for now (`redrive --all`: call it for each)."""
    return await db.read(lambda unit: unit.users_with_redrivable_quarantine())


__all__ = ["NoSuchUser", "RedriveOutcome", "RedriveRaced", "redrive_user", "users_to_redrive"]
