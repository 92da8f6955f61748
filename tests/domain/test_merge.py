"""The merge rules (CONTRACT section 8) on `plan_merge` directly: which version wins, what is archived,
content duplicates and deletions, and the app client's round trip. No database: `MemoryStore` applies
the plans as the store does."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import outcomes as oc
from service.domain.merge import Repeat, StoredEntity, plan_merge, round_trip_form
from service.domain.outcomes import MergeReason
from service.domain.records import LOGBOOK_ENTRY, Normalised
from tests.domain.merge_model import (
    DELETION_TIMES,
    IDS,
    VERSIONS,
    MemoryStore,
    check_fates,
    deletion,
    entry,
    normalised,
    pushed_back,
    stored_form,
)

A, B, C = IDS


def outcomes(plan: Any) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.reason) for r in plan.results]


def version(entity_id: str, n: int, **changes: Any) -> dict[str, Any]:
    return {**entry(entity_id, n), **changes}


# ---- which version wins --------------------------------------------------------------------------


def test_a_later_edit_wins_and_the_stored_version_is_archived() -> None:
    store = MemoryStore()
    store.push([entry(A, 0)])
    plan = store.push([entry(A, 3)])
    assert outcomes(plan) == [(oc.UPDATED, None)]
    assert [(a.reason, a.checksum) for a in plan.archived] == [
        ("superseded by newer version", store.kept[(LOGBOOK_ENTRY, A)][0].checksum)
    ]
    assert store.finals()[A].live_row == round_trip_form(LOGBOOK_ENTRY, stored_form(entry(A, 3)))


def test_an_earlier_edit_loses_and_is_archived() -> None:
    store = MemoryStore()
    store.push([entry(A, 3)])
    plan = store.push([entry(A, 0)])
    assert outcomes(plan) == [(oc.KEPT_EXISTING, MergeReason.STORED_VERSION_NEWER)]
    assert [a.reason for a in plan.archived] == ["older than stored version"]
    assert plan.sync_writes == []


def test_an_equal_edit_time_with_other_content_keeps_the_stored_version_and_says_so() -> None:
    """Ties keep what is stored (`>` in the rule, not `>=`), with a reason of their own."""
    store = MemoryStore()
    store.push([entry(A, 1)])
    rival = version(A, 1, notes="written on another device at the same millisecond")
    plan = store.push([rival])
    assert outcomes(plan) == [(oc.KEPT_EXISTING, MergeReason.SAME_UPDATED_AT_DIFFERENT_CONTENT)]
    assert plan.sync_writes == [] and [a.reason for a in plan.archived] == ["same edit time as the stored version"]
    assert store.finals()[A].live_row == round_trip_form(LOGBOOK_ENTRY, stored_form(entry(A, 1)))


def test_a_deletion_wins_over_an_edit_as_old_as_it_and_loses_to_a_newer_one() -> None:
    store = MemoryStore()
    store.push([version(A, 0, updatedAt=DELETION_TIMES[0])])
    assert outcomes(store.push([deletion(A, DELETION_TIMES[0])])) == [(oc.DELETED, None)]
    store = MemoryStore()
    store.push([entry(A, 1)])
    plan = store.push([deletion(A, DELETION_TIMES[0])])
    assert outcomes(plan) == [(oc.KEPT_EXISTING, MergeReason.STORED_VERSION_NEWER)]
    assert [a.reason for a in plan.archived] == ["deletion older than stored edit"]


times = st.integers(min_value=0, max_value=5)


@settings(max_examples=200, deadline=None)
@given(first=times, second=times)
def test_of_two_versions_the_later_wins_and_a_tie_keeps_the_first(first: int, second: int) -> None:
    store = MemoryStore()
    one = version(A, 0, notes="one", updatedAt=f"2025-06-0{first + 1}T00:00:00.000Z")
    two = version(A, 0, notes="two", updatedAt=f"2025-06-0{second + 1}T00:00:00.000Z")
    store.push([one])
    plan = store.push([two])
    winner = "two" if second > first else "one"
    assert msgspec.json.decode(store.rows[(LOGBOOK_ENTRY, A)].data or "")["notes"] == winner
    expected = (oc.UPDATED, None) if second > first else (
        oc.KEPT_EXISTING,
        MergeReason.SAME_UPDATED_AT_DIFFERENT_CONTENT if second == first else MergeReason.STORED_VERSION_NEWER,
    )
    assert outcomes(plan) == [expected]
    assert len(plan.archived) == 1  # the loser, whichever it is


@settings(max_examples=200, deadline=None)
@given(edit=st.integers(min_value=0, max_value=4), deleted=st.integers(min_value=0, max_value=4),
       deletion_first=st.booleans())
def test_an_edit_beats_a_deletion_only_when_strictly_newer(edit: int, deleted: int, deletion_first: bool) -> None:
    store = MemoryStore()
    records = [version(A, 0, updatedAt=f"2025-06-0{edit + 1}T00:00:00.000Z"),
               deletion(A, f"2025-06-0{deleted + 1}T00:00:00.000Z")]
    for r in reversed(records) if deletion_first else records:
        store.push([r])
    assert store.rows[(LOGBOOK_ENTRY, A)].live is (edit > deleted)


# ---- the app's web client: pulled entries pushed back ---------------------------------------------


def test_a_pulled_entry_pushed_back_by_the_client_is_a_duplicate() -> None:
    """The client adds `goalIds: []` beside `goal_ids`, `notes`/`mood: null`, empty lists, a metadata
    source and an ISO timestamp: the same version, so no write and nothing archived, every time."""
    store = MemoryStore()
    original = version(A, 1, goalIds=["goal-1"])
    store.push([original])
    for _ in range(3):
        plan = store.push([pushed_back(original)])
        assert outcomes(plan) == [(oc.DUPLICATE, None)]
        assert plan.sync_writes == [] and plan.archived == []


def test_the_client_form_of_a_version_is_a_duplicate_whichever_arrives_first() -> None:
    store = MemoryStore()
    store.push([pushed_back(entry(A, 1))])
    assert outcomes(store.push([entry(A, 1)])) == [(oc.DUPLICATE, None)]


def test_a_pulled_entry_of_an_entry_deleted_since_stays_deleted_and_is_not_archived() -> None:
    store = MemoryStore()
    store.push([entry(A, 1)])
    store.push([deletion(A, DELETION_TIMES[2])])
    plan = store.push([pushed_back(entry(A, 1))])
    assert outcomes(plan) == [(oc.SUPPRESSED, MergeReason.DELETED_LATER)]
    assert plan.archived == [] and plan.sync_writes == []


def test_round_trip_form_ignores_only_what_carries_no_information() -> None:
    base = stored_form(version(A, 1, goalIds=["goal-1"], metadata={"source": "timer"}))
    same = round_trip_form(LOGBOOK_ENTRY, base)
    assert round_trip_form(LOGBOOK_ENTRY, {**base, "goalIds": [], "mood": None, "tags": []}) == same
    assert round_trip_form(LOGBOOK_ENTRY, {**base, "type": "PRACTICE"}) == same  # the pull lowercases enums
    for changed in ({"notes": "other"}, {"goal_ids": []}, {"goalIds": ["goal-2"]}, {"duration": 99},
                    {"metadata": {"source": "manual"}}, {"mood": "proud"}):
        assert round_trip_form(LOGBOOK_ENTRY, {**base, **changed}) != same, changed


# ---- archive -------------------------------------------------------------------------------------


def test_a_deleted_entry_brought_back_by_a_newer_edit_archives_the_version_it_held() -> None:
    store = MemoryStore()
    store.push([entry(A, 0)])
    store.push([deletion(A, DELETION_TIMES[0])])
    held = store.rows[(LOGBOOK_ENTRY, A)].checksum
    plan = store.push([entry(A, 3)])
    assert outcomes(plan) == [(oc.UPDATED, None)]
    assert [(a.reason, a.checksum) for a in plan.archived] == [("superseded by newer version", held)]


def test_the_same_losing_version_is_archived_once_per_plan() -> None:
    store = MemoryStore()
    store.push([entry(A, 3)])
    store.push([entry(A, 0), entry(A, 0)])
    store.push([entry(A, 0)])
    assert len(store.archive) == 1


# ---- content duplicates and deletions ------------------------------------------------------------


def test_the_same_content_under_a_second_id_is_a_content_duplicate() -> None:
    store = MemoryStore()
    store.push([entry(A, 1)])
    plan = store.push([entry(B, 1)])
    assert [(r.outcome, r.duplicate_of) for r in plan.results] == [(oc.CONTENT_DUPLICATE, A)]
    assert plan.sync_writes == []
    assert store.finals()[B].duplicate_of == A


def test_when_the_entry_a_duplicate_points_at_is_deleted_the_duplicate_becomes_the_live_entry() -> None:
    """Issue 13 item 3: A live, B the same content, then A deleted: B is live, in every order and
    every way of cutting the three records into uploads."""
    records = [entry(A, 1), entry(B, 1), deletion(A, DELETION_TIMES[1])]
    for order in itertools.permutations(records):
        for cuts in itertools.product([False, True], repeat=len(order) - 1):
            store = MemoryStore()
            batch: list[dict[str, Any]] = [order[0]]
            for record, cut in zip(order[1:], cuts, strict=True):
                if cut:
                    store.push(batch)
                    batch = []
                batch.append(record)
            store.push(batch)
            finals = store.finals()
            assert finals[B].live_row is not None and finals[A].live_row is None, (order, cuts)
            check_fates(finals, records)


def test_the_deletion_that_hands_the_content_on_says_so() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(B, 1)])
    plan = store.push([deletion(A, DELETION_TIMES[1])])
    assert plan.results[0].outcome == oc.DELETED and B in (plan.results[0].note or "")
    written = {w.entity_id: w for w in plan.sync_writes}
    assert written[B].deleted_ms is None and written[B].row_id is None  # B's own version, a new live row
    assert written[B].checksum == normalised(entry(B, 1)).checksum  # type: ignore[union-attr]
    assert written[B].logbook_row is not None and written[A].deleted_ms is not None


def test_a_chain_of_duplicates_hands_the_content_on_one_at_a_time() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(B, 1), entry(C, 1)])
    assert (store.finals()[B].duplicate_of, store.finals()[C].duplicate_of) == (A, A)
    store.push([deletion(A, DELETION_TIMES[2])])
    finals = store.finals()
    assert finals[B].live_row is not None and finals[C].duplicate_of == B
    store.push([deletion(B, DELETION_TIMES[2])])
    finals = store.finals()
    assert finals[C].live_row is not None and finals[B].live_row is None


def test_a_duplicate_deleted_itself_is_not_brought_back_when_its_holder_goes() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(B, 1)])
    assert outcomes(store.push([deletion(B, DELETION_TIMES[2])])) == [(oc.DELETED, None)]
    store.push([deletion(A, DELETION_TIMES[2])])
    finals = store.finals()
    assert finals[A].live_row is None and finals[B].live_row is None and finals[B].duplicate_of is None
    # B's deleted row holds B's version, as when the deletion comes first and the copy after it.
    assert store.rows[(LOGBOOK_ENTRY, B)].checksum == normalised(entry(B, 1)).checksum  # type: ignore[union-attr]


def test_a_deletion_older_than_the_duplicate_leaves_it_alive() -> None:
    store = MemoryStore()
    store.push([entry(A, 2), entry(B, 2)])
    assert outcomes(store.push([deletion(B, DELETION_TIMES[1])])) == [
        (oc.KEPT_EXISTING, MergeReason.STORED_VERSION_NEWER)
    ]
    store.push([deletion(A, DELETION_TIMES[2])])
    assert store.finals()[B].live_row is not None


def test_an_original_brought_back_with_the_same_content_becomes_a_duplicate_of_its_heir() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(B, 1), deletion(A, DELETION_TIMES[1])])
    plan = store.push([version(A, 1, updatedAt="2025-06-04T00:00:00.000Z")])
    assert [(r.outcome, r.duplicate_of) for r in plan.results] == [(oc.CONTENT_DUPLICATE, B)]
    plan = store.push([entry(A, 3)])  # and with content of its own, the live entry again
    assert outcomes(plan) == [(oc.UPDATED, None)]
    assert store.finals()[A].live_row is not None and store.finals()[B].live_row is not None


def test_a_holder_edited_to_other_content_hands_the_old_content_on() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(B, 1)])
    store.push([entry(A, 3)])
    finals = store.finals()
    assert finals[B].live_row == round_trip_form(LOGBOOK_ENTRY, stored_form(entry(B, 1)))


def test_duplicates_point_at_another_live_holder_before_any_is_promoted() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(C, 0)])
    store.push([entry(B, 1)])  # B: a duplicate of A
    store.push([version(C, 1, updatedAt="2025-06-04T00:00:00.000Z")])  # C, already live, edited to A's content
    store.push([deletion(A, DELETION_TIMES[2])])
    finals = store.finals()
    assert finals[B].duplicate_of == C and finals[B].live_row is None


def test_a_newer_version_of_a_duplicate_replaces_its_version_and_an_older_one_loses() -> None:
    store = MemoryStore()
    store.push([entry(A, 1), entry(A, 2)])  # A holds v2's content now
    store.push([entry(B, 2)])  # B: a duplicate of A
    plan = store.push([entry(B, 1)])
    assert outcomes(plan) == [(oc.KEPT_EXISTING, MergeReason.STORED_VERSION_NEWER)]
    plan = store.push([entry(B, 3)])
    assert outcomes(plan) == [(oc.INSERTED, None)]
    assert [a.reason for a in plan.archived] == ["superseded by newer version"]  # B's v2, which had no row


def test_a_duplicate_recorded_for_a_holder_deleted_since_is_repaired_when_it_comes_again() -> None:
    """State left by the rules before this fix: B a duplicate of A, A deleted, nothing live. B's next
    push makes it the live entry."""
    b = normalised(entry(B, 1))
    assert isinstance(b, Normalised)
    stored = {(LOGBOOK_ENTRY, B): StoredEntity(updated_ms=b.updated_ms, content_key=b.content_key, duplicate_of=A)}
    plan = plan_merge([b], stored, {})
    assert outcomes(plan) == [(oc.INSERTED, None)]
    assert [w.entity_id for w in plan.sync_writes] == [B]


def test_a_logbook_id_another_user_holds_is_reported_and_kept_in_sync_data_only() -> None:
    store = MemoryStore()
    store.foreign_logbook_ids = {A}
    plan = store.push([entry(A, 1), entry(B, 0)])
    assert [r.outcome for r in plan.results] == [oc.INSERTED, oc.INSERTED]
    assert "another user" in (plan.results[0].note or "") and plan.results[1].note is None
    rows = {w.entity_id: w.logbook_row for w in plan.sync_writes}
    assert rows[A] is None and rows[B] is not None


def test_a_version_written_into_a_deleted_row_carries_its_logbook_row() -> None:
    """logbook_entries follows the soft-deleted row's content too (the store upserts it)."""
    store = MemoryStore()
    store.push([entry(A, 0)])
    store.push([deletion(A, DELETION_TIMES[2])])
    plan = store.push([entry(A, 2)])
    assert outcomes(plan) == [(oc.SUPPRESSED, MergeReason.DELETED_LATER)]
    (write,) = plan.sync_writes
    assert write.deleted_ms is not None and write.logbook_row is not None and write.logbook_row.duration == 12


