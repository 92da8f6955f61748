"""Issuing tokens the way the app does (for `serve --dev`, the README walk-through and the tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from litestar.security.jwt import Token

TOKEN_LIFETIME = timedelta(days=30)


def issue_token(secret: str, user_id: str, email: str, *, lifetime: timedelta = TOKEN_LIFETIME) -> str:
    now = datetime.now(UTC)
    token = Token(sub=user_id, exp=now + lifetime, iat=now, extras={"email": email})
    return token.encode(secret=secret, algorithm="HS256")
