"""The one owner rule (`resolve_owner`), on every engine: by id first, else by email (exact, else the one
case-different address), several case-different addresses are ambiguous and nobody is unknown."""

from __future__ import annotations

from service.domain.owners import Owner, UserRecord
from service.domain.records import AMBIGUOUS_EMAIL, UNKNOWN_USER
from service.store import Storage
from service.usecases.users import owner_for
from tests.conftest import ADA, BEN, add_users, target

ADA_USER, BEN_USER = UserRecord(*ADA), UserRecord(*BEN)


async def test_the_id_wins_over_the_email(storage: Storage) -> None:
    add_users(target(storage), ADA, BEN)
    assert await owner_for(storage, ADA[0], BEN[1]) == Owner(ADA[0], ADA_USER, email=BEN[1])


async def test_an_id_that_is_no_user_is_mapped_by_its_email_as_an_alias(storage: Storage) -> None:
    add_users(target(storage), ADA)
    assert await owner_for(storage, "user_OldIdOldIdOldId0000", ADA[1].upper()) == Owner(
        ADA[0], ADA_USER, email=ADA[1].upper(), alias_from="user_OldIdOldIdOldId0000")


async def test_the_exact_email_wins_over_a_case_different_one(storage: Storage) -> None:
    add_users(target(storage), ("user_DanaUpperDanaUpper00", "Dana@Example.com", "user"),
              ("user_DanaLowerDanaLower00", "dana@example.com", "user"))
    owner = await owner_for(storage, None, "dana@example.com")
    assert owner.user is not None and owner.user.id == "user_DanaLowerDanaLower00" and owner.problem is None


async def test_two_case_different_emails_and_none_exact_are_ambiguous(storage: Storage) -> None:
    add_users(target(storage), ("user_DanaUpperDanaUpper00", "Dana@Example.com", "user"),
              ("user_DanaLowerDanaLower00", "dana@example.com", "user"))
    owner = await owner_for(storage, "user_DanaOldIdDanaOldId1", "DANA@example.com")
    assert (owner.owner, owner.user, owner.problem) == ("user_DanaOldIdDanaOldId1", None, AMBIGUOUS_EMAIL)
    assert "2 users" in owner.detail and owner.alias_from is None


async def test_nobody_by_id_or_email_is_unknown(storage: Storage) -> None:
    add_users(target(storage), ADA)
    by_both = await owner_for(storage, "user_NobodyNobodyNobody00", "nobody@example.com")
    assert (by_both.owner, by_both.user, by_both.problem) == ("user_NobodyNobodyNobody00", None, UNKNOWN_USER)
    by_email = await owner_for(storage, None, "nobody@example.com")
    assert (by_email.owner, by_email.user, by_email.problem) == ("nobody@example.com", None, UNKNOWN_USER)
