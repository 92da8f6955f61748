"""The app's auth: an HS256 JWT (`sub`, `email`, `iat`, `exp`) as a Bearer header or `auth-token` cookie.

Roles are not in the token: `users.role` is read on every request.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTCookieAuth, JWTCookieAuthenticationMiddleware, Token

from service.store.database import Database, SyncConnection
from service.store.uploads import UserRecord, user_by_email, user_by_id

AUTH_COOKIE = "auth-token"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the token's subject and email, and the user they resolve to (None if nobody)."""

    sub: str
    email: str | None
    user: UserRecord | None
    # Set when `sub` is not in users but the email is: the token subject that was mapped.
    alias_from: str | None = None

    @property
    def owner(self) -> str:
        return self.user.id if self.user is not None else self.sub


class AppTokenMiddleware(JWTCookieAuthenticationMiddleware):
    """Bearer header first, then the cookie, which holds the bare token as the app sets it."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get(self.auth_header)
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
            return await self.authenticate_token(encoded_token=token.strip(), connection=connection)
        cookie = connection.cookies.get(self.auth_cookie_key)
        if not cookie:
            raise NotAuthorizedException("No token: send 'Authorization: Bearer <token>' or the auth-token cookie")
        token = cookie.removeprefix("Bearer ").strip()
        return await self.authenticate_token(encoded_token=token, connection=connection)


async def resolve_principal(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    email = token.extras.get("email")
    return await principal_for(connection.app.state.db, token.sub, email if isinstance(email, str) and email else None)


async def principal_for(db: Database, sub: str, email: str | None) -> Principal:
    """Who a verified token's `sub` and `email` are (also for the live-sync socket, which has no header)."""
    return await db.read_run(lambda conn: _principal(conn, sub, email))


def _principal(conn: SyncConnection, sub: str, email: str | None) -> Principal:
    user = user_by_id(conn, sub)
    if user is not None or email is None:
        return Principal(sub, email, user)
    by_email = user_by_email(conn, email)
    return Principal(sub, email, by_email, alias_from=sub if by_email is not None else None)


def make_jwt_auth(secret: str, exclude: list[str]) -> JWTCookieAuth[Principal, Token]:
    return JWTCookieAuth[Principal, Token](
        token_secret=secret,
        algorithm="HS256",
        key=AUTH_COOKIE,
        retrieve_user_handler=resolve_principal,
        authentication_middleware_class=AppTokenMiddleware,
        exclude=exclude,
        require_claims=["exp", "sub"],
    )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    # `connection.user` raises (a 500) when the auth middleware did not run for this request, as for an
    # OPTIONS request, which it lets through unauthenticated: that is "no token", never a crash.
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("No token: send 'Authorization: Bearer <token>' or the auth-token cookie")
    return user


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Support routes: the caller's `users.role` must be admin (read from the database this request).

    OPTIONS (the automatic answer listing the allowed methods, and CORS preflights) carries no token and
    reveals nothing, so it is let through as on every other route."""
    if connection.scope.get("method") == "OPTIONS":
        return
    principal = principal_of(connection)
    if principal.user is None or principal.user.role != "admin":
        raise PermissionDeniedException("Support routes need a user whose role is admin")
