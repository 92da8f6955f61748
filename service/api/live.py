"""The app's live-sync socket, `GET /sync/ws?userId=&token=` (the app's sync worker, CONTRACT section 4).

Devices that already hold data learn of other devices' changes only here: `SYNC_REQUEST {lastSeq}` is
answered with every row of the user changed after that `seq` (deletions included), and a change a device
sends (`ENTRY_*`, `PIECE_*`, `PLAN_*`, `BULK_SYNC`, `REPERTOIRE_BULK_SYNC`) is one upload through the same
pipeline as every HTTP upload (source `socket`), then sent to the user's other open sockets as the
stored rows say, the way the app's worker sends it.

This module is an adapter: it authenticates, translates messages to an `Upload` and rows to messages. The
hub holds the sockets of this process and listens to the change feed (`service.changefeed`): a change
committed by any front end (an HTTP push, a replay, another replica's socket) reaches every open socket of
its user as the rows changed after what that socket was last sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, cast

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler
from litestar.security.jwt import Token

from service import jsontext
from service.changefeed import ChangeFeed
from service.domain import outcomes as oc
from service.domain.documents import lowercase_enums
from service.domain.outcomes import RecordResult
from service.domain.owners import Owner
from service.domain.records import LOGBOOK_ENTRY, PLAN_OCCURRENCE, PRACTICE_PLAN, REPERTOIRE_ITEM, UNKNOWN_USER
from service.domain.sources import Source
from service.domain.sync_events import SyncEventType as Event
from service.domain.times import ms_to_iso_z
from service.store.interface import ReadUnit, Storage
from service.store.rows import SyncRow
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, sha256_hex
from service.usecases.users import owner_for

log = logging.getLogger("service.live")

SOURCE = Source.SOCKET
SYNC_CHUNK = 250  # rows per BULK_SYNC message, as the app's worker sends them
SEND_TIMEOUT_S = 10.0  # a socket that takes longer to take a message is dropped
WELCOME_MESSAGE = "Connected to Mirubato sync"

_encode = jsontext.encode  # a lone surrogate goes out as JSON.stringify writes it
_CHANGED = frozenset({oc.INSERTED, oc.UPDATED, oc.DELETED})
# The sender's version lost (the stored one is newer, or a deletion is): it is sent the stored state.
_LOST = frozenset({oc.KEPT_EXISTING, oc.SUPPRESSED})


def _now_iso() -> str:
    return ms_to_iso_z(int(time.time() * 1000))


# ---- the hub: the open sockets of this process ----------------------------------------------------


class Peer:
    """One open socket of one user; sends are serialised (the hub and its own handler both send)."""

    def __init__(self, socket: WebSocket[Any, Any, Any], user_id: str) -> None:
        self.socket = socket
        self.user_id = user_id
        self._lock = asyncio.Lock()
        self.open = True
        # The highest seq of the user's rows this socket has been sent (None: not known, nothing is sent
        # to it unasked), the seqs of rows a socket change of this process sent it directly (a catch-up
        # skips them), and the lane that keeps its catch-ups and SYNC_REQUEST answers one at a time.
        self.cursor: int | None = None
        self.direct: set[int] = set()
        self.lane = asyncio.Lock()
        self.catching_up: asyncio.Task[None] | None = None
        self.again = False

    async def send(self, message: dict[str, Any]) -> bool:
        if not self.open:
            return False
        try:
            async with self._lock:
                await asyncio.wait_for(self.socket.send_data(_encode(message).decode("utf-8")), SEND_TIMEOUT_S)
        except Exception:  # a closed or stuck socket: it is dropped, the others still get theirs
            self.open = False
            return False
        return True


class LiveHub:
    """Who is connected, per user, in this process; on a change feed's notice, each socket of the user is
    sent what changed since what it was last sent."""

    def __init__(self) -> None:
        self._peers: dict[str, list[Peer]] = {}
        self._db: Storage | None = None
        self._held: dict[str, int] = {}  # user -> socket changes of this process under way
        self._deferred: dict[str, int] = {}  # notices heard meanwhile, delivered when they end

    def listen(self, db: Storage, feed: ChangeFeed) -> Callable[[], None]:
        """Catch sockets up from `db` on `feed`'s notices; returns the unsubscribe."""
        self._db = db
        return feed.subscribe(self.notice, wanted=lambda: bool(self._peers))

    def notice(self, user_id: str | None, seq: int) -> None:
        """The user has changes up to `seq` (None: notices may have been missed, every socket re-reads)."""
        if user_id is None:
            for peers in list(self._peers.values()):
                for peer in peers:
                    self.catch_up_soon(peer)
            return
        if user_id in self._held:
            self._deferred[user_id] = max(seq, self._deferred.get(user_id, seq))
            return
        for peer in self._peers.get(user_id, []):
            if peer.cursor is not None and seq > peer.cursor:
                self.catch_up_soon(peer)

    @contextlib.asynccontextmanager
    async def holding(self, user_id: str) -> AsyncIterator[None]:
        """While a socket change of this process is written and sent to the user's other sockets here, its
        own notice waits: those sockets get the change in the sender's shape, once."""
        self._held[user_id] = self._held.get(user_id, 0) + 1
        try:
            yield
        finally:
            self._held[user_id] -= 1
            if not self._held[user_id]:
                del self._held[user_id]
                seq = self._deferred.pop(user_id, None)
                if seq is not None:
                    self.notice(user_id, seq)

    def catch_up_soon(self, peer: Peer) -> None:
        if self._db is None or not peer.open or peer.cursor is None:
            return
        if peer.catching_up is not None and not peer.catching_up.done():
            peer.again = True  # the running catch-up reads once more when it is done
            return
        peer.catching_up = asyncio.get_running_loop().create_task(self._catch_up(peer, self._db))

    async def _catch_up(self, peer: Peer, db: Storage) -> None:
        try:
            while peer.open:
                peer.again = False
                async with peer.lane:
                    if not await send_changes_since_cursor(db, peer):
                        self.leave(peer)
                        return
                if not peer.again:
                    return
        except Exception:  # a read that failed: the socket catches up at the next notice or SYNC_REQUEST
            log.exception("live sync: catching up a socket of %s failed", peer.user_id)

    def join(self, peer: Peer) -> None:
        self._peers.setdefault(peer.user_id, []).append(peer)

    def leave(self, peer: Peer) -> None:
        peers = self._peers.get(peer.user_id, [])
        if peer in peers:
            peers.remove(peer)
        if not peers:
            self._peers.pop(peer.user_id, None)

    def connected(self, user_id: str) -> int:
        return len(self._peers.get(user_id, []))

    async def send_to_others(self, sender: Peer, messages: list[dict[str, Any]], seqs: set[int]) -> None:
        """Send a socket change to the user's other sockets here; the rows' `seqs` are theirs (and the
        sender's) already, so the change's notice does not send them again."""
        for peer in list(self._peers.get(sender.user_id, [])):
            peer.direct.update(seqs)
            if peer is sender:
                continue
            for message in messages:
                if not await peer.send(message):
                    self.leave(peer)
                    break


