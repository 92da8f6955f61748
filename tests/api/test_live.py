"""The live-sync socket's adapter parts: authentication as the app's worker does it, messages in to an
upload's records, stored rows out to the worker's message shapes."""

from __future__ import annotations

import logging
from datetime import timedelta

import msgspec
import pytest

from service.api.live import (
    BadMessage,
    Claims,
    RedactTokens,
    Refusal,
    authenticate,
    decode_message,
    fold,
    last_seq_of,
    mutation_of,
    row_event,
)
from service.store.rows import SyncRow
from tests.conftest import ADA, SECRET, token_for


def test_authentication_refuses_as_the_worker_does() -> None:
    assert authenticate(SECRET, None, "x") == Refusal(400, "Missing userId or token")
    assert authenticate(SECRET, ADA[0], "") == Refusal(400, "Missing userId or token")
    assert authenticate(SECRET, ADA[0], "not-a-jwt") == Refusal(401, "Invalid or expired token")
    wrong = token_for(ADA, secret=SECRET + "-not")
    expired = token_for(ADA, lifetime=timedelta(seconds=-60))
    assert authenticate(SECRET, ADA[0], wrong) == Refusal(401, "Invalid or expired token")
    assert authenticate(SECRET, ADA[0], expired) == Refusal(401, "Invalid or expired token")
    assert authenticate(SECRET, ADA[0], token_for(ADA)) == Claims(ADA[0], ADA[1])


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"not json", "Invalid JSON format"),
        (b"[1, 2]", "Invalid sync event format"),
        (b'{"timestamp": "2025-01-01T00:00:00Z"}', "type is missing"),
        (b'{"type": "ENTRY_CREATED"}', "entry must be an object"),
        (b'{"type": "ENTRY_CREATED", "entry": [1]}', "entry must be an object"),
        (b'{"type": "ENTRY_DELETED", "entryId": 5}', "entryId must be a non-empty string"),
        (b'{"type": "PIECE_REMOVED"}', "scoreId must be a non-empty string"),
        (b'{"type": "BULK_SYNC", "entries": {}}', "Invalid sync event format"),
        (b'{"type": "SELF_DESTRUCT"}', "unknown type"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(message: bytes, error: str) -> None:
    with pytest.raises(BadMessage, match=error):
        mutation_of(decode_message(message))


def test_last_seq_must_be_a_non_negative_integer() -> None:
    assert last_seq_of(decode_message(b'{"type": "SYNC_REQUEST"}')) == 0
    assert last_seq_of(decode_message(b'{"type": "SYNC_REQUEST", "lastSeq": 42}')) == 42
    for bad in (b"-1", b"1.5", b'"7"', b"true"):
        with pytest.raises(BadMessage):
            last_seq_of(decode_message(b'{"type": "SYNC_REQUEST", "lastSeq": ' + bad + b"}"))


def test_change_messages_become_records_with_their_exact_bytes() -> None:
    entry = b'{"id": "e1",  "duration": 1.0}'
    created = mutation_of(decode_message(b'{"type": "ENTRY_UPDATED", "entry": ' + entry + b"}"))
    assert [(r.entity_type, r.raw) for r in created.records] == [("logbook_entry", entry)]
    deleted = mutation_of(decode_message(b'{"type": "ENTRY_DELETED", "entryId": "e1"}'))
    assert deleted.records == [] and deleted.deleted == {"logbook_entry": ["e1"]}
    removed = mutation_of(decode_message(b'{"type": "PIECE_DISSOCIATED", "scoreId": "a-b"}'))
    assert removed.deleted == {"repertoire_item": ["a-b"]}
    plan = mutation_of(decode_message(b'{"type": "PLAN_UPDATED", "plan": {"id": "p"}, "occurrences": [{"id": "o"}]}'))
    assert [r.entity_type for r in plan.records] == ["practice_plan", "plan_occurrence"]
    bulk = mutation_of(decode_message(b'{"type": "REPERTOIRE_BULK_SYNC", "pieces": [{"scoreId": "a-b"}, 5]}'))
    assert [r.raw for r in bulk.records] == [b'{"scoreId": "a-b"}', b"5"]  # the pipeline judges content


def row(entity_id: str, seq: int, data: object = None, deleted_at: str | None = None) -> SyncRow:
    return SyncRow(entity_id, msgspec.json.encode(data or {"id": entity_id}).decode(), seq, deleted_at)


def test_rows_become_the_workers_messages() -> None:
    live = row_event("logbook_entry", row("e1", 3, {"id": "e1", "type": "PRACTICE"}), created=True)
    assert live is not None and live["type"] == "ENTRY_CREATED" and live["seq"] == 3
    assert live["entry"] == {"id": "e1", "type": "practice"}  # enums lowercased, as pulls are
    gone = row_event("logbook_entry", row("e1", 4, deleted_at="2025-07-02T09:15:00.000Z"), created=False)
    assert gone is not None and (gone["type"], gone["entryId"], gone["seq"]) == ("ENTRY_DELETED", "e1", 4)
    piece = row_event("repertoire_item", row("a-b", 5, {"id": "r1"}), created=False)
    assert piece is not None and piece["type"] == "PIECE_UPDATED" and piece["piece"]["scoreId"] == "a-b"
    assert row_event("goal", row("g1", 6), created=True) is None  # the socket carries no goals


def test_bulk_messages_stay_bulk_with_deletions_beside_them() -> None:
    events = [e for e in (
        row_event("logbook_entry", row("e1", 3), created=True),
        row_event("logbook_entry", row("e2", 5), created=False),
        row_event("logbook_entry", row("e3", 4, deleted_at="2025-07-02T09:15:00.000Z"), created=False),
    ) if e is not None]
    folded = fold("BULK_SYNC", events)
    assert [m["type"] for m in folded] == ["BULK_SYNC", "ENTRY_DELETED"]
    assert [e["id"] for e in folded[0]["entries"]] == ["e1", "e2"] and folded[0]["lastSeq"] == 5
    assert fold("ENTRY_CREATED", events[:1]) == events[:1]


def test_server_log_lines_never_carry_the_sockets_token() -> None:
    token = token_for(ADA)
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5000", f"/sync/ws?userId={ADA[0]}&token={token}"), None)
    RedactTokens().filter(record)
    line = record.getMessage()
    assert token not in line and f"userId={ADA[0]}&token=[redacted]" in line
