"""Whose records these are: from the file (profile, `mirubato:user`, an NDJSON line, a dump row) or the
`--user` / `--email` option. Never guessed: an owner nobody matches, or a file naming someone other
than the option, gets no user, so the pipeline quarantines every record (kept, re-drivable).
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from service.domain.owners import Owner
from service.domain.records import UNKNOWN_USER, USER_MISMATCH
from service.replay.model import OwnerClaim
from service.store.interface import Storage
from service.usecases.users import owner_for

# The quarantine owner of records nothing names an owner for.
NO_OWNER = "unknown"
_CACHE_SIZE = 4096


class OwnerOption(msgspec.Struct, frozen=True):
    """`--user ID` or `--email ADDR` (at most one is set)."""

    user_id: str | None = None
    email: str | None = None

    @property
    def given(self) -> bool:
        return self.user_id is not None or self.email is not None

    def describe(self) -> str:
        if self.user_id is not None:
            return f"--user {self.user_id}"
        return f"--email {self.email}" if self.email is not None else "the file"

    def key(self) -> str:
        """How the option is written in a checkpoint key."""
        if self.user_id is not None:
            return f"user={self.user_id}"
        return f"email={self.email.lower()}" if self.email is not None else "owner-from-file"


class OwnerResolver:
    """Resolves claims against `users` (read connections; users are not changed by a replay)."""

    def __init__(self, db: Storage, option: OwnerOption) -> None:
        self._db = db
        self._option = option
        self._given: Owner | None = None
        self._cache: OrderedDict[OwnerClaim | None, Owner] = OrderedDict()

    async def resolve(self, claim: OwnerClaim | None) -> Owner:
        cached = self._cache.get(claim)
        if cached is not None:
            self._cache.move_to_end(claim)
            return cached
        owner = await self._resolve(claim)
        self._cache[claim] = owner
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return owner

    async def _resolve(self, claim: OwnerClaim | None) -> Owner:
        if self._option.given:
            given = await self._resolve_option()
            if given.user is None or claim is None or claim.names(given.user.id, given.user.email):
                return given
            return Owner(
                claim.user_id or claim.email or NO_OWNER,
                None,
                email=claim.email,
                problem=USER_MISMATCH,
                detail=f"the data names {claim}, but {self._option.describe()} was given",
            )
        if claim is None or not (claim.user_id or claim.email):
            return Owner(NO_OWNER, None, problem=UNKNOWN_USER, detail="nothing names an owner: pass --user or --email")
        return await owner_for(self._db, claim.user_id, claim.email)

    async def _resolve_option(self) -> Owner:
        if self._given is None:
            option = self._option
            given = await owner_for(self._db, option.user_id, option.email)
            if given.user is None and given.problem is UNKNOWN_USER:
                given = msgspec.structs.replace(given, detail=f"no user matches {option.describe()}")
            self._given = given
        return self._given