# ---- any order -----------------------------------------------------------------------------------

documents = st.one_of(
    st.builds(entry, st.sampled_from(IDS), st.sampled_from(VERSIONS)),
    st.builds(lambda i, v: pushed_back(entry(i, v)), st.sampled_from(IDS), st.sampled_from(VERSIONS)),
    st.builds(deletion, st.sampled_from(IDS), st.sampled_from(DELETION_TIMES)),
)


def push_in_uploads(records: list[dict[str, Any]], cuts: list[bool]) -> MemoryStore:
    store = MemoryStore()
    batch: list[dict[str, Any]] = []
    for record, cut in zip(records, cuts, strict=True):
        if cut and batch:
            store.push(batch)
            batch = []
        batch.append(record)
    if batch:
        store.push(batch)
    return store


@settings(max_examples=400, deadline=None)
@given(records=st.lists(documents, min_size=1, max_size=10), data=st.data())
def test_any_order_and_any_cut_into_uploads_ends_in_the_versions_the_rules_name(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Versions shared by several ids, the client's pushed-back form, deletions: whatever the order and
    however the records are cut into uploads, every id ends in its winning version (its own live row,
    or a content duplicate of a live row with that content) or deleted, and the contents live are the
    winners'."""
    shuffled = data.draw(st.permutations(records))
    cuts = data.draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
    for ordering, cut in ((records, [True] * len(records)), (shuffled, cuts)):
        store = push_in_uploads(list(ordering), cut)
        check_fates(store.finals(), records)
        again = store.push(list(ordering))  # everything once more: nothing changes, nothing archived
        assert again.sync_writes == [] and len(store.archive) == len(set(store.archive))
        check_fates(store.finals(), records)


def test_a_repeat_confirmed_by_its_live_checksum_alone_is_a_duplicate_that_writes_nothing() -> None:
    """A key only repeats name may come with its live row's checksum instead of its state; a checksum
    that is not the repeat's is still refused, as a stored row of another version is."""
    repeat = Repeat(LOGBOOK_ENTRY, "e1", "c1", b"{}")
    plan = plan_merge([repeat, repeat], {}, {}, live_checksums={(LOGBOOK_ENTRY, "e1"): "c1"})
    assert [r.outcome for r in plan.results] == [oc.DUPLICATE, oc.DUPLICATE]
    assert (plan.sync_writes, plan.state_writes, plan.archived) == ([], [], [])
    with pytest.raises(ValueError, match="is not stored with checksum c1"):
        plan_merge([repeat], {}, {}, live_checksums={(LOGBOOK_ENTRY, "e1"): "c2"})
