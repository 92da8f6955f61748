"""The app's goals and repertoire routes its web client calls, answered from the recovered `sync_data` rows.

The app keeps these in tables of their own (`goals`, `user_repertoire`) that the service does not
recreate: reads come from the `goal` and `repertoire_item` documents, in the app's answer shapes (times
in epoch seconds, as those tables hold them), and every repertoire write is an upload of a
`repertoire_item` record through the pipeline (a removal is a tombstone, never a SQL DELETE).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from service import jsontext
from service.api.errors import FieldError, problem_responses
from service.api.schemas import (
    Dissociated,
    GoalItem,
    GoalList,
    Message,
    RecentSession,
    RepertoireCore,
    RepertoireCreate,
    RepertoireCreated,
    RepertoireItemView,
    RepertoireList,
    RepertoireStats,
    RepertoireStatsBody,
    RepertoireUpdate,
)
from service.api.sync import DeviceHeader, IdempotencyHeader, header_token, require_json_body
from service.domain.normalise import normalise_score_id
from service.domain.owners import Owner
from service.domain.records import GOAL, LOGBOOK_ENTRY, REPERTOIRE_ITEM
from service.domain.sources import Source
from service.domain.times import ms_to_iso_z, to_epoch_ms
from service.store.interface import ReadUnit, Storage
from service.store.rows import StoredDocument, SyncRow
from service.usecases.ingest import (
    Idempotency,
    IdempotencyConflict,
    IncomingRecord,
    Replayed,
    Upload,
    ingest,
    sha256_hex,
)

DocumentRow = StoredDocument | SyncRow  # a stored document and its row times

SOURCE = Source.REPERTOIRE
_encode = msgspec.json.Encoder().encode
# Canonical Scorebook ids (`score_...`); the app also removes the `-unknown` form old clients made of them.
_CANONICAL_PREFIX = "score_"

ScoreIdPath = Annotated[str, PathParameter(description="The piece's score id (normalised as the app does)")]


def _seconds(*values: object) -> int | None:
    """Epoch seconds of the first value that is a time (documents hold ISO strings or epoch ms)."""
    for value in values:
        ms = to_epoch_ms(value) if value is not None else None
        if ms is not None:
            return ms // 1000
    return None


def _decode(row: DocumentRow) -> dict[str, Any]:
    try:
        document = jsontext.decode(row.data)
    except (msgspec.DecodeError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _pick(document: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if document.get(key) is not None:
            return document[key]
    return None


async def _live(db: Storage, user_id: str, entity_type: str) -> list[tuple[DocumentRow, dict[str, Any]]]:
    rows = await db.read(lambda unit: unit.live_documents_of_type(user_id, entity_type))
    return [(row, _decode(row)) for row in rows]


# ---- goals ----------------------------------------------------------------------------------------


def _goal_item(row: Any, goal: dict[str, Any], entries: list[dict[str, Any]]) -> GoalItem:
    goal_id = str(goal["id"]) if isinstance(goal.get("id"), str) else str(row.entity_id)
    related = sum(
        1 for e in entries
        if any(isinstance(ids, list) and goal_id in ids for ids in (e.get("goal_ids"), e.get("goalIds")))
    )
    return GoalItem(
        id=goal_id,
        title=goal.get("title"),
        description=goal.get("description"),
        type=goal.get("type"),
        targetValue=_pick(goal, "target_value", "targetValue"),
        currentValue=_pick(goal, "current_value", "currentValue", "progress"),
        targetDate=_pick(goal, "target_date", "targetDate"),
        status=goal.get("status"),
        scoreId=_pick(goal, "score_id", "scoreId"),
        measures=goal.get("measures"),
        practicePlan=_pick(goal, "practice_plan", "practicePlan"),
        milestones=goal.get("milestones"),
        relatedSessions=related,
        createdAt=_seconds(goal.get("created_at"), goal.get("createdAt"), row.created_at),
        updatedAt=_seconds(goal.get("updated_at"), goal.get("updatedAt"), row.updated_at),
    )


class GoalsController(Controller):
    path = "/api/goals"
    tags = ("app client",)

    @get("/", summary="The caller's goals (the app's shape)", responses=problem_responses(401))
    async def list_goals(
        self,
        request: Request[Owner, Any, Any],
        status: Annotated[str | None, QueryParameter(name="status")] = None,
        type_: Annotated[str | None, QueryParameter(name="type")] = None,
        score_id: Annotated[str | None, QueryParameter(name="scoreId")] = None,
    ) -> GoalList:
        """Live `goal` documents, newest first, with the number of live entries naming each."""
        principal = request.user
        if principal.user is None:
            return GoalList(goals=[])
        db: Storage = request.app.state.db
        goals = await _live(db, principal.user.id, GOAL)
        entries = [doc for _, doc in await _live(db, principal.user.id, LOGBOOK_ENTRY)]
        items = [_goal_item(row, doc, entries) for row, doc in goals]
        items = [
            g for g in items
            if (status is None or g.status == status) and (type_ is None or g.type == type_)
            and (score_id is None or g.scoreId == score_id)
        ]
        return GoalList(goals=items)


# ---- repertoire -----------------------------------------------------------------------------------


def _core(row: Any, item: dict[str, Any]) -> RepertoireCore:
    links = item.get("referenceLinks")
    return RepertoireCore(
        id=item["id"] if isinstance(item.get("id"), str) else row.entity_id,
        scoreId=row.entity_id,
        status=item.get("status"),
        difficultyRating=_pick(item, "difficultyRating", "difficulty_rating"),
        personalNotes=_pick(item, "personalNotes", "personal_notes"),
        referenceLinks=links if isinstance(links, list) else [],
        createdAt=_seconds(item.get("createdAt"), item.get("created_at"), row.created_at),
        updatedAt=_seconds(item.get("updatedAt"), item.get("updated_at"), row.updated_at),
    )


def _sessions(entries: list[dict[str, Any]], score_ids: set[str]) -> list[dict[str, Any]]:
    """The entries that practised a piece: by the entry's `scoreId` (as the app joins), or by one of its
    pieces' ids, since the app's own push keeps no `scoreId` in what it stores."""

    def names(entry: dict[str, Any]) -> bool:
        if entry.get("scoreId") in score_ids:
            return True
        pieces = entry.get("pieces")
        return isinstance(pieces, list) and any(isinstance(p, dict) and p.get("id") in score_ids for p in pieces)

    return [e for e in entries if names(e)]


def _js_number(value: float | None) -> int | float | None:
    """A whole number as JSON.parse gives it (`3`, not `3.0`)."""
    return int(value) if value is not None and value.is_integer() else value


def _number(value: Any) -> int | float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _view(row: Any, item: dict[str, Any], entries: list[dict[str, Any]]) -> RepertoireItemView:
    core = _core(row, item)
    sessions = _sessions(entries, {core.scoreId})
    times = [s["timestamp"] for s in sessions if isinstance(s.get("timestamp"), int | float)]
    return RepertoireItemView(
        id=core.id, scoreId=core.scoreId, status=core.status, difficultyRating=core.difficultyRating,
        personalNotes=core.personalNotes, referenceLinks=core.referenceLinks,
        practiceCount=len({s.get("id") for s in sessions}),
        totalPracticeTime=sum(_number(s.get("duration")) for s in sessions),
        lastPracticed=max(times) if times else None,
        createdAt=core.createdAt, updatedAt=core.updatedAt,
    )


def _candidates(score_id: str) -> list[str]:
    """The ids a removal covers: the normalised one, and the `-unknown` form old clients made of a
    canonical Scorebook id (as the app's own DELETE does)."""
    normal = normalise_score_id(score_id)
    return [normal, f"{normal}-unknown"] if normal.lower().startswith(_CANONICAL_PREFIX) else [normal]


def _title_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _piece_names(sessions: list[dict[str, Any]], candidates: list[str]) -> tuple[str, str]:
    """The piece's title and composer as the app finds them: from its first log, else from its id."""
    for entry in sessions[:1]:
        listed = entry.get("pieces")
        pieces: list[Any] = listed if isinstance(listed, list) else []
        named = [p for p in pieces if isinstance(p, dict) and p.get("id") in candidates]
        head = named[0] if named else (pieces[0] if pieces and isinstance(pieces[0], dict) else {})
        title = entry.get("scoreTitle") or head.get("title") or "Unknown Piece"
        composer = entry.get("scoreComposer") or head.get("composer") or ""
        return str(title), str(composer)
    if "-" in candidates[0]:
        parts = candidates[0].split("-")
        return _title_case(parts[0]), " ".join(_title_case(word) for word in "-".join(parts[1:]).split("-"))
    return "Unknown Piece", ""


class RepertoireController(Controller):
    path = "/api/repertoire"
    tags = ("app client",)

    @get("/", summary="The caller's repertoire (the app's shape)", responses=problem_responses(401))
    async def list_items(self, request: Request[Owner, Any, Any]) -> RepertoireList:
        """Live `repertoire_item` documents, most recently changed first, with practice totals from the
        live logbook entries whose `scoreId` is the piece."""
        principal = request.user
        if principal.user is None:
            return RepertoireList(items=[])
        db: Storage = request.app.state.db
        entries = [doc for _, doc in await _live(db, principal.user.id, LOGBOOK_ENTRY)]
        items = await _live(db, principal.user.id, REPERTOIRE_ITEM)
        return RepertoireList(items=[_view(row, doc, entries) for row, doc in items])

    @get("/{score_id:str}/stats", summary="Practice statistics of one piece", responses=problem_responses(401, 404))
    async def stats(self, request: Request[Owner, Any, Any], score_id: ScoreIdPath) -> RepertoireStats:
        principal = request.user
        db: Storage = request.app.state.db
        row, item = await self._required_item(db, principal, score_id)
        assert principal.user is not None
        entries = [doc for _, doc in await _live(db, principal.user.id, LOGBOOK_ENTRY)]
        sessions = _sessions(entries, {row.entity_id})
        times = [s["timestamp"] for s in sessions if isinstance(s.get("timestamp"), int | float)]
        durations = [_number(s.get("duration")) for s in sessions]
        recent = sorted(sessions, key=lambda s: _number(s.get("timestamp")), reverse=True)[:50]
        return RepertoireStats(
            repertoire=_core(row, item),
            stats=RepertoireStatsBody(
                practiceCount=len({s.get("id") for s in sessions}),
                totalPracticeTime=sum(durations),
                avgSessionDuration=sum(durations) / len(durations) if durations else 0,
                lastPracticed=max(times) if times else None,
                firstPracticed=min(times) if times else None,
                recentSessions=[RecentSession(s.get("timestamp"), s.get("duration"), s.get("notes")) for s in recent],
            ),
        )

    @post("/", status_code=201, summary="Add a piece to the repertoire", before_request=require_json_body,
          responses=problem_responses(400, 401, 413, 415, 422))
    async def add(
        self,
        request: Request[Owner, Any, Any],
        data: JSONBody[RepertoireCreate],
        device_id: DeviceHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[Any]:
        """As the app: an existing piece is updated in place (its id and creation time kept)."""
        principal = request.user
        db: Storage = request.app.state.db
        score_id = normalise_score_id(data.scoreId)
        now_ms = int(time.time() * 1000)
        existing = await self._live_item(db, principal, [score_id])
        kept = existing[1] if existing else {}
        item_id = str(kept["id"]) if isinstance(kept.get("id"), str) else _new_id()
        status = data.status or "planned"
        created = kept.get("createdAt") if kept.get("createdAt") is not None else ms_to_iso_z(now_ms)
        document = {
            "id": item_id,
            "scoreId": score_id,
            "status": status,
            "difficultyRating": _js_number(data.difficultyRating),
            "personalNotes": data.personalNotes,
            "referenceLinks": data.referenceLinks,
            "createdAt": created,
            "updatedAt": ms_to_iso_z(now_ms),
        }
        answer = RepertoireCreated(
            id=item_id, scoreId=score_id, status=status, difficultyRating=_js_number(data.difficultyRating),
            personalNotes=data.personalNotes, referenceLinks=data.referenceLinks or [],
            createdAt=_seconds(created) or now_ms // 1000, updatedAt=now_ms // 1000,
        )
        return await upload_documents(request, REPERTOIRE_ITEM, [document], {}, device_id, idempotency_key, answer, 201)

    @put("/{score_id:str}", summary="Update a repertoire item", before_request=require_json_body,
         responses=problem_responses(400, 401, 404, 413, 415, 422))
    async def update(
        self,
        request: Request[Owner, Any, Any],
        score_id: ScoreIdPath,
        data: JSONBody[RepertoireUpdate],
        device_id: DeviceHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[Any]:
        """As the app: given fields replace the stored ones, and a status change is appended to the
        personal notes as `[STATUS_CHANGE:<time>:<old>:<new>]`."""
        principal = request.user
        db: Storage = request.app.state.db
        row, item = await self._required_item(db, principal, score_id)
        fields = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        if data.difficultyRating is not None:
            fields["difficultyRating"] = _js_number(data.difficultyRating)
        if not fields:
            return Response(Message("No fields to update"), status_code=200)
        now_ms = int(time.time() * 1000)
        old_status = item.get("status")
        if data.status is not None and data.status != old_status:
            current = item.get("personalNotes") or ""
            mark = ("\n" if current else "") + f"[STATUS_CHANGE:{ms_to_iso_z(now_ms)}:{old_status}:{data.status}]"
            fields["personalNotes"] = (data.personalNotes if data.personalNotes is not None else current) + mark
        document = {**item, **fields, "scoreId": row.entity_id}
        document["updatedAt"] = ms_to_iso_z(now_ms)
        return await upload_documents(request, REPERTOIRE_ITEM, [document], {}, device_id, idempotency_key,
                                      Message("Repertoire updated successfully"), 200)

    @delete("/{score_id:str}", status_code=200, summary="Remove a piece from the repertoire",
            responses=problem_responses(401, 404))
    async def remove(self, request: Request[Owner, Any, Any], score_id: ScoreIdPath) -> Response[Any]:
        """A tombstone for the piece (and its old `-unknown` form), at the time of the request."""
        principal = request.user
        db: Storage = request.app.state.db
        ids = await self._live_ids(db, principal, _candidates(score_id))
        if not ids:
            raise _no_such_piece()
        return await upload_documents(request, REPERTOIRE_ITEM, [], {REPERTOIRE_ITEM: ids}, None, None,
                                      Message("Removed from repertoire"), 200)

    @delete("/{score_id:str}/dissociate", status_code=200, summary="Remove a piece, keeping its practice logs",
            responses=problem_responses(401, 404))
    async def dissociate(self, request: Request[Owner, Any, Any], score_id: ScoreIdPath) -> Response[Any]:
        """As the app: the piece is removed and every entry that named it keeps the piece's title and
        composer instead of its `scoreId`, in one upload. The entries' `updatedAt` is set to now, so the
        change wins over the copies devices still hold."""
        principal = request.user
        db: Storage = request.app.state.db
        candidates = _candidates(score_id)
        ids = await self._live_ids(db, principal, candidates)
        if not ids or principal.user is None:
            raise _no_such_piece()
        sessions = _sessions([doc for _, doc in await _live(db, principal.user.id, LOGBOOK_ENTRY)], set(candidates))
        title, composer = _piece_names(sessions, candidates)
        # Only entries that name the piece by `scoreId` change (as in the app); those that list it among
        # their pieces keep it there, with its title and composer: every log is preserved either way.
        now = ms_to_iso_z(int(time.time() * 1000))
        changed = []
        for entry in sessions:
            if entry.get("scoreId") not in candidates:
                continue
            entry = {k: v for k, v in entry.items() if k not in ("scoreId", "updated_at")}
            entry["scoreTitle"], entry["scoreComposer"] = title, composer
            pieces = entry.get("pieces") if isinstance(entry.get("pieces"), list) else []
            entry["pieces"] = (
                [{"title": p.get("title") or title, "composer": p.get("composer") or composer}
                 for p in pieces if isinstance(p, dict)]
                if pieces else [{"title": title, "composer": composer}]
            )
            entry["updatedAt"] = now  # newer than the copies devices hold, so the change wins the merge
            changed.append(entry)
        answer = Dissociated("Piece dissociated from repertoire", len(sessions), title, composer)
        return await upload_documents(request, LOGBOOK_ENTRY, changed, {REPERTOIRE_ITEM: ids}, None, None, answer, 200)

    # ---- helpers ----------------------------------------------------------------------------------

    async def _live_item(
        self, db: Storage, principal: Owner, ids: list[str]
    ) -> tuple[DocumentRow, dict[str, Any]] | None:
        if principal.user is None:
            return None
        rows = await db.read(_rows_of(principal.user.id, ids))
        live = [row for row in rows if row.deleted_at is None]
        return (live[0], _decode(live[0])) if live else None

    async def _required_item(
        self, db: Storage, principal: Owner, score_id: str
    ) -> tuple[DocumentRow, dict[str, Any]]:
        """The live piece a route names by its (normalised) score id; 404 when there is none."""
        found = await self._live_item(db, principal, [normalise_score_id(score_id)])
        if found is None:
            raise _no_such_piece()
        return found

    async def _live_ids(self, db: Storage, principal: Owner, ids: list[str]) -> list[str]:
        if principal.user is None:
            return []
        rows = await db.read(_rows_of(principal.user.id, ids))
        return [row.entity_id for row in rows if row.deleted_at is None]


def _rows_of(user_id: str, ids: list[str]) -> Callable[[ReadUnit], list[SyncRow]]:
    return lambda unit: unit.rows_of(user_id, REPERTOIRE_ITEM, ids)


def _no_such_piece() -> FieldError:
    return FieldError(404, "scoreId", "no such piece in the repertoire", detail="Repertoire item not found")


async def upload_documents(
    request: Request[Owner, Any, Any],
    entity_type: str,
    documents: list[dict[str, Any]],
    deleted: dict[str, list[str]],
    device_id: str | None,
    idempotency_key: str | None,
    answer: msgspec.Struct,
    status: int,
    *,
    source: Source = SOURCE,
) -> Response[Any]:
    """An app-API write as one upload through the pipeline; with an idempotency key, a repeat of the same
    request gets the first answer and writes nothing."""
    principal = request.user
    device = header_token(device_id, "X-Device-ID")
    key = header_token(idempotency_key, "X-Idempotency-Key")
    body = await request.body()
    fingerprint = sha256_hex(f"{request.method} {request.url.path}\n".encode() + body)
    upload = Upload.of_owner(
        principal,
        device_id=device,
        source=source,
        records=[IncomingRecord(entity_type, _encode(d), d) for d in documents],
        deleted=dict(deleted),
        payload_sha256=fingerprint,
    )
    rendered = _encode(answer)
    try:
        outcome = await ingest(
            request.app.state.db,
            upload,
            idempotency=Idempotency(key, fingerprint, f"{request.method} {request.url.path}") if key else None,
            render=lambda _: rendered,
        )
    except IdempotencyConflict as exc:
        raise FieldError(
            422, "X-Idempotency-Key", "this key was used with a different request body in the last 24 hours"
        ) from exc
    content = outcome.response if isinstance(outcome, Replayed) else rendered
    return Response(content=content, media_type="application/json", status_code=status)


def _new_id() -> str:
    """A 21-character id like the app's nanoid."""
    alphabet = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
    return "".join(secrets.choice(alphabet) for _ in range(21))
