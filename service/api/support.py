"""Support staff: where does each user's recovery stand, and re-driving what was quarantined.

Every route needs a caller whose `users.role` is admin, read from the database on every request.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from service.api.auth import Principal, requires_admin
from service.api.errors import FieldError, problem_responses
from service.api.rendering import recovery_response
from service.api.schemas import RecoveryUploadResponse
from service.pipeline import IncomingRecord, Upload, ingest_batch
from service.store import progress
from service.store.database import Database, GuardedConnection
from service.store.progress import LedgerEntry, QuarantinedRecord, UserListItem, UserProgress
from service.store.uploads import find_user

_PROBLEMS = problem_responses(400, 401, 403, 404)
UserIdPath = Annotated[str, PathParameter(description="users.id of the user")]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page")]


class UserDetail(msgspec.Struct):
    progress: UserProgress
    latest_uploads: list[LedgerEntry]


class UserPage(msgspec.Struct):
    items: list[UserListItem]
    next_cursor: str | None


class QuarantinePage(msgspec.Struct):
    items: list[QuarantinedRecord]
    next_cursor: str | None


class Summary(msgspec.Struct):
    users_by_state: dict[str, int]
    records_by_outcome: dict[str, int]
    uploads_last_hour: int
    quarantined_waiting: int
    quarantine_owners: int


class RedriveResult(msgspec.Struct):
    redriven: int
    resolved: int
    still_quarantined: int
    uploads: list[RecoveryUploadResponse]


class ReviewResult(msgspec.Struct):
    reviewed: int
    state: str


def _cursor_value(cursor: str | None, kind: type) -> Any:
    if cursor is None:
        return None
    try:
        value = progress.decode_cursor(cursor)
    except ValueError as exc:
        raise FieldError(400, "cursor", str(exc)) from exc
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FieldError(400, "cursor", "not a cursor this service issued")
    return value


async def _progress_or_404(conn: GuardedConnection, user_id: str) -> UserProgress:
    return _found_or_404(await conn.run(lambda sync: progress.user_progress(sync, user_id)), user_id)


def _found_or_404(found: UserProgress | None, user_id: str) -> UserProgress:
    if found is None:
        raise NotFoundException(f"No user and no recovery data for {user_id!r}")
    return found


def _redrive_record(row: Any) -> tuple[str, IncomingRecord | Any]:
    """A kept deletion-list entry goes back to the deleted list; any other record as it came."""
    raw: bytes = row["raw"].encode()
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "record", IncomingRecord(row["entity_type"], raw)
    if isinstance(value, dict) and set(value) == {"entity_type", "id", "deleted"} and value["deleted"] is True:
        return "deleted", value["id"]
    return "record", IncomingRecord(row["entity_type"], raw, value)


class SupportController(Controller):
    path = "/v1/support"
    tags = ("support",)
    guards = (requires_admin,)

    @get(
        "/users/{user_id:str}",
        summary="One user's recovery: progress and latest uploads",
        responses=_PROBLEMS,
    )
    async def user(self, request: Request[Principal, Any, Any], user_id: UserIdPath) -> UserDetail:
        db: Database = request.app.state.db
        # One hop to a reader for the whole page: it stays quick while large uploads are written.
        found, latest = await db.read_run(
            lambda conn: (progress.user_progress(conn, user_id), progress.latest_ledger(conn, user_id))
        )
        return UserDetail(_found_or_404(found, user_id), latest)

    @get("/users", summary="Search and list users with their recovery state", responses=_PROBLEMS)
    async def users(
        self,
        request: Request[Principal, Any, Any],
        email: Annotated[str | None, QueryParameter(description="part of the email, any case")] = None,
        recovery_state: Annotated[
            str | None, QueryParameter(name="state", description=" | ".join(progress.STATES))
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> UserPage:
        if recovery_state is not None and recovery_state not in progress.STATES:
            raise FieldError(400, "state", f"must be one of {', '.join(progress.STATES)}")
        after = _cursor_value(cursor, str)
        db: Database = request.app.state.db
        async with db.read() as conn:
            items = await progress.list_users(
                conn, email=email, state=recovery_state, after=after, limit=limit + 1
            )
        next_cursor = progress.encode_cursor(items[limit - 1].user_id) if len(items) > limit else None
        return UserPage(items[:limit], next_cursor)

    @get("/summary", summary="Users per state, records per outcome, recent uploads", responses=_PROBLEMS)
    async def summary(self, request: Request[Principal, Any, Any]) -> Summary:
        db: Database = request.app.state.db
        async with db.read() as conn:
            return msgspec.convert(await progress.summary(conn), Summary)

    @get(
        "/users/{user_id:str}/quarantine",
        summary="The user's quarantined records, verbatim, with reasons",
        responses=_PROBLEMS,
    )
    async def quarantine(
        self,
        request: Request[Principal, Any, Any],
        user_id: UserIdPath,
        cursor: Cursor = None,
        limit: Limit = 50,
        include_resolved: Annotated[bool, QueryParameter(description="also list re-driven records")] = False,
    ) -> QuarantinePage:
        after = _cursor_value(cursor, int)
        db: Database = request.app.state.db
        async with db.read() as conn:
            await _progress_or_404(conn, user_id)
            items = await progress.quarantine_page(
                conn, user_id, after=after, limit=limit + 1, include_resolved=include_resolved
            )
        next_cursor = progress.encode_cursor(items[limit - 1].id) if len(items) > limit else None
        return QuarantinePage(items[:limit], next_cursor)

    @post(
        "/users/{user_id:str}/redrive",
        status_code=200,
        summary="Run the user's quarantined records through the pipeline again",
        responses=_PROBLEMS,
        description="For example once the user exists again. Records kept under a token with the user's "
        "email are included. Each re-driven record gets a new outcome; the old quarantine rows are marked "
        "resolved (never deleted), and what still cannot go in is quarantined again.",
    )
    async def redrive(self, request: Request[Principal, Any, Any], user_id: UserIdPath) -> RedriveResult:
        db: Database = request.app.state.db
        async with db.read() as conn:
            user = await find_user(conn, user_id)
            if user is None:
                raise NotFoundException(f"No user {user_id!r}: re-create the user first, then re-drive")
            waiting = await progress.waiting_quarantine(conn, user.id, user.email)
        by_device: dict[str | None, Upload] = {}
        redriven_ids: dict[str, list[int]] = {}
        for row in waiting:
            upload = by_device.get(row["device_id"])
            if upload is None:
                upload = Upload(owner=user.id, user=user, device_id=row["device_id"], source="redrive", records=[],
                                email=user.email, upload_id=f"upl_{uuid.uuid4().hex}")
                by_device[row["device_id"]] = upload
            kind, item = _redrive_record(row)
            if kind == "deleted":
                upload.deleted.setdefault(row["entity_type"], []).append(item)
            else:
                upload.records.append(item)
            assert upload.upload_id is not None
            redriven_ids.setdefault(upload.upload_id, []).append(row["id"])

        async def mark_resolved(conn: GuardedConnection) -> None:
            for upload_id, ids in redriven_ids.items():
                await progress.resolve_quarantine(conn, ids, upload_id)

        uploads = list(by_device.values())
        results = await ingest_batch(db, uploads, in_transaction=mark_resolved) if uploads else []
        still = sum(r.receipt.counts()["quarantined"] for r in results)
        return RedriveResult(
            redriven=len(waiting),
            resolved=len(waiting) - still,
            still_quarantined=still,
            uploads=[recovery_response(r) for r in results],
        )

    @post(
        "/users/{user_id:str}/review",
        status_code=200,
        summary="Mark the user's archived merge conflicts as reviewed",
        responses=_PROBLEMS,
        description="Archived versions stay kept; reviewing only stops them holding the user in needs_review.",
    )
    async def review(self, request: Request[Principal, Any, Any], user_id: UserIdPath) -> ReviewResult:
        db: Database = request.app.state.db
        async with db.write() as conn:
            await _progress_or_404(conn, user_id)
            reviewed = await progress.mark_archive_reviewed(conn, user_id)
            state = await progress.user_state(conn, user_id)
        return ReviewResult(reviewed, state)
