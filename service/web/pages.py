"""The support page: server-rendered HTML over the same functions the JSON support API calls.

Paths under /support; the token middleware of the API leaves them alone (see `service.web.session` for
how a visitor is signed in). Every handler reads the admin anew, so a role taken away takes effect at
the next request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import Cookie, ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router

from service.api.auth import OWN_CSRF_CHECK
from service.domain.progress import STATES
from service.domain.times import app_timestamp
from service.store.rows import UserListItem
from service.usecases.cursors import decode_cursor, encode_cursor
from service.usecases.redrive import NoSuchUser, RedriveRaced, redrive_user
from service.usecases.support import OverviewFigures, review_user
from service.web import views
from service.web.session import (
    CSRF_FIELD,
    PAGE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Admin,
    CsrfRefused,
    NotAnAdmin,
    SignInRequired,
    admin_of_token,
    check_csrf,
    csrf_token,
    current_admin,
    new_sign_in_nonce,
    verify_token,
)

STATIC = Path(__file__).parent / "static"
UserIdPath = Annotated[str, PathParameter()]
Secret = NamedDependency[str]  # the service's JWT secret (verifies tokens, derives CSRF tokens)
Figures = NamedDependency[OverviewFigures]  # the overview's figures, shared by every open overview
PAGE_SIZE = 50
CHART_HOURS = 24
LIVE_SECONDS = 2  # how often the overview asks for fresh figures
TIMELINE = 50

# No inline script or style anywhere: the page runs with a strict policy.
SECURITY_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value="default-src 'self'; img-src 'self' data:; "
                   "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("HX-Request") == "true"


def _page(request: Request[Any, Any, Any], admin: Admin | None, secret: str, name: str, status: int = 200,
          **context: Any) -> Template:
    base = {
        "admin": admin,
        "csrf": csrf_token(secret, admin.credential) if admin else "",
        "csrf_field": CSRF_FIELD,
        "views": views,
        "page": PAGE_PATH,
        "live_seconds": LIVE_SECONDS,
        "page_size": PAGE_SIZE,
    }
    return Template(template_name=name, context={**base, **context}, status_code=status)


async def _overview_context(request: Request[Any, Any, Any], figures: OverviewFigures) -> dict[str, Any]:
    overview = await figures.read(request.app.state.db)
    return {"summary": overview.summary, "archive": overview.archive, "last_upload_at": overview.last_upload_at,
            "chart": views.chart(overview.activity, hours=CHART_HOURS, now=overview.as_of),
            "as_of": app_timestamp(overview.as_of)}


def _page_start(cursor: str | None) -> int:
    """Where a list on the user's page starts: after the row id its "next" link's cursor carries (the
    users list's cursors); 0, the first page, without one or for a link this page did not make."""
    try:
        after = decode_cursor(cursor) if cursor else 0
    except (ValueError, RecursionError):
        return 0
    return after if isinstance(after, int) and not isinstance(after, bool) and after > 0 else 0


async def _user_context(request: Request[Any, Any, Any], user_id: str, *, quarantine_after: int = 0,
                        conflicts_after: int = 0) -> dict[str, Any] | None:
    # Every part of the page from one snapshot, in one hop to a reader.
    found, timeline, conflicts, declarations, quarantined = await request.app.state.db.read(lambda unit: (
        unit.user_progress(user_id), unit.latest_ledger(user_id, TIMELINE),
        unit.waiting_conflicts(user_id, PAGE_SIZE + 1, after=conflicts_after),
        unit.latest_declarations(user_id),
        unit.quarantine_page(user_id, after=quarantine_after, limit=PAGE_SIZE + 1, include_resolved=False),
    ))
    if found is None:
        return None
    # One row past the page says whether there is a next one; its link starts after the page's last row.
    return {"p": found, "timeline": timeline, "declarations": declarations,
            "quarantined": quarantined[:PAGE_SIZE], "conflicts": conflicts[:PAGE_SIZE],
            "quarantine_after": quarantine_after, "conflicts_after": conflicts_after,
            "quarantine_next": encode_cursor(quarantined[PAGE_SIZE - 1].id) if len(quarantined) > PAGE_SIZE else None,
            "conflicts_next": encode_cursor(conflicts[PAGE_SIZE - 1].id) if len(conflicts) > PAGE_SIZE else None}


class SupportPages(Controller):
    path = PAGE_PATH
    include_in_schema = False
    response_headers = SECURITY_HEADERS
    opt = {OWN_CSRF_CHECK: True}  # noqa: RUF012 - Litestar reads it once. Every POST here checks the session's CSRF token (`check_csrf`)

    @get("/", name="support:overview")
    async def overview(self, request: Request[Any, Any, Any], page_secret: Secret,
                       overview_figures: Figures) -> Template:
        admin = await current_admin(request, page_secret)
        context = await _overview_context(request, overview_figures)
        return _page(request, admin, page_secret, "overview.html", **context)

    @get("/overview/live", name="support:overview-live")
    async def overview_live(self, request: Request[Any, Any, Any], page_secret: Secret,
                            overview_figures: Figures) -> Template:
        admin = await current_admin(request, page_secret)
        context = await _overview_context(request, overview_figures)
        return _page(request, admin, page_secret, "_overview_live.html", **context)

    @get("/users", name="support:users")
    async def users(
        self,
        request: Request[Any, Any, Any],
        page_secret: Secret,
        q: Annotated[str | None, QueryParameter()] = None,
        state_filter: Annotated[str | None, QueryParameter(name="state")] = None,
        cursor: Annotated[str | None, QueryParameter()] = None,
    ) -> Template:
        admin = await current_admin(request, page_secret)
        q = (q or "").strip() or None
        state = state_filter if state_filter in STATES else None
        after: str | None = None
        problem = None
        if cursor:
            try:
                value = decode_cursor(cursor)
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, str):
                after = value
            else:
                problem = "That page link is not one this page made; showing the first page."
        items, by_id = await request.app.state.db.read(lambda unit: (
            unit.list_users(email=q, state=state, after=after, limit=PAGE_SIZE + 1),
            unit.user_by_id(q) if q and after is None else None,
        ))
        next_cursor = encode_cursor(items[PAGE_SIZE - 1].user_id) if len(items) > PAGE_SIZE else None
        items = items[:PAGE_SIZE]
        exact = None  # the user whose id is exactly `q`, when the email search did not list them
        if by_id is not None and all(i.user_id != by_id.id for i in items):
            found = await request.app.state.db.read(lambda unit: unit.user_progress(by_id.id))
            if found is not None and state in (None, found.state):
                exact = UserListItem(by_id.id, by_id.email, by_id.role, found.state, found.last_upload_at)
        return _page(request, admin, page_secret, "users.html", items=items, exact=exact, q=q or "",
                     state=state or "", next_cursor=next_cursor, problem=problem, paged=after is not None)

    @get("/users/{user_id:str}", name="support:user")
    async def user(
        self,
        request: Request[Any, Any, Any],
        page_secret: Secret,
        user_id: UserIdPath,
        quarantine_after: Annotated[str | None, QueryParameter()] = None,
        conflicts_after: Annotated[str | None, QueryParameter()] = None,
    ) -> Template:
        admin = await current_admin(request, page_secret)
        context = await _user_context(request, user_id, quarantine_after=_page_start(quarantine_after),
                                      conflicts_after=_page_start(conflicts_after))
        if context is None:
            return _page(request, admin, page_secret, "not_found.html", status=404, user_id=user_id)
        return _page(request, admin, page_secret, "user.html", **context)

    @post("/users/{user_id:str}/redrive", name="support:redrive", status_code=200)
    async def redrive(self, request: Request[Any, Any, Any], page_secret: Secret, user_id: UserIdPath) -> Template:
        admin = await current_admin(request, page_secret)
        await check_csrf(request, csrf_token(page_secret, admin.credential))
        result: dict[str, Any]
        try:
            outcome = await redrive_user(request.app.state.db, user_id)
            result = {"kind": "redrive", "outcome": outcome}
        except NoSuchUser:
            result = {"kind": "error", "message": "This user does not exist in the app's users table: re-create "
                      "the user first, then re-drive. Nothing was changed."}
        except RedriveRaced:
            result = {"kind": "error", "message": "Another re-drive of these records finished first. Nothing "
                      "was written by this one; the list below is current."}
        return await self._after_action(request, admin, page_secret, user_id, result)

    @post("/users/{user_id:str}/review", name="support:review", status_code=200)
    async def review(self, request: Request[Any, Any, Any], page_secret: Secret, user_id: UserIdPath) -> Template:
        admin = await current_admin(request, page_secret)
        await check_csrf(request, csrf_token(page_secret, admin.credential))
        outcome = await review_user(request.app.state.db, user_id)
        result: dict[str, Any] = (
            {"kind": "review", "outcome": outcome} if outcome is not None
            else {"kind": "error", "message": "The service knows nothing of this user."}
        )
        return await self._after_action(request, admin, page_secret, user_id, result)

    async def _after_action(self, request: Request[Any, Any, Any], admin: Admin, secret: str, user_id: str,
                            result: dict[str, Any]) -> Template:
        context = await _user_context(request, user_id)
        if context is None:
            return _page(request, admin, secret, "not_found.html", status=404, user_id=user_id)
        name = "_user_live.html" if _is_htmx(request) else "user.html"
        return _page(request, admin, secret, name, result=result, **context)

    @get("/sign-in", name="support:sign-in")
    async def sign_in_form(self, request: Request[Any, Any, Any], page_secret: Secret) -> Template:
        nonce = new_sign_in_nonce()
        page = _page(request, None, page_secret, "sign_in.html", sign_in_csrf=nonce, error=None)
        page.cookies.append(_sign_in_cookie(request, nonce))
        return page

    @post("/sign-in", name="support:sign-in-submit", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any], page_secret: Secret) -> Response[Any]:
        expected = request.cookies.get(SIGN_IN_COOKIE, "")
        try:
            fields = await check_csrf(request, expected)
        except CsrfRefused:
            return self._sign_in_again(request, page_secret, "The sign-in form had expired. Please try again.")
        token_text = fields.get("token", "").strip().removeprefix("Bearer ").strip()
        if not token_text:
            return self._sign_in_again(request, page_secret, "Paste your admin token to sign in.")
        try:
            token = verify_token(token_text, page_secret)
        except NotAuthorizedException as exc:
            detail = exc.detail or "not a token this service accepts"
            return self._sign_in_again(request, page_secret, f"That token was not accepted: {detail}.")
        await admin_of_token(request.app.state.db, token)  # NotAnAdmin: the 403 page
        response: Response[Any] = Redirect(path=f"{PAGE_PATH}/", status_code=303)
        response.cookies.append(Cookie(
            key=SESSION_COOKIE, value=token_text, path=PAGE_PATH, httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
            max_age=max(int(token.exp.timestamp() - datetime.now(UTC).timestamp()), 0),
        ))
        response.cookies.append(Cookie(key=SIGN_IN_COOKIE, value="", path=PAGE_PATH, max_age=0))
        return response

    def _sign_in_again(self, request: Request[Any, Any, Any], secret: str, error: str) -> Template:
        nonce = new_sign_in_nonce()
        page = _page(request, None, secret, "sign_in.html", status=400, sign_in_csrf=nonce, error=error)
        page.cookies.append(_sign_in_cookie(request, nonce))
        return page

    @post("/sign-out", name="support:sign-out", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any], page_secret: Secret) -> Response[Any]:
        try:
            admin = await current_admin(request, page_secret)
            await check_csrf(request, csrf_token(page_secret, admin.credential))
        except (SignInRequired, NotAnAdmin):
            pass  # signing out without a valid session only clears the cookie
        response: Response[Any] = Redirect(path=f"{PAGE_PATH}/sign-in", status_code=303)
        response.cookies.append(Cookie(key=SESSION_COOKIE, value="", path=PAGE_PATH, max_age=0, httponly=True,
                                       samesite="strict"))
        return response


