"""Who an email address names: the one rule, for tokens, replays, re-drives and the CLI alike.

The exact address first (`users.email` is unique); else the one user whose address differs only in case
(older rows are mixed case); several of those is an ambiguity, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class UserRecord(msgspec.Struct):
    """A user of the app (`users` row, as far as the service needs it): the owner records go to."""

    id: str
    email: str
    role: str | None


class EmailMatch(msgspec.Struct, frozen=True):
    """Who an email address names: `user`, or nobody; `ambiguous` lists the users it could name when
    several share it in different cases and none has it exactly."""

    user: UserRecord | None
    ambiguous: tuple[str, ...] = ()


def match_email_among(email: str, candidates: Sequence[UserRecord]) -> EmailMatch:
    """The match among `candidates`: every user whose address equals `email` ignoring case, by id."""
    exact = [u for u in candidates if u.email == email]
    if exact:
        return EmailMatch(exact[0])
    if len(candidates) == 1:
        return EmailMatch(candidates[0])
    return EmailMatch(None, tuple(u.id for u in candidates))
