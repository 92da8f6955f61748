"""Who records belong to (`Owner`), and who an email address names: the one rule, for tokens, replays,
re-drives and the CLI alike (`service.usecases.users.resolve_owner` applies it after the id).

The exact address first (`users.email` is unique); else the one user whose address differs only in case
(older rows are mixed case); several of those is an ambiguity, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service.domain.records import QuarantineReason


class UserRecord(msgspec.Struct):
    """A user of the app (`users` row, as far as the service needs it): the owner records go to."""

    id: str
    email: str
    role: str | None


class Owner(msgspec.Struct, frozen=True):
    """Who records belong to: a resolved `user`, or nobody, and then every record is quarantined under
    `owner` for `problem` (said in `detail`). The same for a token (HTTP, socket), a replayed file and the CLI.
    """

    owner: str  # the user's id; else the id or email the records wait under (a token's `sub`, a file's claim)
    user: UserRecord | None
    email: str | None = None  # the email that came with the id (a token's claim, a file's), if any
    alias_from: str | None = None  # an id that is no user, mapped to `user` by `email`: it carries no role
    problem: QuarantineReason | None = None  # why `user` is None (None while it is set)
    detail: str = ""

    @property
    def key(self) -> str:
        """Uploads are grouped per owner key: a resolved user, or the name records wait under and why."""
        return self.user.id if self.user is not None else f"?{self.problem}:{self.owner}"


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
