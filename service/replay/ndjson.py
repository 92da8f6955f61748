"""NDJSON batch files: one upload per line, for any number of users, read one line at a time.

    {"user_id" | "email", "device_id", "changes": {...push body changes...}}
    {"user_id" | "email", "device_id", "records": [{"entity_type", "data"}...], "deleted": {...}}

A line that is not such an object becomes a `BadLine` (reported with its number, kept in quarantine)
and the rest of the file is replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import msgspec

from service import jsontext
from service.api.schemas import PUSH_GROUPS, RawPushChanges
from service.replay.model import BadLine, Item, OwnerClaim, RecordGroup, is_device_id
from service.usecases.ingest import IncomingRecord

# Longer lines are reported, not read: memory stays flat whatever the file holds.
MAX_LINE_BYTES = 64 * 1024 * 1024
_KEPT_OF_LONG_LINE = 4096
NESTED_TOO_DEEP = "nested deeper than the JSON decoder's limit"
_BOM = b"\xef\xbb\xbf"


class LineSource(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class _Record(msgspec.Struct):
    entity_type: str
    data: msgspec.Raw = msgspec.Raw(b"null")  # a missing document is quarantined, not the whole line


class _Line(msgspec.Struct):
    user_id: str | None = None
    email: str | None = None
    device_id: str | None = None
    changes: RawPushChanges | None = None
    records: list[_Record] | None = None
    deleted: dict[str, list[Any]] | None = None


def _decode_line(text: bytes) -> _Line:
    return jsontext.decode(text, _Line)  # lone surrogate escapes included


def read_items(stream: LineSource, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Item]:
    """Every non-blank line of the file, in order, as a RecordGroup or a BadLine."""
    for number, text, too_long in _lines(stream, max_line_bytes):
        if too_long:
            yield BadLine(number, f"line longer than {max_line_bytes} bytes (first bytes kept)", text)
            continue
        item = parse_line(number, text)
        if item is not None:
            yield item


def parse_line(number: int, text: bytes) -> Item | None:
    """One line as a group of records, a BadLine, or None when the line is blank."""
    if not text.strip():
        return None
    try:
        line = _decode_line(text)
    except msgspec.ValidationError as error:
        return BadLine(number, f"wrong shape: {error}", text)
    except msgspec.DecodeError as error:
        return BadLine(number, f"invalid JSON: {error}", text)
    except RecursionError:
        return BadLine(number, f"invalid JSON: {NESTED_TOO_DEEP}", text)  # one bad line, not a failed replay
    if line.changes is None and line.records is None and line.deleted is None:
        return BadLine(number, "wrong shape: a line needs `changes`, `records` or `deleted`", text)
    if line.device_id is not None and not is_device_id(line.device_id):
        return BadLine(number, "wrong shape: `device_id` must be 1 to 64 characters of A-Z, a-z, 0-9, _ or -", text)
    records: list[IncomingRecord] = []
    if line.changes is not None:
        for group, entity_type in PUSH_GROUPS.items():
            records += [IncomingRecord(entity_type, bytes(raw)) for raw in getattr(line.changes, group)]
    for record in line.records or []:
        records.append(IncomingRecord(record.entity_type, bytes(record.data)))
    claim = OwnerClaim(line.user_id or None, line.email or None)
    return RecordGroup(
        claim if claim.user_id or claim.email else None, line.device_id, records, line.deleted or {}, number
    )


def _lines(stream: LineSource, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its end, too long) for every line; numbers count blank lines too."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if number == 1:
            line = line.removeprefix(_BOM)
        if len(line) > limit and not line.endswith(b"\n"):
            kept = line[:_KEPT_OF_LONG_LINE]
            while line and not line.endswith(b"\n"):
                line = stream.readline(1024 * 1024)
            yield number, kept, True
            continue
        yield number, line.rstrip(b"\r\n"), False
