"""The app's live-sync socket, `GET /sync/ws?userId=&token=` (the app's sync worker, CONTRACT section 4).

Devices that already hold data learn of other devices' changes only here: `SYNC_REQUEST {lastSeq}` is
answered with every row of the user changed after that `seq` (deletions included), and a change a device
sends (`ENTRY_*`, `PIECE_*`, `PLAN_*`, `BULK_SYNC`, `REPERTOIRE_BULK_SYNC`) is one upload through the same
pipeline as every HTTP upload (source `socket`), then sent to the user's other open sockets as the
stored rows say, the way the app's worker sends it.

This module is an adapter: it authenticates, parses frames, calls the socket's use cases
(`service.usecases.live`: which event is which upload, what is answered and broadcast) and shapes stored
rows into the worker's frames. The hub holds the sockets of this process and listens to the change feed
(`service.changefeed`): a change committed by any front end (an HTTP push, a replay, another replica's
socket) reaches every open socket of its user as the rows changed after what that socket was last sent.
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
from service.domain.documents import lowercase_enums
from service.domain.owners import Owner
from service.domain.records import LOGBOOK_ENTRY, PLAN_OCCURRENCE, PRACTICE_PLAN, REPERTOIRE_ITEM
from service.domain.sync_events import SyncEventType as Event
from service.domain.times import ms_to_iso_z
from service.store.interface import Storage
from service.store.rows import SyncRow
from service.usecases.live import (
    SYNC_CHUNK,
    BadMessage,
    ChangeOutcome,
    SocketEvent,
    StoredChange,
    apply_change,
    changes_since,
    initial_cursor,
    last_seq_of,
    sync_request,
)
from service.usecases.live import mutation_of as mutation_of  # what a frame asks for, for the socket's tests
from service.usecases.users import owner_for

log = logging.getLogger("service.live")

SEND_TIMEOUT_S = 10.0  # a socket that takes longer to take a message is dropped
WELCOME_MESSAGE = "Connected to Mirubato sync"

_encode = jsontext.encode  # a lone surrogate goes out as JSON.stringify writes it


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


def decode_message(data: str | bytes) -> SocketEvent:
    try:
        event = jsontext.decode(data, SocketEvent)  # lone surrogate escapes are JSON the app reads
    except msgspec.ValidationError as exc:
        raise BadMessage(f"Invalid sync event format: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise BadMessage("Invalid JSON format") from None
    if not isinstance(event.type, str):
        raise BadMessage("Invalid sync event format: type is missing")
    return event


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
    """Send `peer` its user's rows changed after its cursor (but those it was sent directly), in seq order;
    False when it is gone."""
    after = peer.cursor
    if after is None:
        return True
    rows = await changes_since(db, peer.user_id, after)
    if not rows:
        return True
    highest = max(after, rows[-1][1].seq or after)
    for message in change_messages(pair for pair in rows if pair[1].seq not in peer.direct):
        if not await peer.send(message):
            return False
    peer.cursor = max(peer.cursor or 0, highest)
    peer.direct = {seq for seq in peer.direct if seq > peer.cursor}
    return True


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
                await self.apply(event, data)
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
        sent = 0

        async def send(entity_type: str, rows: list[SyncRow]) -> None:
            nonlocal sent
            # Sent in seq order: what came before a deletion goes first.
            for message in change_messages((entity_type, row) for row in rows):
                await self.peer.send(message)
                sent += records_in(message)

        highest = await sync_request(self.db, user.id, last_seq, send)
        # From here on, changes committed anywhere reach this socket unasked.
        self.peer.cursor = max(highest, self.peer.cursor or 0)
        self.peer.direct = {seq for seq in self.peer.direct if seq > self.peer.cursor}
        await self.peer.send({
            "type": Event.SYNC_RESPONSE,
            "message": "No new data to sync" if sent == 0 else "Sync complete",
            "timestamp": _now_iso(),
            "lastSeq": highest,
        })

    async def apply(self, event: SocketEvent, data: str | bytes) -> None:
        payload = data.encode("utf-8") if isinstance(data, str) else data
        async with self.hub.holding(self.peer.user_id):
            outcome = await apply_change(self.db, self.principal, event, payload)
            await self.answer(event.type, outcome)

    async def answer(self, kind: str, outcome: ChangeOutcome) -> None:
        if outcome.quarantined:
            reasons = ", ".join(f"{r.entity_id or '?'}: {r.reason}" for r in outcome.quarantined[:20])
            await self.error(f"Invalid data, kept for review and not synced ({reasons})")
        removal = Event.PIECE_DISSOCIATED if kind == Event.PIECE_DISSOCIATED else Event.PIECE_REMOVED

        def messages(changes: list[StoredChange]) -> list[dict[str, Any]]:
            shaped = (row_event(c.entity_type, c.row, created=c.created, removal=removal) for c in changes)
            return [message for message in shaped if message is not None]

        for message in messages(outcome.lost):
            await self.peer.send(message)
        to_others = messages(outcome.changed)
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
