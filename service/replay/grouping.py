"""A batch of items -> the uploads the pipeline takes: one per owner and device, in file order.

The merge planner applies an upload's records in order, each seeing the ones before it, then its
deleted ids. Joining consecutive groups of one owner and device into one upload therefore gives every
record the outcome it would get uploaded group by group, as long as (1) no group of the same owner
came in between (another device's copy of the same entry may win or lose by order) and (2) live
records never follow deleted ids already in the upload (those apply last). Otherwise a new upload
starts.
"""

from __future__ import annotations

import msgspec

from service.domain.owners import Owner
from service.domain.records import QuarantineReason
from service.domain.sources import Source
from service.replay.inputs import InputFile
from service.replay.model import BadLine, Item, RecordGroup
from service.replay.owners import NO_OWNER, OwnerResolver
from service.usecases.ingest import IncomingRecord, Upload

SOURCE = Source.REPLAY
# The reason an unreadable line is quarantined with, and the entity type it is kept under (its raw text
# is the record).
UNREADABLE_LINE = QuarantineReason.UNREADABLE_LINE

_encode = msgspec.json.Encoder().encode


class PlannedUpload(msgspec.Struct):
    upload: Upload
    owner: Owner
    lines: list[int]  # NDJSON lines (or none) the upload's records come from, for reports


async def plan_uploads(
    batch: list[Item], resolver: OwnerResolver, source: InputFile, default_device: str | None
) -> list[PlannedUpload]:
    planned: list[PlannedUpload] = []
    latest: dict[str, PlannedUpload] = {}  # owner key -> that owner's newest upload in this batch
    for item in batch:
        if isinstance(item, BadLine):
            owner = Owner(NO_OWNER, None, problem=UNREADABLE_LINE, detail="the line is not a replayable object")
            group = RecordGroup(None, None, [unreadable_line_record(source, item)], line=item.line)
        else:
            owner = await resolver.resolve(item.claim)
            group = item
        device = group.device_id or default_device
        current = latest.get(owner.key)
        if current is None or current.upload.device_id != device or (current.upload.deleted and group.records):
            current = PlannedUpload(_new_upload(owner, device, source), owner, [])
            planned.append(current)
            latest[owner.key] = current
        _add(current, group)
    return planned


def _new_upload(owner: Owner, device: str | None, source: InputFile) -> Upload:
    upload = Upload(
        owner=owner.owner,
        user=owner.user,
        device_id=device,
        source=SOURCE,
        records=[],
        email=owner.email,
        alias_from=owner.alias_from,
        file_name=source.file_name,
        payload_sha256=source.sha256,
    )
    if owner.problem is not None:
        upload.quarantine_reason, upload.quarantine_detail = owner.problem, owner.detail
    return upload


def _add(planned: PlannedUpload, group: RecordGroup) -> None:
    upload = planned.upload
    upload.records.extend(group.records)
    for entity_type, ids in group.deleted.items():
        upload.deleted.setdefault(entity_type, []).extend(ids)
    if group.line is not None and (not planned.lines or planned.lines[-1] != group.line):
        planned.lines.append(group.line)


def unreadable_line_record(source: InputFile, bad: BadLine) -> IncomingRecord:
    """The line as a quarantine record: where it was, why it was refused, and its bytes."""
    try:
        content: dict[str, str] = {"text": bad.text.decode("utf-8")}
    except UnicodeDecodeError:
        content = {"text_hex": bad.text.hex()}  # not text: kept byte for byte
    document = {"file": source.location, "sha256": source.sha256, "line": bad.line, "error": bad.reason, **content}
    return IncomingRecord(UNREADABLE_LINE, _encode(document))
