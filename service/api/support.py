"""Support staff: where does each user's recovery stand, and re-driving what was quarantined.

Every route needs a caller whose `users.role` is admin, read from the database on every request.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from service.api.auth import requires_admin
from service.api.errors import FieldError, problem_responses
from service.api.rendering import recovery_response
from service.api.schemas import RecoveryUploadResponse
from service.domain.outcomes import OutcomeCounts, keys_of
from service.domain.owners import Owner
from service.domain.progress import STATES, RecoveryState
from service.store.interface import ReadUnit, Storage
from service.store.rows import LedgerEntry, QuarantinedRecord, UserListItem, UserProgress
from service.usecases.cursors import decode_cursor, encode_cursor
from service.usecases.redrive import NoSuchUser, RedriveRaced, redrive_user
from service.usecases.support import review_user

_PROBLEMS = problem_responses(400, 401, 403, 404)
UserIdPath = Annotated[str, PathParameter(description="users.id of the user")]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page")]
# A RecoveryState, decoded as str and checked by the route, so another value is a 400 naming the states;
# the document lists them as the parameter's enum.
StateQuery = Annotated[
    str | None, QueryParameter(name="state", description=" | ".join(STATES), schema_extra={"enum": list(STATES)})
]


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
    users_by_state: Annotated[dict[str, int], keys_of(RecoveryState)]
    records_by_outcome: OutcomeCounts
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
    state: RecoveryState


_INT64 = (-(2**63), 2**63 - 1)  # what SQLite can compare a row id with


def _cursor_value(cursor: str | None, kind: type) -> Any:
    if cursor is None:
        return None
    try:
        value = decode_cursor(cursor)
    except ValueError as exc:
        raise FieldError(400, "cursor", str(exc)) from exc
    except RecursionError:  # nested past the decoder's depth: not a cursor either
        raise FieldError(400, "cursor", "not a cursor this service issued") from None
    out_of_range = isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]
    if not isinstance(value, kind) or isinstance(value, bool) or out_of_range:
        raise FieldError(400, "cursor", "not a cursor this service issued")
    return value


def _found_or_404(found: UserProgress | None, user_id: str) -> UserProgress:
    if found is None:
        raise NotFoundException(f"No user and no recovery data for {user_id!r}")
    return found


class SupportController(Controller):
    path = "/v1/support"
    tags = ("support",)
    guards = (requires_admin,)

    @get(
        "/users/{user_id:str}",
        summary="One user's recovery: progress and latest uploads",
        responses=_PROBLEMS,
    )
    async def user(self, request: Request[Owner, Any, Any], user_id: UserIdPath) -> UserDetail:
        db: Storage = request.app.state.db
        # One hop to a reader for the whole page: it stays quick while large uploads are written.
        found, latest = await db.read(lambda unit: (unit.user_progress(user_id), unit.latest_ledger(user_id)))
        return UserDetail(_found_or_404(found, user_id), latest)

    @get("/users", summary="Search and list users with their recovery state", responses=_PROBLEMS)
    async def users(
        self,
        request: Request[Owner, Any, Any],
        email: Annotated[str | None, QueryParameter(description="part of the email, any case")] = None,
        recovery_state: StateQuery = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> UserPage:
        if recovery_state is not None and recovery_state not in STATES:
            raise FieldError(400, "state", f"must be one of {', '.join(STATES)}")
        after = _cursor_value(cursor, str)
        wanted = RecoveryState(recovery_state) if recovery_state is not None else None
        db: Storage = request.app.state.db
        items = await db.read(
            lambda unit: unit.list_users(email=email, state=wanted, after=after, limit=limit + 1)
        )
        next_cursor = encode_cursor(items[limit - 1].user_id) if len(items) > limit else None
        return UserPage(items[:limit], next_cursor)

    @get("/summary", summary="Users per state, records per outcome, recent uploads", responses=_PROBLEMS)
    async def summary(self, request: Request[Owner, Any, Any]) -> Summary:
        db: Storage = request.app.state.db
        figures = await db.read(lambda unit: unit.summary_figures())
        return msgspec.convert(msgspec.structs.asdict(figures), Summary)

    @get(
        "/users/{user_id:str}/quarantine",
        summary="The user's quarantined records, verbatim, with reasons",
        responses=_PROBLEMS,
    )
    async def quarantine(
        self,
        request: Request[Owner, Any, Any],
        user_id: UserIdPath,
        cursor: Cursor = None,
        limit: Limit = 50,
        include_resolved: Annotated[bool, QueryParameter(description="also list re-driven records")] = False,
    ) -> QuarantinePage:
        after = _cursor_value(cursor, int)
        db: Storage = request.app.state.db

        def page(unit: ReadUnit) -> tuple[UserProgress | None, list[QuarantinedRecord]]:
            found = unit.user_progress(user_id)
            if found is None:
                return None, []
            return found, unit.quarantine_page(user_id, after=after, limit=limit + 1, include_resolved=include_resolved)

        found, items = await db.read(page)
        _found_or_404(found, user_id)
        next_cursor = encode_cursor(items[limit - 1].id) if len(items) > limit else None
        return QuarantinePage(items[:limit], next_cursor)

    @post(
        "/users/{user_id:str}/redrive",
        status_code=200,
        summary="Run the user's quarantined records through the pipeline again",
        responses=problem_responses(400, 401, 403, 404, 409, 415),
        description="For example once the user exists again. Included: records kept under the user's id, and "
        "records of an unknown token subject (one that is no user's id) whose email names this user (the exact "
        "address, else the only one differing in case). Never a record of another, known user, whatever email "
        "it carried. Each re-driven record gets a new outcome; the old quarantine rows are marked resolved "
        "(never deleted), and what still cannot go in is quarantined again. 409: a concurrent re-drive took "
        "the same records first (nothing written).",
    )
    async def redrive(self, request: Request[Owner, Any, Any], user_id: UserIdPath) -> RedriveResult:
        try:
            outcome = await redrive_user(request.app.state.db, user_id)
        except NoSuchUser:
            raise NotFoundException(f"No user {user_id!r}: re-create the user first, then re-drive") from None
        except RedriveRaced:
            raise FieldError(409, "path", "another re-drive of this user's records committed first: "
                             "nothing was written, ask again") from None
        return RedriveResult(
            redriven=outcome.redriven,
            resolved=outcome.resolved,
            still_quarantined=outcome.still_quarantined,
            uploads=[recovery_response(r) for r in outcome.results],
        )

    @post(
        "/users/{user_id:str}/review",
        status_code=200,
        summary="Mark the user's archived merge conflicts as reviewed",
        responses=_PROBLEMS,
        description="Archived versions stay kept; reviewing only stops them holding the user in needs_review.",
    )
    async def review(self, request: Request[Owner, Any, Any], user_id: UserIdPath) -> ReviewResult:
        outcome = await review_user(request.app.state.db, user_id)
        if outcome is None:
            raise NotFoundException(f"No user and no recovery data for {user_id!r}")
        return ReviewResult(outcome.reviewed, outcome.state)
