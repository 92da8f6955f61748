"""The live-sync socket's use cases without a socket, on every engine: which event becomes which upload,
what an applied change answers the sender with and broadcasts, what a SYNC_REQUEST and a catch-up read."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.domain.owners import Owner, UserRecord
from service.domain.records import AMBIGUOUS_EMAIL, UNKNOWN_USER
from service.store import Storage
from service.store.rows import SyncRow
from service.usecases.ingest import sha256_hex
from service.usecases.live import (
    BadMessage,
    SocketEvent,
    apply_change,
    changes_since,
    initial_cursor,
    mutation_of,
    sync_request,
    upload_of,
)
from tests.conftest import ADA, BEN, add_users, target

ADA_OWNER = Owner(ADA[0], UserRecord(ADA[0], ADA[1], "user"), email=ADA[1])
BEN_OWNER = Owner(BEN[0], UserRecord(BEN[0], BEN[1], "user"), email=BEN[1])
STRANGER = Owner("user_NotYetNotYetNotYetNotY", None, email="late@example.com", problem=UNKNOWN_USER,
                 detail="no user has this id or email")


def event(**fields: Any) -> SocketEvent:
    return msgspec.json.decode(msgspec.json.encode(fields), type=SocketEvent)


def entry(entry_id: str, updated: str = "2025-06-01T10:00:00.000Z") -> dict[str, Any]:
    return {"id": entry_id, "timestamp": "2025-06-01T10:00:00.000Z", "duration": 30, "type": "practice",
            "instrument": "piano", "notes": entry_id, "updatedAt": updated}


def raw(value: Any) -> bytes:
    return msgspec.json.encode(value)


@pytest.mark.parametrize(
    ("fields", "records", "deleted"),
    [
        ({"type": "ENTRY_CREATED", "entry": {"id": "e1"}}, [("logbook_entry", {"id": "e1"})], {}),
        ({"type": "ENTRY_UPDATED", "entry": {"id": "e1"}}, [("logbook_entry", {"id": "e1"})], {}),
        ({"type": "ENTRY_DELETED", "entryId": "e1"}, [], {"logbook_entry": ["e1"]}),
        ({"type": "PIECE_ADDED", "piece": {"scoreId": "a-b"}}, [("repertoire_item", {"scoreId": "a-b"})], {}),
        ({"type": "PIECE_UPDATED", "piece": {"scoreId": "a-b"}}, [("repertoire_item", {"scoreId": "a-b"})], {}),
        ({"type": "PIECE_REMOVED", "scoreId": "a-b"}, [], {"repertoire_item": ["a-b"]}),
        ({"type": "PIECE_DISSOCIATED", "scoreId": "a-b"}, [], {"repertoire_item": ["a-b"]}),
        ({"type": "PLAN_CREATED", "plan": {"id": "p"}, "occurrences": [{"id": "o1"}, {"id": "o2"}]},
         [("practice_plan", {"id": "p"}), ("plan_occurrence", {"id": "o1"}), ("plan_occurrence", {"id": "o2"})], {}),
        ({"type": "PLAN_UPDATED", "plan": {"id": "p"}}, [("practice_plan", {"id": "p"})], {}),
        ({"type": "PLAN_OCCURRENCE_COMPLETED", "occurrence": {"id": "o1"}}, [("plan_occurrence", {"id": "o1"})], {}),
        ({"type": "BULK_SYNC", "entries": [{"id": "e1"}, {"id": "e2"}]},
         [("logbook_entry", {"id": "e1"}), ("logbook_entry", {"id": "e2"})], {}),
        ({"type": "REPERTOIRE_BULK_SYNC", "pieces": [{"scoreId": "a-b"}]}, [("repertoire_item", {"scoreId": "a-b"})],
         {}),
    ],
)
def test_each_change_event_is_the_upload_the_apps_worker_means(
    fields: dict[str, Any], records: list[tuple[str, Any]], deleted: dict[str, list[str]]
) -> None:
    """Records go to the pipeline verbatim under the event's entity type; removals are its deleted lists;
    the upload is the token's user's, from the socket, naming no device, hashed over the frame's bytes."""
    payload = raw(fields)
    upload = upload_of(ADA_OWNER, mutation_of(event(**fields)), payload)
    assert [(r.entity_type, msgspec.json.decode(r.raw)) for r in upload.records] == records
    assert upload.deleted == deleted
    assert (upload.owner, upload.user, upload.email) == (ADA[0], ADA_OWNER.user, ADA[1])
    assert (upload.source, upload.device_id, upload.payload_sha256) == ("socket", None, sha256_hex(payload))


