"""What a replay source yields: groups of one owner's records, and lines it could not read.

A *unit* is what a checkpoint counts: one record, one deleted id, or one unreadable line. Sources
always yield the same units in the same order for the same file, so a checkpoint's count of units
done is enough to resume.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from service.usecases.ingest import IncomingRecord

# The same rule the push endpoint applies to X-Device-ID.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and _DEVICE_ID.match(value) is not None


class OwnerClaim(msgspec.Struct, frozen=True):
    """Who a file (its profile, `mirubato:user`), an NDJSON line or a dump row says the data belongs to."""

    user_id: str | None = None
    email: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.user_id, f"<{self.email}>" if self.email else None) if p]
        return " ".join(parts) or "nobody"

    def names(self, user_id: str | None, email: str | None) -> bool:
        """True when the claim names this user, by id or by email (emails compare case-insensitively)."""
        if self.user_id is not None and self.user_id == user_id:
            return True
        return self.email is not None and email is not None and self.email.lower() == email.lower()


class RecordGroup(msgspec.Struct):
    """Records of one owner and device in file order: a whole export, one NDJSON line, or one dump row."""

    claim: OwnerClaim | None
    device_id: str | None
    records: list[IncomingRecord]
    deleted: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    line: int | None = None  # where the group starts in its file (NDJSON), for reports

    @property
    def units(self) -> int:
        return len(self.records) + sum(len(ids) for ids in self.deleted.values())

    def split(self, at: int) -> tuple[RecordGroup, RecordGroup]:
        """The first `at` units and the rest, in unit order: live records first, then deleted ids."""
        head_records, tail_records = self.records[:at], self.records[at:]
        left = max(at - len(self.records), 0)
        head_deleted: dict[str, list[Any]] = {}
        tail_deleted: dict[str, list[Any]] = {}
        for entity_type, ids in self.deleted.items():
            taken, left = ids[:left], left - len(ids[:left])
            if taken:
                head_deleted[entity_type] = taken
            if ids[len(taken):]:
                tail_deleted[entity_type] = ids[len(taken):]
        return (
            RecordGroup(self.claim, self.device_id, head_records, head_deleted, self.line),
            RecordGroup(self.claim, self.device_id, tail_records, tail_deleted, self.line),
        )


class BadLine(msgspec.Struct, frozen=True):
    """A line of an NDJSON file that is not a replayable object; reported and kept in quarantine."""

    line: int
    reason: str
    text: bytes

    @property
    def units(self) -> int:
        return 1


Item = RecordGroup | BadLine


class UnreadableInput(Exception):
    """A file the replay cannot use at all (reported; the command exits 2)."""

    def __init__(self, reason: str, *, field: str | None = None, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.line = line
