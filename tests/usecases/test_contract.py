"""The use cases against the storage interface, on every engine of the `storage` fixture: what a front end
gets back, and what the storage then holds."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from service.domain.owners import UserRecord
from service.store import Storage
from service.store.interface import UserExists
from service.store.rows import NewUser
from service.usecases.devices import declare_device
from service.usecases.ingest import (
    Idempotency,
    IdempotencyConflict,
    IncomingRecord,
    Replayed,
    Upload,
    UploadResult,
    ingest,
)
from service.usecases.redrive import NoSuchUser, redrive_user
from service.usecases.support import review_user
from service.usecases.users import add_user
from tests.conftest import ADA, BEN, add_users, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
DEVICE = "dev_a1B2c3D4e5F6g7H8"


def _goal(goal_id: str, updated: str = "2025-06-01T18:30:12.345Z", title: str = "Scales") -> IncomingRecord:
    return IncomingRecord("goal", msgspec.json.encode({"id": goal_id, "title": title, "updatedAt": updated}))


def _upload(*records: IncomingRecord, user: UserRecord | None = ADA_USER, owner: str = ADA[0]) -> Upload:
    return Upload(owner=owner, user=user, device_id=DEVICE, source="push", records=list(records), email=ADA[1])


async def test_a_declaration_matches_only_what_the_device_sent(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await ingest(storage, _upload(_goal("g1"), _goal("g2")))
    wrong = await declare_device(storage, ADA[0], DEVICE, {"goal": 3})
    assert not wrong.complete and wrong.differences["goal"].received == 2 and wrong.state == "in_progress"
    right = await declare_device(storage, ADA[0], DEVICE, {"goal": 2})
    assert right.complete and right.differences == {} and right.state == "complete"
    progress = await storage.read(lambda unit: unit.user_progress(ADA[0]))
    assert progress is not None and [d.declared_complete for d in progress.devices] == [True]


async def test_an_idempotency_key_is_claimed_once_and_answers_its_repeats(storage: Storage) -> None:
    """Of two requests with one key sent at once, one is written and the other gets its answer; the same key
    with another body is refused."""
    add_users(target(storage), ADA)
    key = Idempotency("k1", "sha-1", "POST /api/sync/push")
    answers = await asyncio.gather(*(
        ingest(storage, _upload(_goal("g1")), idempotency=key, render=lambda r: r.upload_id.encode())
        for _ in range(2)
    ))
    written = [a for a in answers if isinstance(a, UploadResult)]
    replayed = [a for a in answers if isinstance(a, Replayed)]
    assert len(written) == len(replayed) == 1 and replayed[0].response == written[0].upload_id.encode()
    with pytest.raises(IdempotencyConflict):
        await ingest(storage, _upload(_goal("g2")), idempotency=Idempotency("k1", "sha-2", key.route),
                     render=lambda r: b"")
    assert len(query(target(storage), "SELECT upload_id FROM recovery_ledger")) == 1


async def test_quarantined_records_of_an_unknown_owner_are_redriven_once_the_user_exists(storage: Storage) -> None:
    stranger = "user_NotYetNotYetNotYetNotY"
    await ingest(storage, _upload(_goal("g1"), user=None, owner=stranger))
    with pytest.raises(NoSuchUser):
        await redrive_user(storage, stranger)
    await add_user(storage, NewUser(stranger, "late@example.com"))
    outcome = await redrive_user(storage, stranger)
    assert (outcome.redriven, outcome.resolved, outcome.still_quarantined) == (1, 1, 0)
    assert (await redrive_user(storage, stranger)).redriven == 0  # resolved rows are not taken again


async def test_review_marks_the_archived_conflicts_and_frees_the_user(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await ingest(storage, _upload(_goal("g1", "2025-06-02T00:00:00.000Z")))
    older = _goal("g1", "2025-06-01T00:00:00.000Z", title="Arpeggios")
    result = await ingest(storage, _upload(older))  # an older other version: archived, needs review
    assert isinstance(result, UploadResult) and result.receipt.results[0].outcome == "kept_existing"
    assert await storage.read(lambda unit: unit.user_state(ADA[0])) == "needs_review"
    outcome = await review_user(storage, ADA[0])
    assert outcome is not None and outcome.reviewed == 1 and outcome.state == "in_progress"
    assert await review_user(storage, "user_NobodyNobodyNobodyNobo") is None


async def test_a_user_is_added_once(storage: Storage) -> None:
    add_users(target(storage), BEN)
    assert await add_user(storage, NewUser(ADA[0], ADA[1], "Ada", "user"))
    assert not await add_user(storage, NewUser(ADA[0], ADA[1]), if_absent=True)
    with pytest.raises(UserExists):
        await add_user(storage, NewUser("user_OtherOtherOtherOtherOt", BEN[1]))
    match = await storage.read(lambda unit: unit.match_email(ADA[1].upper()))
    assert match.user is not None and match.user.id == ADA[0]  # the one address differing in case
