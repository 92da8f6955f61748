"""Who is signed in to the support page, and CSRF.

The page takes an admin's token once (the sign-in form) and keeps it in an HttpOnly, SameSite=Strict
cookie scoped to the page's paths; where the service shares the app's domain, the app's own `auth-token`
cookie signs in as well. Either way the token is verified and `users.role` read on every request. Every
POST carries a CSRF token derived from the credential with the service's secret (a form field or the
`X-CSRF-Token` header htmx sends), so a page of another origin can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token

from service.api.auth import AUTH_COOKIE
from service.domain.owners import Owner
from service.store.interface import Storage
from service.usecases.users import owner_for

SESSION_COOKIE = "support-session"
SIGN_IN_COOKIE = "support-sign-in"  # the sign-in form's own CSRF value, before there is a session
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
PAGE_PATH = "/support"


class SignInRequired(Exception):
    """No credential, or one that does not verify: the sign-in form."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnAdmin(Exception):
    """A verified token whose subject is no admin: 403, never data."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token."""


class Admin(msgspec.Struct, frozen=True):
    principal: Owner
    credential: str  # the token, as the cookie holds it
    from_session: bool
    expires_at: int

    @property
    def email(self) -> str:
        assert self.principal.user is not None
        return self.principal.user.email


def verify_token(token: str, secret: str) -> Token:
    """The app's HS256 token, checked as the API checks it (signature, `exp`, `sub`)."""
    return Token.decode(token.strip(), secret, "HS256", require_claims=["exp", "sub"])


async def admin_of_token(db: Storage, token: Token) -> Owner:
    """The token's `sub` must be a user whose `users.role` is admin, read now. The email claim is not
    used: an email alias never carries a role."""
    principal = await owner_for(db, token.sub, None)
    if principal.user is None or principal.user.id != token.sub or principal.user.role != "admin":
        raise NotAnAdmin(token.sub)
    return principal


async def current_admin(request: Request[Any, Any, Any], secret: str) -> Admin:
    session = request.cookies.get(SESSION_COOKIE)
    credential = session or request.cookies.get(AUTH_COOKIE, "").removeprefix("Bearer ").strip()
    if not credential:
        raise SignInRequired("")
    try:
        token = verify_token(credential, secret)
    except NotAuthorizedException as exc:
        raise SignInRequired(f"Your sign-in is no longer valid ({exc.detail}). Sign in again.") from None
    principal = await admin_of_token(request.app.state.db, token)
    return Admin(principal, credential, bool(session), int(token.exp.timestamp()))


def csrf_token(secret: str, credential: str) -> str:
    return hmac.new(secret.encode(), b"support-page-csrf\0" + credential.encode(), hashlib.sha256).hexdigest()


def new_sign_in_nonce() -> str:
    return secrets.token_urlsafe(24)


async def check_csrf(request: Request[Any, Any, Any], expected: str) -> dict[str, str]:
    """The POST's form fields, once its CSRF token matched; CsrfRefused otherwise."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    sent = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()
    return fields
