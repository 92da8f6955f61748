"""Reading the inputs: single-user documents, NDJSON lines, format sniffing, and cutting into batches."""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.replay.batching import cut_batches, skip_units
from service.replay.documents import parse_export
from service.replay.inputs import JSON_DOCUMENT, NDJSON, SQL_DUMP, sniff
from service.replay.model import BadLine, Item, OwnerClaim, RecordGroup, UnreadableInput
from service.replay.ndjson import parse_line, read_items
from service.usecases.ingest import IncomingRecord
from tests.conftest import ADA
from tests.replay.helpers import EXPORT_1_0, EXPORT_2_0, LOCALSTORAGE_DUMP, PRACTICE_REPORT

ADA_CLAIM = OwnerClaim(ADA[0], ADA[1])


def decoded(records: list[IncomingRecord]) -> list[tuple[str, Any]]:
    return [(r.entity_type, json.loads(r.raw)) for r in records]


# ---- single-user documents -------------------------------------------------------------------------


def test_full_export_2_0_maps_every_array_and_keeps_records_verbatim() -> None:
    data = EXPORT_2_0.read_bytes()
    document = parse_export(data)
    export = json.loads(data)
    assert document.kind == "full export 2.0"
    assert document.claim == ADA_CLAIM
    assert document.device_id is None
    records = decoded(document.records)
    assert records == (
        [("logbook_entry", e) for e in export["logbook"]]
        + [("goal", g) for g in export["goals"]]
        + [("repertoire_item", r) for r in export["repertoire"]]
        + [("user_preferences", export["preferences"])]
    )
    # Byte for byte as in the file (indentation included), so the raw archive holds what the device wrote.
    assert all(r.raw in data for r in document.records)
    assert document.not_replayed == ["scoreMetadata"]  # the empty arrays have nothing to lose


def test_full_export_1_0_has_no_goals_or_plans() -> None:
    document = parse_export(EXPORT_1_0.read_bytes())
    assert document.kind == "full export 1.0"
    assert [t for t, _ in decoded(document.records)] == ["logbook_entry"] * 5 + ["repertoire_item", "user_preferences"]
    assert document.units == 7


def test_practice_report_is_a_bare_array_of_entries_without_an_owner() -> None:
    document = parse_export(PRACTICE_REPORT.read_bytes())
    assert document.kind == "practice report"
    assert document.claim is None
    assert [t for t, _ in decoded(document.records)] == ["logbook_entry"] * 5


def test_localstorage_dump_gives_entries_goals_deletions_owner_and_device() -> None:
    dump = json.loads(LOCALSTORAGE_DUMP.read_text(encoding="utf-8"))
    document = parse_export(LOCALSTORAGE_DUMP.read_bytes())
    assert document.kind == "localStorage dump"
    assert document.claim == ADA_CLAIM
    assert document.device_id == "dev_a1B2c3D4e5F6g7H8"
    assert decoded(document.records) == (
        [("logbook_entry", e) for e in json.loads(dump["mirubato:logbook:entries"])]
        + [("goal", g) for g in json.loads(dump["mirubato:logbook:goals"])]
    )
    assert document.deleted == {"logbook_entry": ["V1StGXR8_Z5jdHi6B-0001"]}
    assert document.units == 8 + 1 + 1
    assert document.not_replayed == ["mirubato:lowercase-migration-v1"]


def test_localstorage_values_already_parsed_by_the_dump_tool_are_read_too() -> None:
    dump = {
        "mirubato:logbook:entries": [{"id": "e1", "duration": 5}],
        "mirubato:logbook:deletedEntries": ["e0"],
        "mirubato:user": {"email": "ada.pianist@example.com"},
        "mirubato:device-id": json.dumps("dev_a1B2c3D4e5F6g7H8"),  # stored with JSON.stringify
    }
    document = parse_export(json.dumps(dump).encode())
    assert decoded(document.records) == [("logbook_entry", {"id": "e1", "duration": 5})]
    assert document.deleted == {"logbook_entry": ["e0"]}
    assert document.claim == OwnerClaim(None, "ada.pianist@example.com")
    assert document.device_id == "dev_a1B2c3D4e5F6g7H8"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"", "body", "empty"),
        (b'{"logbook": [', "body", "not valid JSON"),
        (b'"just a string"', "body", "not a Mirubato"),
        (b'{"hello": "world"}', "body", "not a Mirubato"),
        (b'{"logbook": {"id": "e1"}}', "logbook", "must be an array"),
        (b'{"mirubato:logbook:entries": "[{\\"id\\": "}', "mirubato:logbook:entries", "not valid JSON"),
        (b'{"mirubato:user": "5"}', "mirubato:user", "must be an object"),
    ],
)
def test_unreadable_documents_name_the_field_at_fault(body: bytes, field: str, reason: str) -> None:
    with pytest.raises(UnreadableInput) as error:
        parse_export(body)
    assert error.value.field == field
    assert reason in error.value.reason


# ---- NDJSON lines ----------------------------------------------------------------------------------


def test_a_changes_line_maps_push_groups_to_entity_types() -> None:
    line = {"user_id": ADA[0], "device_id": "dev_x", "changes": {"entries": [{"id": "e1"}], "goals": [{"id": "g1"}],
            "planOccurrences": [{"id": "o1"}]}}
    item = parse_line(7, json.dumps(line).encode())
    assert isinstance(item, RecordGroup)
    assert item.claim == OwnerClaim(ADA[0]) and item.device_id == "dev_x" and item.line == 7
    assert decoded(item.records) == [("logbook_entry", {"id": "e1"}), ("goal", {"id": "g1"}),
                                     ("plan_occurrence", {"id": "o1"})]


