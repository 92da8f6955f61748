"""Users: who records belong to (the one resolution rule, for tokens, the socket, replays and the CLI), and
the users the CLI adds (as the app would on sign-up): `create-user` and `serve --dev`'s demo admin."""

from __future__ import annotations

from service.domain.owners import Owner
from service.domain.records import AMBIGUOUS_EMAIL, UNKNOWN_USER
from service.store.interface import ReadUnit, Storage
from service.store.rows import NewUser


def resolve_owner(unit: ReadUnit, user_id: str | None, email: str | None) -> Owner:
    """Whose records these are, named by an id and/or an email: the user with that id (the source of
    truth); else the user the email names (`match_email`: exact, else the one case-different address),
    the id kept as `alias_from`; several case-different addresses and none exact is AMBIGUOUS_EMAIL, never
    a guess; nobody is UNKNOWN_USER. Records of nobody wait under the id, else the email."""
    name = user_id or email
    if not name:
        raise ValueError("an owner is named by an id or an email")
    user = unit.user_by_id(user_id) if user_id else None
    if user is not None:
        return Owner(user.id, user, email=email)
    if email:
        match = unit.match_email(email)
        if match.user is not None:
            return Owner(match.user.id, match.user, email=email, alias_from=user_id)
        if match.ambiguous:
            return Owner(name, None, email=email, problem=AMBIGUOUS_EMAIL,
                         detail=f"{len(match.ambiguous)} users have the email {email} in different cases and "
                                "none exactly: whose records these are is ambiguous")
    named = " or ".join(f"the {what} {value}" for what, value in (("id", user_id), ("email", email)) if value)
    return Owner(name, None, email=email, problem=UNKNOWN_USER, detail=f"no user has {named}")


async def owner_for(db: Storage, user_id: str | None, email: str | None) -> Owner:
    """`resolve_owner` in a read of its own (a token's `sub` and `email`, an option, a file's claim)."""
    return await db.read(lambda unit: resolve_owner(unit, user_id, email))


async def add_user(db: Storage, user: NewUser, *, if_absent: bool = False) -> bool:
    """Insert the user; False when `if_absent` and the id or email is taken (`UserExists` without it)."""
    return await db.write(lambda unit: unit.add_user(user, if_absent=if_absent))
