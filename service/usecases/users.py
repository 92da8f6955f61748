"""Users the CLI adds (as the app would on sign-up): `create-user` and `serve --dev`'s demo admin."""

from __future__ import annotations

from service.store.interface import Storage
from service.store.rows import NewUser


async def add_user(db: Storage, user: NewUser, *, if_absent: bool = False) -> bool:
    """Insert the user; False when `if_absent` and the id or email is taken (`UserExists` without it)."""
    return await db.write(lambda unit: unit.add_user(user, if_absent=if_absent))
