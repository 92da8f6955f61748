"""The live-sync socket's events as use cases (the app's sync worker, CONTRACT section 4), for any front end
that speaks them: which event becomes which upload through the same pipeline as every HTTP upload (source
`socket`), which stored rows an applied change answers the sender with and which it broadcasts to the
user's other sockets, what a `SYNC_REQUEST` and a catch-up read, and where a new socket's catch-ups start.
Answers are stored rows; the socket (service.api.live) shapes them into the worker's frames."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import msgspec

from service.domain import outcomes as oc
from service.domain.outcomes import RecordResult
from service.domain.owners import Owner
from service.domain.records import LOGBOOK_ENTRY, PLAN_OCCURRENCE, PRACTICE_PLAN, REPERTOIRE_ITEM
from service.domain.sources import Source
from service.domain.sync_events import SyncEventType as Event
from service.store.interface import ReadUnit, Storage
from service.store.rows import SyncRow
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, sha256_hex

SYNC_CHUNK = 250  # rows per read and per bulk message, as the app's worker sends them
# What a SYNC_REQUEST sends; a catch-up also sends plans, as the app's HTTP pushes broadcast them.
SYNC_REQUEST_TYPES = (LOGBOOK_ENTRY, REPERTOIRE_ITEM)
CATCH_UP_TYPES = (LOGBOOK_ENTRY, REPERTOIRE_ITEM, PRACTICE_PLAN, PLAN_OCCURRENCE)

_CHANGED = frozenset({oc.INSERTED, oc.UPDATED, oc.DELETED})
# The sender's version lost (the stored one is newer, or a deletion is): it is sent the stored state.
_LOST = frozenset({oc.KEPT_EXISTING, oc.SUPPRESSED})


class SocketEvent(msgspec.Struct):
    """A client event; records stay as their verbatim bytes (an empty Raw: the field was absent)."""

    type: Any = None
    lastSeq: Any = None
    entry: msgspec.Raw = msgspec.Raw()
    entryId: Any = None
    piece: msgspec.Raw = msgspec.Raw()
    scoreId: Any = None
    plan: msgspec.Raw = msgspec.Raw()
    occurrence: msgspec.Raw = msgspec.Raw()
    occurrences: list[msgspec.Raw] = []
    entries: list[msgspec.Raw] = []
    pieces: list[msgspec.Raw] = []


class BadMessage(Exception):
    """An event the socket answers with `ERROR` (the connection stays open); nothing is written."""


class Mutation(msgspec.Struct):
    """What a change event asks for, as an upload's records and deleted lists."""

    records: list[IncomingRecord]
    deleted: dict[str, list[str]]


def _is_object(raw: msgspec.Raw) -> bool:
    return bytes(raw).lstrip()[:1] == b"{"


def _required_object(raw: msgspec.Raw, field: str) -> msgspec.Raw:
    if not _is_object(raw):
        raise BadMessage(f"Invalid sync event format: {field} must be an object")
    return raw


def _required_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadMessage(f"Invalid sync event format: {field} must be a non-empty string")
    return value


def mutation_of(event: SocketEvent) -> Mutation:
    """The records a change event carries (the app's event shapes; content is judged by the pipeline)."""

    def records(entity_type: str, raws: Iterable[msgspec.Raw]) -> list[IncomingRecord]:
        return [IncomingRecord(entity_type, bytes(raw)) for raw in raws]

    match event.type:  # text as the client sent it: a type that is no Event (or no change) is refused
        case Event.ENTRY_CREATED | Event.ENTRY_UPDATED:
            return Mutation(records(LOGBOOK_ENTRY, [_required_object(event.entry, "entry")]), {})
        case Event.ENTRY_DELETED:
            return Mutation([], {LOGBOOK_ENTRY: [_required_id(event.entryId, "entryId")]})
        case Event.PIECE_ADDED | Event.PIECE_UPDATED:
            return Mutation(records(REPERTOIRE_ITEM, [_required_object(event.piece, "piece")]), {})
        case Event.PIECE_REMOVED | Event.PIECE_DISSOCIATED:
            return Mutation([], {REPERTOIRE_ITEM: [_required_id(event.scoreId, "scoreId")]})
        case Event.PLAN_CREATED | Event.PLAN_UPDATED:
            plan = records(PRACTICE_PLAN, [_required_object(event.plan, "plan")])
            return Mutation(plan + records(PLAN_OCCURRENCE, event.occurrences), {})
        case Event.PLAN_OCCURRENCE_COMPLETED:
            return Mutation(records(PLAN_OCCURRENCE, [_required_object(event.occurrence, "occurrence")]), {})
        case Event.BULK_SYNC:
            return Mutation(records(LOGBOOK_ENTRY, event.entries), {})
        case Event.REPERTOIRE_BULK_SYNC:
            return Mutation(records(REPERTOIRE_ITEM, event.pieces), {})
    raise BadMessage(f"Invalid sync event format: unknown type {str(event.type)[:40]!r}")


def last_seq_of(event: SocketEvent) -> int:
    """A SYNC_REQUEST's `lastSeq`: absent is 0."""
    value = event.lastSeq
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMessage("Invalid sync event format: lastSeq must be a non-negative integer")
    return value


