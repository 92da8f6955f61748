"""Values come back exactly (quotes, newlines, NULs, unicode), and rows too long for one statement are
either written in pieces, each statement under the limit, or reported and left out: never truncated."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from service.d1_export.literals import LiteralRenderer, literal_bytes, needs_hex, split_text
from tests.conftest import ADA
from tests.d1_export.conftest import Export
from tests.d1_export.helpers import (
    app_state,
    apply_export,
    copy_database,
    create_app_database,
    execute_script,
    export_files,
    full_dump,
    insert_logbook_row,
    insert_sync_row,
    logbook_row,
    read_statements,
    rows,
)

D1_MAX_STATEMENT_BYTES = 100_000
AWKWARD_TEXTS = [
    "it's a \"quote\" and a backslash \\ and '' two",
    "line one\nline two;\n-- not a comment\n/* nor this */",
    "windows\r\nline\rends",
    "nul \x00 inside, and at the end \x00",
    "Chopin — Nocturne Op. 9 Nº 2, 練習, مرحبا, e\u0301, \u2028 separator, 🎹🎻",
    "'); DROP TABLE users; --",
    "X'00' AS TEXT) || 'tricky",
]


def production_and_recovered(tmp_path: Path) -> tuple[Path, Path]:
    production = create_app_database(tmp_path / "production.db", ADA, sequence=10)
    return production, copy_database(production, tmp_path / "recovered.db")


def insert_logbook(path: Path, entry_id: str, notes: str) -> None:
    insert_logbook_row(path, logbook_row(entry_id, ADA[0], notes=notes))


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_awkward_text_round_trips_exactly(tmp_path: Path, export_d1: Export, text: str) -> None:
    production, recovered = production_and_recovered(tmp_path)
    document = json.dumps({"id": "e1", "notes": text}, ensure_ascii=False)
    insert_sync_row(recovered, ADA[0], "logbook_entry", "e1", document)
    insert_sync_row(recovered, ADA[0], "goal", text, text)  # as raw text and as a key
    insert_logbook(recovered, "e1", text)

    result = export_d1(recovered)
    assert result.code == 0, result.err
    apply_export(production, result.out_dir)

    assert app_state(production) == app_state(recovered)
    stored = rows(production, "SELECT hex(data) FROM sync_data WHERE entity_type = 'goal' AND entity_id = ?", (text,))
    assert stored == [(text.encode("utf-8").hex().upper(),)]
    assert rows(production, "SELECT notes FROM logbook_entries") == [(text,)]
    assert rows(production, "SELECT COUNT(*) FROM users") == [(1,)]


def test_text_quote_cannot_carry_is_written_in_hex() -> None:
    renderer = LiteralRenderer()
    try:
        assert renderer.render_one("a\x00b") == "CAST(X'610062' AS TEXT)"
        assert renderer.render_one("it's") == "'it''s'"
        assert renderer.render([None, 3, 1.5, float("inf")]) == ["NULL", "3", "1.5", "9e999"]
    finally:
        renderer.close()


@pytest.mark.parametrize("text", ["plain " * 5000, "it's 🎹 — \"q\" " * 3000, "nul\x00 and \r\n" * 4000])
def test_split_text_pieces_fit_and_join_back(text: str) -> None:
    budget = 4000
    pieces = split_text(text, budget)
    assert "".join(pieces) == text
    assert all(literal_bytes(piece, hex_form=needs_hex(text)) <= budget for piece in pieces)
    assert len(pieces) > 1


def long_document(size: int) -> str:
    """A JSON document of at most `size` bytes, full of quotes and multi-byte characters."""
    unit = "it's \"legato\" — 練習 🎹\n"
    escaped_unit = json.dumps(unit, ensure_ascii=False)[1:-1]
    document = json.dumps({"id": "long", "notes": unit * (size // len(escaped_unit.encode("utf-8")) - 1)},
                          ensure_ascii=False)
    assert size - 100 < len(document.encode("utf-8")) <= size
    return document


def test_long_rows_are_written_in_pieces_under_the_limit(tmp_path: Path, export_d1: Export) -> None:
    production, recovered = production_and_recovered(tmp_path)
    insert_sync_row(recovered, ADA[0], "goal", "short", '{"id":"short"}')
    insert_sync_row(recovered, ADA[0], "practice_plan", "300k", long_document(300_000))
    insert_sync_row(recovered, ADA[0], "practice_plan", "1.99m", long_document(1_990_000))
    insert_sync_row(recovered, ADA[0], "goal", "crlf", "\r\n" * 120_000)  # hex form: twice the bytes
    insert_logbook(recovered, "long-notes", "notes that go on " * 9000)

    result = export_d1(recovered)
    assert result.code == 0, result.err
    for file in export_files(result.out_dir):
        assert all(len(s.encode("utf-8")) < D1_MAX_STATEMENT_BYTES for s in read_statements(file))
    report = {tuple(r["key"].values()): r for r in result.oversize()["rows"]}
    assert set(report) == {(ADA[0], "practice_plan", "300k"), (ADA[0], "practice_plan", "1.99m"),
                           (ADA[0], "goal", "crlf"), (ADA[0], "long-notes")}
    assert {r["action"] for r in report.values()} == {"split"}
    assert result.manifest()["oversize"] == {"split": 4, "skipped": 0, "report": "oversize.json"}
    assert "split into appended pieces" in result.out

    apply_export(production, result.out_dir)
    assert app_state(production) == app_state(recovered)
    once = full_dump(production)
    apply_export(production, result.out_dir)
    assert full_dump(production) == once


def test_an_interrupted_apply_resumes_without_appending_twice(tmp_path: Path, export_d1: Export) -> None:
    production, recovered = production_and_recovered(tmp_path)
    insert_sync_row(recovered, ADA[0], "practice_plan", "300k", long_document(300_000))
    result = export_d1(recovered)
    (file,) = [f for f in export_files(result.out_dir) if f.name.endswith("sync_data.sql")]
    statements = read_statements(file)
    assert len(statements) > 4

    # Wherever an apply stopped (statement by statement, outside a transaction), applying the whole file
    # again completes the row exactly. Stopped between the seq claim and the INSERT, the claim is made
    # again: the row gets the next value, and the one claimed first is a harmless gap.
    key = (ADA[0], "practice_plan", "300k")
    (recovered_seq,) = app_state(recovered)["sync_data"][key][4:]
    for stopped_after in range(1, len(statements)):
        target = copy_database(production, tmp_path / f"stopped-{stopped_after}.db")
        execute_script(target, "\n".join(statements[:stopped_after]))
        apply_export(target, result.out_dir)
        state = app_state(target)
        assert state["sync_data"][key][:4] == app_state(recovered)["sync_data"][key][:4], stopped_after
        claimed_twice = stopped_after == 2  # the ensure-row statement, then the claim
        assert state["sync_data"][key][4] == recovered_seq + claimed_twice
        assert state["sync_sequence"] == [(1, recovered_seq + claimed_twice)]


def test_a_newer_production_row_is_not_touched_by_a_long_older_one(tmp_path: Path, export_d1: Export) -> None:
    production, recovered = production_and_recovered(tmp_path)
    insert_sync_row(recovered, ADA[0], "practice_plan", "plan", long_document(250_000), version=2)
    insert_sync_row(production, ADA[0], "practice_plan", "plan", '{"id":"plan","edited":"in production"}', version=3)
    before = full_dump(production)

    result = export_d1(recovered)
    apply_export(production, result.out_dir)

    after = full_dump(production)
    assert after["sync_data"] == before["sync_data"]
    assert after["sync_sequence"] == before["sync_sequence"]  # no seq claimed for a row not written


def test_rows_over_d1_row_limit_are_reported_and_left_out(tmp_path: Path, export_d1: Export) -> None:
    production, recovered = production_and_recovered(tmp_path)
    insert_sync_row(recovered, ADA[0], "goal", "fits", '{"id":"fits"}')
    insert_sync_row(recovered, ADA[0], "practice_plan", "too-big", "x" * 2_000_001)

    result = export_d1(recovered)

    assert result.code == 1
    assert "WARNING: 1 rows could not be written" in result.out
    (skipped,) = result.oversize()["rows"]
    assert skipped["action"] == "skipped"
    assert skipped["key"] == {"user_id": ADA[0], "entity_type": "practice_plan", "entity_id": "too-big"}
    assert "row limit" in skipped["reason"]
    assert result.manifest()["rows"]["sync_data"] == 1
    apply_export(production, result.out_dir)
    assert [r[0] for r in rows(production, "SELECT entity_id FROM sync_data")] == ["fits"]


def test_a_key_too_long_for_any_statement_is_reported_and_left_out(tmp_path: Path, export_d1: Export) -> None:
    _, recovered = production_and_recovered(tmp_path)
    insert_sync_row(recovered, ADA[0], "goal", "k" * 120_000, '{"id":"long key"}')

    result = export_d1(recovered)

    assert result.code == 1
    (skipped,) = result.oversize()["rows"]
    assert skipped["action"] == "skipped"
    assert "key or version columns are too long" in skipped["reason"]
    assert result.manifest()["rows"]["sync_data"] == 0


def test_unique_columns_are_never_written_in_pieces(tmp_path: Path, export_d1: Export) -> None:
    production, recovered = production_and_recovered(tmp_path)
    # Two rows whose long ids would both start as '' if ids were split; their data is split instead.
    for n in range(2):
        with closing(sqlite3.connect(recovered)) as conn:
            conn.execute("INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, seq)"
                         " VALUES (?, ?, 'goal', ?, ?, 'c', ?)", (f"sync_{n}" + "i" * 2000, ADA[0], f"g{n}",
                                                                 long_document(150_000), 20 + n))
            conn.execute("UPDATE sync_sequence SET current_value = ?", (20 + n,))
            conn.commit()

    result = export_d1(recovered, "--max-statement-bytes", "40000")

    assert result.code == 0, result.err
    assert {tuple(r["split_columns"]) for r in result.oversize()["rows"]} == {("data",)}
    apply_export(production, result.out_dir)
    assert app_state(production) == app_state(recovered)
    assert rows(production, "SELECT id FROM sync_data") == rows(recovered, "SELECT id FROM sync_data")
