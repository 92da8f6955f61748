"""The whole path: the app database wiped by the incident, recovered through the service's pipeline, exported,
and the files applied to production: production then holds exactly what the service recovered."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ADA, BEN
from tests.d1_export.conftest import Export
from tests.d1_export.helpers import (
    LOGBOOK_COLUMNS,
    app_state,
    apply_export,
    copy_database,
    export_files,
    full_dump,
    insert_logbook_row,
    insert_sync_row,
    read_statements,
    recover,
    rows,
)
from tests.test_incident import build_app_database, device_copies, owner_of, run_the_incident_migration

LAPTOP = "dev_adaLaptop00000001"
D1_MAX_STATEMENT_BYTES = 100_000
STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
FORBIDDEN = re.compile(r"\b(DROP|DELETE|REPLACE)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Incident:
    before: Path  # production after the wipe, when the service took its copy
    recovered: Path  # that copy after the devices uploaded again
    upload_ids: list[str]
    edited_id: str  # a logbook entry edited by the last upload (version 2, a later seq)
    deleted_id: str  # a logbook entry deleted by the last upload

    def production(self, name: str = "production.db") -> Path:
        """A fresh copy of production as it was before recovery."""
        return copy_database(self.before, self.before.with_name(name))


async def recovered_incident(tmp_path: Path) -> Incident:
    before = tmp_path / "before.db"
    build_app_database(before)
    run_the_incident_migration(before)
    # A live push that reached production after the wipe, before the service's copy was taken.
    insert_sync_row(before, BEN[0], "goal", "goal-after-incident", '{"id":"goal-after-incident","title":"Scales"}')
    recovered = copy_database(before, tmp_path / "recovered.db")

    copies = device_copies()
    uploads: list[Any] = [(owner_of(device), device, records, {}) for device, records in copies.items()]
    first, second = copies[LAPTOP][0][1], copies[LAPTOP][1][1]
    edited = {**first, "notes": "edited on the laptop", "updatedAt": "2025-12-05T10:00:00.000Z"}
    uploads.append((ADA, LAPTOP, [("logbook_entry", edited)], {"logbook_entry": [second["id"]]}))
    upload_ids = await recover(recovered, uploads)
    return Incident(before, recovered, upload_ids, first["id"], second["id"])


async def test_applied_files_give_production_the_recovered_rows(tmp_path: Path, export_d1: Export) -> None:
    incident = await recovered_incident(tmp_path)
    recovered = app_state(incident.recovered)
    assert len(recovered["sync_data"]) > 10
    assert recovered["sync_data"][(ADA[0], "logbook_entry", incident.edited_id)][2] == 2  # version
    assert recovered["sync_data"][(ADA[0], "logbook_entry", incident.deleted_id)][3] is not None  # deleted_at

    result = export_d1(incident.recovered)
    assert result.code == 0, result.err
    production = incident.production()
    apply_export(production, result.out_dir)

    # Per key: data, checksum, version, deleted_at and seq (the recovered numbering, gaps included);
    # logbook_entries column for column; the sequence.
    assert app_state(production) == recovered


async def test_applying_the_files_again_changes_nothing(tmp_path: Path, export_d1: Export) -> None:
    incident = await recovered_incident(tmp_path)
    result = export_d1(incident.recovered)
    production = incident.production()

    apply_export(production, result.out_dir)
    once = full_dump(production)
    apply_export(production, result.out_dir)
    assert full_dump(production) == once

    # On the database the rows came from, nothing changes either.
    source_copy = copy_database(incident.recovered, tmp_path / "source-copy.db")
    before = full_dump(source_copy)
    apply_export(source_copy, result.out_dir)
    assert full_dump(source_copy) == before


async def test_statements_are_small_inserts_and_updates_only(tmp_path: Path, export_d1: Export) -> None:
    incident = await recovered_incident(tmp_path)
    result = export_d1(incident.recovered)
    manifest = result.manifest()

    files = export_files(result.out_dir)
    assert [f["name"] for f in manifest["files"]] == [f.name for f in files]
    tables = [f["table"] for f in manifest["files"]]
    assert tables == sorted(tables, key=["sync_data", "logbook_entries", "sync_sequence"].index)
    largest = 0
    for file, described in zip(files, manifest["files"], strict=True):
        statements = read_statements(file)
        assert described["statements"] == len(statements)
        assert described["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        for statement in statements:
            size = len(statement.encode("utf-8"))
            assert size < D1_MAX_STATEMENT_BYTES
            largest = max(largest, size)
            assert statement.startswith(("INSERT INTO ", "UPDATE "))
            assert not FORBIDDEN.search(STRING_LITERAL.sub("''", statement)), statement[:200]
            assert not statement.upper().startswith(("BEGIN", "COMMIT"))  # D1 refuses transaction statements
    assert manifest["max_statement_bytes"] == largest
    state = app_state(incident.recovered)
    assert manifest["rows"] == {
        "sync_data": len(state["sync_data"]),
        "logbook_entries": len(state["logbook_entries"]),
        "sync_sequence": 1,
    }
    assert manifest["source"]["sha256"] == hashlib.sha256(incident.recovered.read_bytes()).hexdigest()


async def test_production_that_moved_on_keeps_its_newer_rows(tmp_path: Path, export_d1: Export) -> None:
    incident = await recovered_incident(tmp_path)
    result = export_d1(incident.recovered)
    recovered = app_state(incident.recovered)
    production = incident.production()

    # Since the service's copy, the app kept taking pushes: new rows whose seq values the recovered rows
    # also hold, and a newer version (7) of an entry the service recovered at version 2.
    for n in range(3):
        insert_sync_row(production, BEN[0], "goal", f"live-goal-{n}", f'{{"id":"live-goal-{n}"}}')
    edited_key = (ADA[0], "logbook_entry", incident.edited_id)
    insert_sync_row(production, ADA[0], "logbook_entry", incident.edited_id, '{"notes":"edited later on the phone"}',
                    version=7)
    logbook = recovered["logbook_entries"][incident.edited_id]
    insert_logbook_row(production, dict(zip(LOGBOOK_COLUMNS, logbook, strict=True))
                       | {"notes": "edited later", "sync_version": 7})
    live_before = {r[:3]: r[3:] for r in rows(production, "SELECT user_id, entity_type, entity_id, data, version,"
                                                          " seq FROM sync_data")}
    top_seq_before = max(r[-1] for r in live_before.values())

    apply_export(production, result.out_dir)
    state = app_state(production)
    after = {r[:3]: r[3:] for r in rows(production, "SELECT user_id, entity_type, entity_id, data, version, seq"
                                                    " FROM sync_data")}
    for key, kept in live_before.items():
        assert after[key] == kept, key  # production's rows, newer version included, untouched
    assert state["logbook_entries"][incident.edited_id][9] == "edited later"
    assert state["logbook_entries"][incident.edited_id][16] == 7

    written = [key for key in recovered["sync_data"] if key not in live_before]
    for key in written:
        assert state["sync_data"][key][:4] == recovered["sync_data"][key][:4], key
    # Every written row got a seq above anything production had, in the order the service wrote them,
    # and the sequence covers them (the seq index would have refused a duplicate).
    new_seqs = [state["sync_data"][key][4] for key in sorted(written, key=lambda k: recovered["sync_data"][k][4])]
    assert min(new_seqs) > top_seq_before
    assert new_seqs == sorted(new_seqs)
    assert state["sync_sequence"][0][1] >= max(new_seqs)
    assert edited_key in live_before

    once = full_dump(production)
    apply_export(production, result.out_dir)
    assert full_dump(production) == once


async def test_upload_filter_exports_the_keys_that_upload_brought(tmp_path: Path, export_d1: Export) -> None:
    incident = await recovered_incident(tmp_path)
    recovered = app_state(incident.recovered)

    last = export_d1(incident.recovered, "--upload", incident.upload_ids[-1], out=tmp_path / "last")
    assert last.code == 0, last.err
    production = incident.production()
    before = app_state(production)
    apply_export(production, last.out_dir)
    state = app_state(production)

    brought = {(ADA[0], "logbook_entry", incident.edited_id), (ADA[0], "logbook_entry", incident.deleted_id)}
    assert set(state["sync_data"]) == set(before["sync_data"]) | brought
    for key in brought:
        assert state["sync_data"][key] == recovered["sync_data"][key]
    assert set(state["logbook_entries"]) == {incident.edited_id, incident.deleted_id}
    assert last.manifest()["selection"]["upload_id"] == incident.upload_ids[-1]
    assert last.manifest()["rows"]["sync_data"] == 2

    # Ben's phone upload: only Ben's entries.
    ben = export_d1(incident.recovered, "--upload", incident.upload_ids[2], out=tmp_path / "ben")
    assert ben.code == 0, ben.err
    production = incident.production("production-ben.db")
    apply_export(production, ben.out_dir)
    new_keys = set(app_state(production)["sync_data"]) - set(before["sync_data"])
    assert new_keys
    assert {key[0] for key in new_keys} == {BEN[0]}


async def test_a_small_statement_limit_splits_long_rows_and_still_round_trips(
    tmp_path: Path, export_d1: Export
) -> None:
    incident = await recovered_incident(tmp_path)
    # A practice diary: notes long enough that neither its sync_data nor its logbook row fits 4 KB.
    diary = {**device_copies()[LAPTOP][2][1], "id": "diary-entry", "notes": "It's \"legato\" — 練習 🎹\n" * 300}
    await recover(incident.recovered, [(ADA, LAPTOP, [("logbook_entry", diary)], {})])

    result = export_d1(incident.recovered, "--max-statement-bytes", "4096", "--max-file-statements", "25")
    assert result.code == 0, result.err
    split = {(row["table"], tuple(row["split_columns"])) for row in result.oversize()["rows"]}
    assert split == {("sync_data", ("data",)), ("logbook_entries", ("notes",))}
    assert result.manifest()["max_statement_bytes"] <= 4096
    assert len(result.manifest()["files"]) > 3

    production = incident.production()
    apply_export(production, result.out_dir)
    assert app_state(production) == app_state(incident.recovered)
    once = full_dump(production)
    apply_export(production, result.out_dir)
    assert full_dump(production) == once