def upload_of(uploader: Owner, mutation: Mutation, payload: bytes) -> Upload:
    """A change event as the uploader's upload: the socket names no device; the event's bytes are hashed."""
    return Upload.of_owner(
        uploader,
        device_id=None,
        source=Source.SOCKET,
        records=mutation.records,
        deleted=dict(mutation.deleted),
        payload_sha256=sha256_hex(payload),
    )


class StoredChange(msgspec.Struct, frozen=True):
    """A record a change event touched, as it is stored now (`created`: the event inserted it)."""

    entity_type: str
    row: SyncRow
    created: bool


class ChangeOutcome(msgspec.Struct, frozen=True):
    """What an applied change event answers: the records quarantined (the sender is told why), the stored
    rows the sender's version lost to (sent back to it only), and the rows it changed (broadcast to the
    user's other sockets; the sender is told the highest seq)."""

    quarantined: list[RecordResult]
    lost: list[StoredChange]
    changed: list[StoredChange]


async def apply_change(db: Storage, uploader: Owner, event: SocketEvent, payload: bytes) -> ChangeOutcome:
    """Take a change event (`payload`: its bytes as received) through the pipeline as the uploader's
    upload, then read back the rows it changed or lost to, in the order of its records."""
    result = await ingest(db, upload_of(uploader, mutation_of(event), payload))
    assert isinstance(result, UploadResult)  # no idempotency key: never a replayed answer
    results = result.receipt.results
    quarantined = [r for r in results if r.outcome == oc.QUARANTINED]
    wanted = [r for r in results if r.entity_id is not None and r.outcome in _CHANGED | _LOST]
    user = uploader.user
    if user is None or not wanted:
        return ChangeOutcome(quarantined, [], [])
    by_type: dict[str, list[str]] = {}
    for r in wanted:
        by_type.setdefault(r.entity_type, []).append(cast(str, r.entity_id))
    user_id = user.id

    def changed_rows(unit: ReadUnit) -> dict[tuple[str, str], SyncRow]:
        return {(entity_type, found.entity_id): found for entity_type, ids in by_type.items()
                for found in unit.rows_of(user_id, entity_type, sorted(set(ids)))}

    rows = await db.read(changed_rows)
    lost: list[StoredChange] = []
    changed: list[StoredChange] = []
    for r in wanted:
        row = rows.get((r.entity_type, cast(str, r.entity_id)))
        if row is None or row.seq is None:
            continue
        stored = StoredChange(r.entity_type, row, created=r.outcome == oc.INSERTED)
        (changed if r.outcome in _CHANGED else lost).append(stored)
    return ChangeOutcome(quarantined, lost, changed)


async def sync_request(
    db: Storage, user_id: str, last_seq: int, send: Callable[[str, list[SyncRow]], Awaitable[None]]
) -> int:
    """Hand `send` the user's entries and pieces changed after `last_seq` (deletions included), a chunk of
    at most SYNC_CHUNK rows at a time in seq order per type; returns the highest seq sent (else where the
    request started)."""
    current = await db.read(lambda unit: unit.current_seq())
    # A counter beyond this database's own sequence was given by another server (the app's, before the
    # loss): none of the recovered rows would be newer than it, so the device gets everything.
    if last_seq > current:
        last_seq = 0
    highest = last_seq
    for entity_type in SYNC_REQUEST_TYPES:
        cursor = last_seq
        while True:
            rows = await db.read(_changes_after(user_id, entity_type, cursor))
            await send(entity_type, rows)
            if rows:
                cursor = rows[-1].seq or cursor  # changes_after returns rows with a seq only
                highest = max(highest, cursor)
            if len(rows) < SYNC_CHUNK:
                break
    return highest


def _changes_after(user_id: str, entity_type: str, after_seq: int) -> Callable[[ReadUnit], list[SyncRow]]:
    return lambda unit: unit.changes_after(user_id, entity_type, after_seq, SYNC_CHUNK)


async def changes_since(db: Storage, user_id: str, after: int) -> list[tuple[str, SyncRow]]:
    """What a socket that was sent the user's rows up to `after` catches up with: every row changed after
    it, of each catch-up type, in seq order, read in one snapshot so that no change between two reads is
    stepped over."""

    def read(unit: ReadUnit) -> list[tuple[str, SyncRow]]:
        rows: list[tuple[str, SyncRow]] = []
        for entity_type in CATCH_UP_TYPES:
            cursor = after
            while True:
                chunk = unit.changes_after(user_id, entity_type, cursor, SYNC_CHUNK)
                rows += [(entity_type, row) for row in chunk]
                if len(chunk) < SYNC_CHUNK:
                    break
                cursor = chunk[-1].seq or cursor
        return rows

    return sorted(await db.read(read), key=lambda pair: pair[1].seq or 0)


async def initial_cursor(db: Storage, user_id: str) -> int:
    """Where a new socket's catch-ups start: the user's last sync token (the change counter when their
    last upload committed, so no change of theirs still being written is below it), else the counter."""

    def read(unit: ReadUnit) -> int:
        current = unit.current_seq()
        metadata = unit.sync_metadata(user_id)
        token = metadata.last_sync_token if metadata is not None else None
        return min(current, int(token)) if token is not None and token.isdigit() else current

    return await db.read(read)
