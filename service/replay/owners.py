"""Whose records these are: from the file (profile, `mirubato:user`, an NDJSON line, a dump row) or the
`--user` / `--email` option. Never guessed: an owner nobody matches, or a file naming someone other
than the option, gets no user, so the pipeline quarantines every record (kept, re-drivable).
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from service.domain.owners import EmailMatch, UserRecord
from service.domain.records import AMBIGUOUS_EMAIL, UNKNOWN_USER, USER_MISMATCH, QuarantineReason
from service.replay.model import OwnerClaim
from service.store.interface import ReadUnit, Storage

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


class Owner(msgspec.Struct, frozen=True):
    """The owner an upload is built for. `user` None: every record is quarantined under `owner`."""

    owner: str  # the user id, or the id / email / NO_OWNER the records are quarantined under
    user: UserRecord | None
    email: str | None = None
    alias_from: str | None = None  # a file's user id that was mapped to `user` by email
    problem: QuarantineReason | None = None  # why `user` is None: UNKNOWN_USER, USER_MISMATCH, UNREADABLE_LINE...
    detail: str = ""

    @property
    def key(self) -> str:
        """Uploads are grouped per owner key: a resolved user, or the name records wait under and why."""
        return self.user.id if self.user is not None else f"?{self.problem}:{self.owner}"


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
        if claim is None:
            return Owner(NO_OWNER, None, problem=UNKNOWN_USER, detail="nothing names an owner: pass --user or --email")
        return await self._resolve_claim(claim)

    async def _resolve_option(self) -> Owner:
        if self._given is None:
            option = self._option
            if option.user_id is not None:
                user_id = option.user_id
                user = await self._db.read(lambda unit: unit.user_by_id(user_id))
            else:
                email = option.email
                assert email is not None
                user = await self._db.read(lambda unit: unit.match_email(email).user)
            name = option.user_id or option.email or NO_OWNER
            self._given = (
                Owner(user.id, user, email=option.email)
                if user is not None
                else Owner(name, None, email=option.email, problem=UNKNOWN_USER,
                           detail=f"no user matches {option.describe()}")
            )
        return self._given

    async def _resolve_claim(self, claim: OwnerClaim) -> Owner:
        """By id first (the source of truth), then by email, as the app's tokens are resolved."""
        ambiguous = False

        def lookup(unit: ReadUnit) -> tuple[UserRecord | None, EmailMatch | None]:
            found = unit.user_by_id(claim.user_id) if claim.user_id is not None else None
            if found is None and claim.email is not None:
                return None, unit.match_email(claim.email)
            return found, None

        user, match = await self._db.read(lookup)
        if match is not None:
            if match.user is not None:
                return Owner(match.user.id, match.user, email=claim.email, alias_from=claim.user_id)
            ambiguous = bool(match.ambiguous)  # several users differ only in case: never a guess
        if user is not None:
            return Owner(user.id, user, email=claim.email)
        return Owner(
            claim.user_id or claim.email or NO_OWNER, None, email=claim.email,
            problem=AMBIGUOUS_EMAIL if ambiguous else UNKNOWN_USER,
            detail=f"several users have the email of {claim} in different cases, none exactly" if ambiguous
            else f"no user matches {claim}",
        )