def _sign_in_cookie(request: Request[Any, Any, Any], nonce: str) -> Cookie:
    return Cookie(key=SIGN_IN_COOKIE, value=nonce, path=PAGE_PATH, httponly=True, samesite="strict",
                  secure=request.url.scheme == "https", max_age=3600)


def support_pages(secret: str) -> Router:
    """The page's routes and its static files (htmx, the style sheet), all under /support."""
    figures = OverviewFigures(hours=CHART_HOURS)

    def sign_in_required(request: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
        if _is_htmx(request):  # a poll or a button: have htmx load the form as a whole page
            return Response(content="", status_code=401, headers={"HX-Redirect": f"{PAGE_PATH}/sign-in"})
        if not exc.reason:
            return Redirect(path=f"{PAGE_PATH}/sign-in", status_code=303)
        nonce = new_sign_in_nonce()
        page = _page(request, None, secret, "sign_in.html", status=401, sign_in_csrf=nonce, error=exc.reason)
        page.cookies.append(_sign_in_cookie(request, nonce))
        page.cookies.append(Cookie(key=SESSION_COOKIE, value="", path=PAGE_PATH, max_age=0))
        return page

    def not_an_admin(request: Request[Any, Any, Any], _: NotAnAdmin) -> Response[Any]:
        return _page(request, None, secret, "forbidden.html", status=403)

    def csrf_refused(request: Request[Any, Any, Any], _: CsrfRefused) -> Response[Any]:
        return _page(request, None, secret, "csrf.html", status=403)

    return Router(
        path="/",
        route_handlers=[
            SupportPages,
            create_static_files_router(path=f"{PAGE_PATH}/static", directories=[STATIC], name="support:static",
                                       include_in_schema=False),
        ],
        dependencies={
            "page_secret": Provide(lambda: secret, use_cache=True, sync_to_thread=False),
            "overview_figures": Provide(lambda: figures, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={
            SignInRequired: sign_in_required,
            NotAnAdmin: not_an_admin,
            CsrfRefused: csrf_refused,
        },
        include_in_schema=False,
    )
