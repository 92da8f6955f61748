"""Issuing tokens the way the app does (for `serve --dev`, the README walk-through and the tests)."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt

TOKEN_LIFETIME = timedelta(days=30)


def issue_token(secret: str, user_id: str, email: str, *, lifetime: timedelta = TOKEN_LIFETIME) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "email": email, "iat": now, "exp": now + int(lifetime.total_seconds())}
    return jwt.encode(claims, secret, algorithm="HS256")
