"""The closed sets of a `users` row: the app's CHECK constraints (CONTRACT section 2)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """`users.role` (NULL reads as USER, the column's default)."""

    USER = "user"
    TEACHER = "teacher"
    ADMIN = "admin"


class AuthProvider(StrEnum):
    """`users.auth_provider`."""

    MAGIC_LINK = "magic_link"
    GOOGLE = "google"