# ---- messages in ----------------------------------------------------------------------------------


class InboundEvent(msgspec.Struct):
    """A client message; records stay as their verbatim bytes (an empty Raw: the field was absent)."""

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
    """A message the socket answers with `ERROR` (the connection stays open)."""


class Mutation(msgspec.Struct):
    """What a change message asks for, as an upload's records and deleted lists."""

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


def decode_message(data: str | bytes) -> InboundEvent:
    try:
        event = jsontext.decode(data, InboundEvent)  # lone surrogate escapes are JSON the app reads
    except msgspec.ValidationError as exc:
        raise BadMessage(f"Invalid sync event format: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise BadMessage("Invalid JSON format") from None
    if not isinstance(event.type, str):
        raise BadMessage("Invalid sync event format: type is missing")
    return event


def mutation_of(event: InboundEvent) -> Mutation:
    """The records a change message carries (the app's event shapes; content is judged by the pipeline)."""
    kind = event.type  # text as the client sent it: a type that is no Event is answered with ERROR

    def records(entity_type: str, raws: Iterable[msgspec.Raw]) -> list[IncomingRecord]:
        return [IncomingRecord(entity_type, bytes(raw)) for raw in raws]

    if kind in (Event.ENTRY_CREATED, Event.ENTRY_UPDATED):
        return Mutation(records(LOGBOOK_ENTRY, [_required_object(event.entry, "entry")]), {})
    if kind == Event.ENTRY_DELETED:
        return Mutation([], {LOGBOOK_ENTRY: [_required_id(event.entryId, "entryId")]})
    if kind in (Event.PIECE_ADDED, Event.PIECE_UPDATED):
        return Mutation(records(REPERTOIRE_ITEM, [_required_object(event.piece, "piece")]), {})
    if kind in (Event.PIECE_REMOVED, Event.PIECE_DISSOCIATED):
        return Mutation([], {REPERTOIRE_ITEM: [_required_id(event.scoreId, "scoreId")]})
    if kind in (Event.PLAN_CREATED, Event.PLAN_UPDATED):
        plan = records(PRACTICE_PLAN, [_required_object(event.plan, "plan")])
        return Mutation(plan + records(PLAN_OCCURRENCE, event.occurrences), {})
    if kind == Event.PLAN_OCCURRENCE_COMPLETED:
        return Mutation(records(PLAN_OCCURRENCE, [_required_object(event.occurrence, "occurrence")]), {})
    if kind == Event.BULK_SYNC:
        return Mutation(records(LOGBOOK_ENTRY, event.entries), {})
    if kind == Event.REPERTOIRE_BULK_SYNC:
        return Mutation(records(REPERTOIRE_ITEM, event.pieces), {})
    raise BadMessage(f"Invalid sync event format: unknown type {kind[:40]!r}")


def last_seq_of(event: InboundEvent) -> int:
    value = event.lastSeq
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMessage("Invalid sync event format: lastSeq must be a non-negative integer")
    return value


# ---- messages out ---------------------------------------------------------------------------------


def _document(entity_type: str, row: SyncRow) -> dict[str, Any] | None:
    try:
        document = jsontext.decode(row.data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    if entity_type == REPERTOIRE_ITEM and not document.get("scoreId"):
        document["scoreId"] = row.entity_id  # the client keys its pieces by scoreId
    return lowercase_enums(entity_type, document)


def _changes_after(user_id: str, entity_type: str, after_seq: int) -> Callable[[ReadUnit], list[SyncRow]]:
    return lambda unit: unit.changes_after(user_id, entity_type, after_seq, SYNC_CHUNK)


def row_event(
    entity_type: str, row: SyncRow, *, created: bool, removal: Event = Event.PIECE_REMOVED
) -> dict[str, Any] | None:
    """The message that tells a client about one stored row (None for types the socket does not carry)."""
    seq = row.seq
    now = _now_iso()
    if row.deleted_at is not None:
        if entity_type == LOGBOOK_ENTRY:
            return {"type": Event.ENTRY_DELETED, "entryId": row.entity_id, "timestamp": now, "seq": seq}
        if entity_type == REPERTOIRE_ITEM:
            return {"type": removal, "scoreId": row.entity_id, "timestamp": now, "seq": seq}
    document = _document(entity_type, row)
    if document is None:
        return None
    if entity_type == LOGBOOK_ENTRY:
        return {"type": Event.ENTRY_CREATED if created else Event.ENTRY_UPDATED, "entry": document, "timestamp": now,
                "seq": seq}
    if entity_type == REPERTOIRE_ITEM:
        return {"type": Event.PIECE_ADDED if created else Event.PIECE_UPDATED, "piece": document, "timestamp": now,
                "seq": seq}
    if entity_type == PRACTICE_PLAN:
        if row.deleted_at is not None:
            document["deletedAt"] = row.deleted_at
        return {"type": Event.PLAN_CREATED if created else Event.PLAN_UPDATED, "plan": document, "timestamp": now,
                "seq": seq}
    if entity_type == PLAN_OCCURRENCE:
        if row.deleted_at is not None:
            document["deletedAt"] = row.deleted_at
        return {"type": Event.PLAN_OCCURRENCE_COMPLETED, "occurrence": document, "timestamp": now, "seq": seq}
    return None


# Keyed by str: the rows' entity types are sync_data's text, whatever the app wrote there.
_BULK: dict[str, tuple[Event, str]] = {
    LOGBOOK_ENTRY: (Event.BULK_SYNC, "entries"), REPERTOIRE_ITEM: (Event.REPERTOIRE_BULK_SYNC, "pieces"),
}
# What a catch-up sends: what SYNC_REQUEST sends, and plans as the app's HTTP pushes broadcast them.
CATCH_UP_TYPES = (LOGBOOK_ENTRY, REPERTOIRE_ITEM, PRACTICE_PLAN, PLAN_OCCURRENCE)


def change_messages(rows: Iterable[tuple[str, SyncRow]]) -> Iterator[dict[str, Any]]:
    """Rows in seq order as a SYNC_REQUEST answer sends them: each run of live entries (or pieces) one bulk
    message of at most SYNC_CHUNK, `lastSeq` its last row's; a deletion, a plan or an occurrence a message
    of its own, after what came before it."""
    run: str | None = None
    payload: list[dict[str, Any]] = []
    payload_seq = 0

    def flush() -> dict[str, Any]:
        assert run is not None
        kind, key = _BULK[run]
        return {"type": kind, key: payload, "timestamp": _now_iso(), "lastSeq": payload_seq}

    for entity_type, row in rows:
        if entity_type in _BULK and row.deleted_at is None:
            document = _document(entity_type, row)
            if document is None:
                continue
            if payload and (run != entity_type or len(payload) == SYNC_CHUNK):
                yield flush()
                payload = []
            run, payload_seq = entity_type, row.seq or payload_seq
            payload.append(document)
            continue
        if payload:
            yield flush()
            payload = []
        message = row_event(entity_type, row, created=False)
        if message is not None:
            yield {**message, "lastSeq": row.seq}
    if payload:
        yield flush()


def records_in(message: dict[str, Any]) -> int:
    for key in ("entries", "pieces"):
        if key in message:
            return len(message[key])
    return 1


async def send_changes_since_cursor(db: Storage, peer: Peer) -> bool:
    """Send `peer` its user's rows changed after its cursor (but those it was sent directly), in seq order,
    read in one snapshot so that no change between two reads is stepped over; False when it is gone."""
    after = peer.cursor
    if after is None:
        return True
    user_id = peer.user_id

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

    rows = sorted(await db.read(read), key=lambda pair: pair[1].seq or 0)
    if not rows:
        return True
    highest = max(after, rows[-1][1].seq or after)
    for message in change_messages(pair for pair in rows if pair[1].seq not in peer.direct):
        if not await peer.send(message):
            return False
    peer.cursor = max(peer.cursor or 0, highest)
    peer.direct = {seq for seq in peer.direct if seq > peer.cursor}
    return True


async def initial_cursor(db: Storage, user_id: str) -> int:
    """Where a new socket's catch-ups start: the user's last sync token (the change counter when their
    last upload committed, so no change of theirs still being written is below it), else the counter."""

    def read(unit: ReadUnit) -> int:
        current = unit.current_seq()
        metadata = unit.sync_metadata(user_id)
        token = metadata.last_sync_token if metadata is not None else None
        return min(current, int(token)) if token is not None and token.isdigit() else current

    return await db.read(read)


def fold(kind: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-row messages regrouped as the sender's message was: a bulk sync stays one bulk message (with
    deletions beside it), a plan keeps its occurrences."""
    if not events:
        return []
    bulk: dict[str, tuple[str, str]] = {
        Event.BULK_SYNC: ("entry", "entries"), Event.REPERTOIRE_BULK_SYNC: ("piece", "pieces"),
    }
    if kind in bulk:
        one, many = bulk[kind]
        live = [e for e in events if one in e]
        rest = [e for e in events if one not in e]
        folded = [{"type": kind, many: [e[one] for e in live], "timestamp": _now_iso(),
                   "lastSeq": max(e["seq"] for e in live)}] if live else []
        return folded + rest
    if kind in (Event.PLAN_CREATED, Event.PLAN_UPDATED):
        plans = [e for e in events if "plan" in e]
        occurrences = [e["occurrence"] for e in events if "occurrence" in e]
        if plans:
            message = {**plans[0], "type": kind, "seq": max(e["seq"] for e in events)}
            if occurrences:
                message["occurrences"] = occurrences
            return [message]
    return events


# ---- the socket -----------------------------------------------------------------------------------

_TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """The client sends its JWT in the socket's query string, which servers log with the path: a log line
    must never carry a usable token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_QUERY.sub("[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub("[redacted]", record.msg)
        return True


def redact_tokens_in_server_logs() -> None:
    """Installed once per process on the loggers uvicorn writes request lines to."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())



class Refusal(msgspec.Struct, frozen=True):
    status: int
    error: str


class Claims(msgspec.Struct, frozen=True):
    sub: str
    email: str | None


def authenticate(secret: str, user_id: str | None, token: str | None) -> Refusal | Claims:
    """The claims of a valid token, or why the socket is refused, as the worker checks: both parameters
    present, the token signed with the app's secret and unexpired (`exp` and `sub` required, as on HTTP)."""
    if not user_id or not token:
        return Refusal(400, "Missing userId or token")
    try:
        token_claims = Token.decode(token, secret, "HS256", require_claims=["exp", "sub"])
    except NotAuthorizedException:
        return Refusal(401, "Invalid or expired token")
    email = token_claims.extras.get("email")
    return Claims(token_claims.sub, email if isinstance(email, str) and email else None)


async def refuse(socket: WebSocket[Any, Any, Any], status: int, error: str) -> None:
    """Refuse the handshake with an HTTP status and the worker's JSON body, where the server can send one
    (the ASGI websocket denial extension); else close it before accepting (which browsers see as 403)."""
    await socket.receive()  # the websocket.connect message
    extensions = socket.scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        body = _encode({"error": error})
        await socket.send(cast(Any, {
            "type": "websocket.http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }))
        await socket.send(cast(Any, {"type": "websocket.http.response.body", "body": body}))
    else:
        await socket.close(code=1008, reason=error)


class LiveSession:
    """One open socket: answers its messages, through the pipeline for changes."""

    def __init__(self, db: Storage, hub: LiveHub, peer: Peer, principal: Owner) -> None:
        self.db = db
        self.hub = hub
        self.peer = peer
        self.principal = principal

    async def handle(self, data: str | bytes) -> None:
        try:
            event = decode_message(data)
            if event.type == Event.PING:
                await self.peer.send({"type": Event.PONG, "timestamp": _now_iso()})
            elif event.type == Event.SYNC_REQUEST:
                await self.sync_request(last_seq_of(event))
            else:
                await self.apply(event, mutation_of(event), data)
        except BadMessage as bad:
            await self.error(str(bad))
        except Exception:  # never crash a socket on one message: the client is told and may send it again
            log.exception("live sync: message for %s failed", self.peer.user_id)
            await self.error("The service could not process this message; send it again")

    async def error(self, text: str) -> None:
        await self.peer.send({"type": Event.ERROR, "error": text, "timestamp": _now_iso()})

    async def sync_request(self, last_seq: int) -> None:
        async with self.peer.lane:
            await self._sync_request(last_seq)

    async def _sync_request(self, last_seq: int) -> None:
        user = self.principal.user
        if user is None:
            await self.peer.send({"type": Event.SYNC_RESPONSE, "message": "No new data to sync",
                                  "timestamp": _now_iso(), "lastSeq": last_seq})
            return
        current = await self.db.read(lambda unit: unit.current_seq())
        # A counter beyond this database's own sequence was given by another server (the app's, before
        # the loss): none of the recovered rows would be newer than it, so the device gets everything.
        if last_seq > current:
            last_seq = 0
        sent = 0
        highest = last_seq
        for entity_type in (LOGBOOK_ENTRY, REPERTOIRE_ITEM):
            cursor = last_seq
            while True:
                rows = await self.db.read(_changes_after(user.id, entity_type, cursor))
                # Sent in seq order: what came before a deletion goes first.
                for message in change_messages((entity_type, row) for row in rows):
                    await self.peer.send(message)
                    sent += records_in(message)
                if rows:
                    cursor = rows[-1].seq or cursor  # changes_after returns rows with a seq only
                    highest = max(highest, cursor)
                if len(rows) < SYNC_CHUNK:
                    break
        # From here on, changes committed anywhere reach this socket unasked.
        self.peer.cursor = max(highest, self.peer.cursor or 0)
        self.peer.direct = {seq for seq in self.peer.direct if seq > self.peer.cursor}
        await self.peer.send({
            "type": Event.SYNC_RESPONSE,
            "message": "No new data to sync" if sent == 0 else "Sync complete",
            "timestamp": _now_iso(),
            "lastSeq": highest,
        })

    async def apply(self, event: InboundEvent, mutation: Mutation, data: str | bytes) -> None:
        principal = self.principal
        raw = data.encode("utf-8") if isinstance(data, str) else data
        upload = Upload(
            owner=principal.owner,
            user=principal.user,
            device_id=None,  # the socket names no device
            source=SOURCE,
            records=mutation.records,
            deleted=dict(mutation.deleted),
            email=principal.email,
            alias_from=principal.alias_from,
            quarantine_reason=principal.problem or UNKNOWN_USER,
            quarantine_detail=principal.detail,
            payload_sha256=sha256_hex(raw),
        )
        async with self.hub.holding(self.peer.user_id):
            result = await ingest(self.db, upload)  # the same use case as every HTTP upload
            assert isinstance(result, UploadResult)  # no idempotency key: never a replayed answer
            await self.answer(event.type, result.receipt.results)

    async def answer(self, kind: str, results: list[RecordResult]) -> None:
        user = self.principal.user
        quarantined = [r for r in results if r.outcome == oc.QUARANTINED]
        if quarantined:
            reasons = ", ".join(f"{r.entity_id or '?'}: {r.reason}" for r in quarantined[:20])
            await self.error(f"Invalid data, kept for review and not synced ({reasons})")
        wanted = [r for r in results if r.entity_id is not None and r.outcome in _CHANGED | _LOST]
        if user is None or not wanted:
            return
        by_type: dict[str, list[str]] = {}
        for r in wanted:
            by_type.setdefault(r.entity_type, []).append(cast(str, r.entity_id))
        user_id = user.id

        def changed_rows(unit: ReadUnit) -> dict[tuple[str, str], SyncRow]:
            return {(entity_type, found.entity_id): found for entity_type, ids in by_type.items()
                    for found in unit.rows_of(user_id, entity_type, sorted(set(ids)))}

        rows = await self.db.read(changed_rows)
        removal = Event.PIECE_DISSOCIATED if kind == Event.PIECE_DISSOCIATED else Event.PIECE_REMOVED
        to_others: list[dict[str, Any]] = []
        to_sender: list[dict[str, Any]] = []
        for r in wanted:
            row = rows.get((r.entity_type, cast(str, r.entity_id)))
            if row is None or row.seq is None:
                continue
            message = row_event(r.entity_type, row, created=r.outcome == oc.INSERTED, removal=removal)
            if message is not None:
                (to_others if r.outcome in _CHANGED else to_sender).append(message)
        for message in to_sender:
            await self.peer.send(message)
        if to_others:
            await self.peer.send({"type": Event.SYNC_RESPONSE, "message": "Mutation applied", "timestamp": _now_iso(),
                                  "lastSeq": max(m["seq"] for m in to_others)})
            await self.hub.send_to_others(self.peer, fold(kind, to_others), {m["seq"] for m in to_others})


def live_sync_handler(secret: str, hub: LiveHub) -> WebsocketRouteHandler:
    """The `/sync/ws` route, bound to the app's secret and this process's hub."""

    async def live_sync(socket: WebSocket[Any, Any, Any]) -> None:
        user_id = socket.query_params.get("userId")
        checked = authenticate(secret, user_id, socket.query_params.get("token"))
        if isinstance(checked, Refusal):
            await refuse(socket, checked.status, checked.error)
            return
        db: Storage = socket.app.state.db
        principal = await owner_for(db, checked.sub, checked.email)
        # The client names the user it was told by `/api/user/me`: the token's own, or the one its email
        # resolved to.
        if user_id not in {checked.sub, principal.owner}:
            await refuse(socket, 403, "User ID mismatch")
            return
        await socket.accept()
        peer = Peer(socket, principal.owner)
        if principal.user is not None:
            peer.cursor = await initial_cursor(db, principal.user.id)
        hub.join(peer)
        session = LiveSession(db, hub, peer, principal)
        try:
            await peer.send({"type": Event.WELCOME, "message": WELCOME_MESSAGE, "timestamp": _now_iso()})
            hub.catch_up_soon(peer)  # a change committed between reading the cursor and joining the hub
            while True:
                message = await socket.receive()
                if message["type"] != "websocket.receive":
                    break
                data = message.get("text")
                await session.handle(data if data is not None else message.get("bytes") or b"")
        except WebSocketDisconnect:
            pass
        finally:
            peer.open = False
            hub.leave(peer)
            with contextlib.suppress(Exception):
                await socket.close()

    return websocket("/sync/ws", name="live_sync")(live_sync)
