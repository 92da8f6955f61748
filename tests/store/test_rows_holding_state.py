"""A live logbook row whose stored text gives back its merge state (edit time, content key) keeps no
`recovery_entity_state` row (#17: a state row per record was a quarter of a 1M replay's time), and the
merge still sees everything it saw with one: content duplicates found through the app's
`logbook_entries (user_id, timestamp)` index, their hand-over when the holder goes, edit times read back
from the document. On every engine."""

from __future__ import annotations

from typing import Any

import msgspec

from service.domain import outcomes as oc
from service.domain.outcomes import RecordResult
from service.domain.owners import UserRecord
from service.store import Storage
from tests.conftest import ADA, BEN, add_users, push_entries, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
BEN_USER = UserRecord(BEN[0], BEN[1], "user")


def minute(n: int) -> int:
    return 1748799900000 + n * 60_000


def entry(entry_id: str, at: int, *, updated: str = "2025-06-01T18:30:12.345Z", **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": minute(at), "duration": 15, "type": "practice", "instrument": "piano",
            "notes": f"session at {at}", "updatedAt": updated, **fields}


async def push(db: Storage, *entries: dict[str, Any], deleted: list[str] | None = None) -> list[RecordResult]:
    return await push_entries(db, ADA_USER, *entries, deleted=deleted)


def state_rows(storage: Storage) -> dict[str, str | None]:
    """entity_id -> duplicate_of of every merge state row."""
    rows = query(target(storage), "SELECT entity_id, duplicate_of FROM recovery_entity_state")
    return {r["entity_id"]: r["duplicate_of"] for r in rows}


def live_ids(storage: Storage) -> set[str]:
    return {r["entity_id"] for r in query(target(storage), "SELECT entity_id FROM sync_data WHERE deleted_at IS NULL")}


async def test_a_first_upload_of_plain_entries_keeps_no_state_row(storage: Storage) -> None:
    add_users(target(storage), ADA)
    results = await push(storage, entry("a", 1), entry("b", 2))
    assert [r.outcome for r in results] == [oc.INSERTED, oc.INSERTED]
    assert state_rows(storage) == {}
    assert live_ids(storage) == {"a", "b"}


async def test_a_later_twin_of_a_row_without_state_is_a_content_duplicate(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await push(storage, entry("a", 1))
    # The same session logged again under another id, by another device, later: times differ, content not.
    results = await push(storage, entry("twin", 1, updated="2025-06-03T09:00:00.000Z"))
    assert [(r.outcome, r.duplicate_of) for r in results] == [(oc.CONTENT_DUPLICATE, "a")]
    assert state_rows(storage) == {"twin": "a"}
    # Sent again, the twin stays a duplicate of it: its holder is found from the twin's state.
    again = await push(storage, entry("twin", 1, updated="2025-06-03T09:00:00.000Z"))
    assert [(r.outcome, r.duplicate_of) for r in again] == [(oc.CONTENT_DUPLICATE, "a")]
    assert live_ids(storage) == {"a"}


async def test_deleting_a_holder_without_state_hands_its_content_to_its_twin(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await push(storage, entry("a", 1))
    await push(storage, entry("twin", 1, updated="2025-06-03T09:00:00.000Z"))
    results = await push(storage, deleted=["a"])
    assert [r.outcome for r in results] == [oc.DELETED]
    assert live_ids(storage) == {"twin"}
    assert state_rows(storage)["twin"] is None  # a live entry of its own now


async def test_an_edit_time_read_back_from_the_document_still_orders_versions(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await push(storage, entry("a", 1, updated="2025-06-05T10:00:00.000Z", notes="newer"))
    older = await push(storage, entry("a", 1, updated="2025-06-04T10:00:00.000Z", notes="older"))
    assert [r.outcome for r in older] == [oc.KEPT_EXISTING]
    newer = await push(storage, entry("a", 1, updated="2025-06-06T10:00:00.000Z", notes="newest"))
    assert [r.outcome for r in newer] == [oc.UPDATED]
    assert state_rows(storage) == {}
    data = query(target(storage), "SELECT data FROM sync_data WHERE entity_id = 'a'")[0]["data"]
    assert msgspec.json.decode(data)["notes"] == "newest"


async def test_rows_whose_text_cannot_give_their_state_back_keep_a_state_row(storage: Storage) -> None:
    add_users(target(storage), ADA)
    await push(
        storage,
        entry("refused", 1, type="masterclass"),  # logbook_entries' CHECK refuses it: no row to find it by
        entry("float", 2, metadata={"tempo": 72.5}),  # not a plain document: its text may not round-trip
        entry("no-time", 3, updatedAt=None),  # no edit time in the document
    )
    assert set(state_rows(storage)) == {"refused", "float", "no-time"}
    # And a twin of the refused one is still found, by the state row's content key.
    results = await push(storage, entry("refused-twin", 1, type="masterclass", updated="2025-06-03T09:00:00.000Z"))
    assert [(r.outcome, r.duplicate_of) for r in results] == [(oc.CONTENT_DUPLICATE, "refused")]


async def test_a_holder_whose_logbook_id_another_user_holds_finds_the_other_holders(storage: Storage) -> None:
    """Its content's time comes from its document when its logbook row is not its own: when it is
    deleted, its twin goes to the other live entry with that content, not to a live row of its own."""
    add_users(target(storage), ADA, BEN)
    await push_entries(storage, BEN_USER, entry("x", 50, notes="ben's"))  # Ben's logbook row holds id x
    await push(storage, entry("x", 1, notes="C"))  # Ada's x: in sync_data only, so it keeps a state row
    await push(storage, entry("z", 1, notes="D"))
    await push(storage, entry("z", 1, notes="C", updated="2025-06-02T18:30:12.345Z"))  # an edit: not a twin
    twin = await push(storage, entry("y", 1, notes="C", updated="2025-06-03T18:30:12.345Z"))
    assert [r.outcome for r in twin] == [oc.CONTENT_DUPLICATE]
    results = await push(storage, deleted=["x"])
    assert [r.outcome for r in results] == [oc.DELETED]
    ada = {r["entity_id"] for r in query(target(storage), "SELECT entity_id FROM sync_data WHERE deleted_at IS NULL"
                                                          " AND user_id = ?", (ADA[0],))}
    assert ada == {"z"}  # y stays a content duplicate, now of z
    assert state_rows(storage)["y"] == "z"