def test_a_records_line_keeps_deletions_and_quarantines_rather_than_drops_odd_records() -> None:
    line = {"email": "ben@example.com", "records": [{"entity_type": "goal", "data": {"id": "g1"}},
                                                    {"entity_type": "mystery"}],
            "deleted": {"logbook_entry": ["e9"]}}
    item = parse_line(1, json.dumps(line).encode())
    assert isinstance(item, RecordGroup)
    assert item.claim == OwnerClaim(None, "ben@example.com")
    assert decoded(item.records) == [("goal", {"id": "g1"}), ("mystery", None)]
    assert item.deleted == {"logbook_entry": ["e9"]}
    assert item.units == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"user_id": "u", "records": [', "invalid JSON"),
        (b"[1, 2]", "wrong shape"),
        (b'{"user_id": "u"}', "needs `changes`, `records` or `deleted`"),
        (b'{"user_id": "u", "changes": {"entries": 5}}', "wrong shape"),
        (b'{"user_id": 5, "changes": {}}', "wrong shape"),
        (b'{"user_id": "u", "device_id": "dev x!", "changes": {}}', "device_id"),
        (b'{"user_id": "u", "records": [{"data": {}}]}', "wrong shape"),
    ],
)
def test_bad_lines_say_why(text: bytes, reason: str) -> None:
    item = parse_line(3, text)
    assert isinstance(item, BadLine)
    assert item.line == 3 and reason in item.reason and item.text == text


def test_blank_lines_are_skipped_but_counted_and_long_lines_are_not_read_whole() -> None:
    good = json.dumps({"user_id": "u", "deleted": {"goal": ["g1"]}}).encode()
    long_line = b'{"user_id": "u", "records": [' + b" " * 5000 + b"]}"
    stream = io.BytesIO(b"\xef\xbb\xbf" + good + b"\n\n   \r\n" + long_line + b"\n" + good + b"\r\n")
    items = list(read_items(stream, max_line_bytes=1000))
    assert [type(i).__name__ for i in items] == ["RecordGroup", "BadLine", "RecordGroup"]
    assert [getattr(i, "line", None) for i in items] == [1, 4, 5]
    bad = items[1]
    assert isinstance(bad, BadLine) and "longer than 1000 bytes" in bad.reason and len(bad.text) < len(long_line)


# ---- recognising a file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("batch.ndjson", b"", NDJSON),
        ("batch.jsonl", b"{}", NDJSON),
        ("batch.json", b'{"user_id": "u", "changes": {}}\n{"user_id": "v", "changes": {}}\n', NDJSON),
        ("export.json", b'{\n  "logbook": []\n}', JSON_DOCUMENT),
        ("export.json", b'{"logbook": [], "version": "2.0"}', JSON_DOCUMENT),
        ("report.json", b"\xef\xbb\xbf  [\n {", JSON_DOCUMENT),
        ("d1.sql", b"anything", SQL_DUMP),
        ("dump.txt", b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;", SQL_DUMP),
        ("dump", b"-- wrangler d1 export\nCREATE TABLE", SQL_DUMP),
        ("notes.txt", b"hello", None),
        ("empty.json", b"", None),
    ],
)
def test_formats_are_recognised_by_name_then_content(name: str, head: bytes, expected: str | None) -> None:
    assert sniff(name, head) == expected


# ---- batches ---------------------------------------------------------------------------------------


def group(label: str, live: int, deleted: int = 0) -> RecordGroup:
    records = [IncomingRecord("goal", msgspec.json.encode({"id": f"{label}{i}"})) for i in range(live)]
    return RecordGroup(OwnerClaim(label), None, records, {"goal": [f"{label}-d{i}" for i in range(deleted)]})


def unit_labels(items: list[Item]) -> list[str]:
    labels: list[str] = []
    for item in items:
        if isinstance(item, BadLine):
            labels.append(f"bad{item.line}")
        else:
            labels += [json.loads(r.raw)["id"] for r in item.records]
            labels += [i for ids in item.deleted.values() for i in ids]
    return labels


items_strategy = st.lists(
    st.one_of(
        st.builds(group, st.sampled_from("abc"), st.integers(0, 6), st.integers(0, 3)),
        st.builds(BadLine, st.integers(1, 99), st.just("bad"), st.just(b"x")),
    ),
    max_size=12,
)


@given(items=items_strategy, size=st.integers(1, 7), skipped=st.integers(0, 40))
def test_batches_hold_every_unit_once_in_order(items: list[Item], size: int, skipped: int) -> None:
    everything = unit_labels(items)
    batches = list(cut_batches(skip_units(items, skipped), size))
    assert [label for b in batches for label in unit_labels(b.items)] == everything[skipped:]
    assert all(b.units == len(unit_labels(b.items)) for b in batches)
    assert all(b.units == size for b in batches[:-1]) and all(0 < b.units <= size for b in batches)
    assert [b.last for b in batches] == [False] * (len(batches) - 1) + [True] * bool(batches)


def test_a_group_is_cut_between_its_records_and_its_deleted_ids() -> None:
    head, tail = group("a", 2, 3).split(3)
    assert unit_labels([head]) == ["a0", "a1", "a-d0"] and unit_labels([tail]) == ["a-d1", "a-d2"]
    assert head.claim == tail.claim == OwnerClaim("a")
