"""The app's auth: an HS256 JWT (`sub`, `email`, `iat`, `exp`) as a Bearer header or `auth-token` cookie.

Roles are not in the token: `users.role` is read on every request, for the user the token's `sub` names.
A token whose `sub` is no user but whose email is one's recovers that user's own data (the alias); it
never carries that user's role.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Self

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import ImproperlyConfiguredException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTCookieAuth, JWTCookieAuthenticationMiddleware, Token

from service.api.errors import FieldError
from service.domain.owners import Owner
from service.usecases.users import owner_for

AUTH_COOKIE = "auth-token"

# What a 401 says, so a client (or its operator) can tell a stale token from a wrong secret.
TOKEN_EXPIRED = "token expired"
SIGNATURE_INVALID = "signature invalid"
MALFORMED_TOKEN = "malformed token"


class AppToken(Token):
    """The app's token, decoded with a 401 that says what is wrong with it. Claims other than the
    registered ones are kept in `extras` as they are (a claim named `extras` is one of them)."""

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        try:
            payload = jwt.decode(encoded_token, secret, algorithms=[algorithm],
                                 options={"require": list(require_claims or ())})
        except jwt.ExpiredSignatureError:
            raise NotAuthorizedException(f"{TOKEN_EXPIRED}: sign in again for a new token") from None
        except jwt.ImmatureSignatureError:
            raise NotAuthorizedException(f"{MALFORMED_TOKEN}: not valid yet (nbf or iat in the future)") from None
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
            raise NotAuthorizedException(
                f"{SIGNATURE_INVALID}: not signed with this service's secret ({algorithm})"
            ) from None
        except jwt.MissingRequiredClaimError as error:
            raise NotAuthorizedException(f"{MALFORMED_TOKEN}: no {error.claim!r} claim") from None
        except jwt.InvalidTokenError as error:
            raise NotAuthorizedException(f"{MALFORMED_TOKEN}: {error}") from None
        if not isinstance(payload, dict):
            raise NotAuthorizedException(f"{MALFORMED_TOKEN}: the claims are not an object")
        fields = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        claims = {k: v for k, v in payload.items() if k in fields}
        claims["extras"] = {k: v for k, v in payload.items() if k not in fields}
        for claim in ("exp", "iat"):
            try:
                claims[claim] = cls._decode_datetime_claim(claims, claim)
            except NotAuthorizedException:
                raise NotAuthorizedException(f"{MALFORMED_TOKEN}: {claim!r} is missing or not a time") from None
        try:
            return msgspec.convert(claims, cls, strict=False)
        except (KeyError, TypeError, ValueError, OverflowError, ImproperlyConfiguredException,
                msgspec.ValidationError) as error:
            raise NotAuthorizedException(f"{MALFORMED_TOKEN}: {error}") from None


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


async def owner_of_token(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Owner:
    """Who a verified token's `sub` and `email` claim are: the one rule (the socket, which has no header,
    calls it too)."""
    email = token.extras.get("email") if isinstance(token.extras, dict) else None
    return await owner_for(connection.app.state.db, token.sub, email if isinstance(email, str) and email else None)


def make_jwt_auth(secret: str, exclude: list[str]) -> JWTCookieAuth[Owner, Token]:
    return JWTCookieAuth[Owner, Token](
        token_secret=secret,
        algorithm="HS256",
        key=AUTH_COOKIE,
        retrieve_user_handler=owner_of_token,
        authentication_middleware_class=AppTokenMiddleware,
        exclude=exclude,
        require_claims=["exp", "sub"],
        token_cls=AppToken,
    )


def owner_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Owner:
    # `connection.user` raises (a 500) when the auth middleware did not run for this request, as for an
    # OPTIONS request, which it lets through unauthenticated: that is "no token", never a crash.
    user = connection.scope.get("user")
    if not isinstance(user, Owner):
        raise NotAuthorizedException("No token: send 'Authorization: Bearer <token>' or the auth-token cookie")
    return user


async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Support (and every admin) route: the token's `sub` must be a user whose `users.role` is admin (read
    from the database this request). A token mapped to an admin by its email is not that admin.

    OPTIONS (the automatic answer listing the allowed methods, and CORS preflights) carries no token and
    reveals nothing, so it is let through as on every other route."""
    if connection.scope.get("method") == "OPTIONS":
        return
    caller = owner_of(connection)
    if caller.user is None or caller.alias_from is not None:
        raise PermissionDeniedException(
            "Support routes need a token whose subject is an admin user (a match by email carries no role)"
        )
    if caller.user.role != "admin":
        raise PermissionDeniedException("Support routes need a user whose role is admin")


# Methods that change something; a route that answers one of them without changing anything says so
# with `opt={READS_ONLY: True}` (the app's `POST /api/sync/pull`).
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READS_ONLY = "reads_only"
# A route that checks a CSRF token of its own on every such request (the support page's forms).
OWN_CSRF_CHECK = "own_csrf_check"


def _declares_json(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    media_type = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def refuse_cross_site_cookie_writes(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """CSRF: a browser sends the `auth-token` cookie with a request from any web page, and a form or a
    plain `fetch` (no body, a form body, `text/plain`) needs no CORS preflight. So a state-changing
    request authenticated by the cookie must be declared `application/json` (415 otherwise), which a
    page of another origin can only send after a preflight this service refuses. A request with an
    `Authorization` header is not at risk: no page can add one cross-site without that preflight.

    Attached to the whole app, so every new POST/PUT/PATCH/DELETE route is covered without asking."""
    if connection.scope.get("method") not in STATE_CHANGING_METHODS or handler.opt.get(READS_ONLY):
        return
    if handler.opt.get(OWN_CSRF_CHECK):
        return
    if connection.headers.get("authorization") or _declares_json(connection):
        return
    if not connection.cookies.get(AUTH_COOKIE):
        return  # no cookie, no credential a browser could send on its own (the token check answers 401)
    raise FieldError(
        415, "Content-Type", "must be application/json",
        detail="A change authenticated by the auth-token cookie must be sent as application/json "
        "(or with an Authorization header)",
    )