def test_an_unresolved_owners_upload_carries_why_it_is_quarantined() -> None:
    ambiguous = Owner(STRANGER.owner, None, email=STRANGER.email, problem=AMBIGUOUS_EMAIL, detail="two users")
    upload = upload_of(ambiguous, mutation_of(event(type="ENTRY_DELETED", entryId="e1")), b"{}")
    assert (upload.owner, upload.user) == (STRANGER.owner, None)
    assert (upload.quarantine_reason, upload.quarantine_detail) == (AMBIGUOUS_EMAIL, "two users")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"type": "PING"}, "unknown type 'PING'"),  # not a change: the socket answers it itself
        ({"type": "SYNC_REQUEST"}, "unknown type 'SYNC_REQUEST'"),
        ({"type": "ENTRY_CREATED", "entry": [1]}, "entry must be an object"),
        ({"type": "ENTRY_DELETED", "entryId": ""}, "entryId must be a non-empty string"),
        ({"type": "PLAN_CREATED", "occurrences": [{}]}, "plan must be an object"),
    ],
)
def test_an_event_that_is_no_change_or_lacks_its_record_is_refused(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(BadMessage, match=error):
        mutation_of(event(**fields))


async def test_an_applied_change_broadcasts_what_it_changed_and_answers_a_lost_version_with_the_stored_one(
    storage: Storage,
) -> None:
    add_users(target(storage), ADA)
    created = await apply_change(storage, ADA_OWNER, event(type="ENTRY_CREATED", entry=entry("e1")), b"1")
    assert created.quarantined == [] and created.lost == []
    assert [(c.entity_type, c.row.entity_id, c.created) for c in created.changed] == [("logbook_entry", "e1", True)]

    newer = entry("e1", updated="2025-06-02T10:00:00.000Z")
    updated = await apply_change(storage, ADA_OWNER, event(type="ENTRY_UPDATED", entry=newer), b"2")
    assert [(c.row.entity_id, c.created) for c in updated.changed] == [("e1", False)] and updated.lost == []
    assert updated.changed[0].row.seq is not None and updated.changed[0].row.seq > (created.changed[0].row.seq or 0)

    older = await apply_change(storage, ADA_OWNER, event(type="ENTRY_UPDATED", entry=entry("e1")), b"3")
    assert older.changed == [] and [c.row.seq for c in older.lost] == [updated.changed[0].row.seq]
    assert msgspec.json.decode(older.lost[0].row.data)["updatedAt"] == "2025-06-02T10:00:00.000Z"

    deleted = await apply_change(storage, ADA_OWNER, event(type="ENTRY_DELETED", entryId="e1"), b"4")
    assert [(c.row.entity_id, c.row.deleted_at is not None) for c in deleted.changed] == [("e1", True)]
    after = await apply_change(storage, ADA_OWNER, event(type="ENTRY_UPDATED", entry=newer), b"5")
    assert after.changed == [] and [c.row.deleted_at is not None for c in after.lost] == [True]  # suppressed


async def test_a_change_from_an_unknown_owner_is_quarantined_and_nothing_is_sent(storage: Storage) -> None:
    outcome = await apply_change(storage, STRANGER, event(type="ENTRY_CREATED", entry=entry("e1")), b"1")
    assert [(r.entity_id, r.reason) for r in outcome.quarantined] == [("e1", "unknown_user")]
    assert outcome.changed == [] and outcome.lost == []


async def test_a_sync_request_reads_entries_then_pieces_after_its_counter(storage: Storage) -> None:
    """A counter beyond this database's own sequence (the app's server's) gets everything; plans are not
    in a SYNC_REQUEST's answer, but a catch-up sends them too, all in seq order."""
    add_users(target(storage), ADA)
    await apply_change(storage, ADA_OWNER, event(type="PIECE_ADDED", piece={"scoreId": "a-b"}), b"1")
    await apply_change(storage, ADA_OWNER, event(type="PLAN_CREATED", plan={"id": "p1"}), b"2")
    first = await apply_change(storage, ADA_OWNER, event(type="ENTRY_CREATED", entry=entry("e1")), b"3")
    sent: list[tuple[str, list[str]]] = []

    async def send(entity_type: str, rows: list[SyncRow]) -> None:
        sent.append((entity_type, [row.entity_id for row in rows]))

    highest = await sync_request(storage, ADA[0], 10**9, send)
    assert sent == [("logbook_entry", ["e1"]), ("repertoire_item", ["a-b"])]
    assert highest == first.changed[0].row.seq

    sent.clear()
    assert await sync_request(storage, ADA[0], highest, send) == highest
    assert sent == [("logbook_entry", []), ("repertoire_item", [])]

    caught = await changes_since(storage, ADA[0], 0)
    assert [(t, row.entity_id) for t, row in caught] == [
        ("repertoire_item", "a-b"), ("practice_plan", "p1"), ("logbook_entry", "e1")]
    assert await changes_since(storage, ADA[0], highest) == []


async def test_a_new_socket_catches_up_from_the_users_last_sync_token(storage: Storage) -> None:
    """Not from the change counter, which another user's later change has moved past it."""
    add_users(target(storage), ADA, BEN)
    assert await initial_cursor(storage, ADA[0]) == await storage.read(lambda unit: unit.current_seq())
    outcome = await apply_change(storage, ADA_OWNER, event(type="ENTRY_CREATED", entry=entry("e1")), b"1")
    await apply_change(storage, BEN_OWNER, event(type="ENTRY_CREATED", entry=entry("e2")), b"2")
    assert await initial_cursor(storage, ADA[0]) == outcome.changed[0].row.seq
    assert await storage.read(lambda unit: unit.current_seq()) > (outcome.changed[0].row.seq or 0)
