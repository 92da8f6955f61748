"""Options, filters, the output directory, the manifest and exit codes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import ADA, BEN
from tests.d1_export.conftest import Export
from tests.d1_export.helpers import (
    app_state,
    apply_export,
    copy_database,
    create_app_database,
    export_files,
    insert_logbook_row,
    insert_sync_row,
    logbook_row,
    read_statements,
    rows,
)


@pytest.fixture
def recovered(tmp_path: Path) -> Path:
    """Ada and Ben with rows changed over a few days, and Ada's logbook rows."""
    path = create_app_database(tmp_path / "recovered.db", ADA, BEN, sequence=100)
    for entity_id, updated_at in [("nov-30", "2025-11-30 23:59:59"), ("dec-01", "2025-12-01 00:00:00"),
                                  ("dec-02", "2025-12-02 08:00:00")]:
        insert_sync_row(path, ADA[0], "logbook_entry", entity_id, f'{{"id":"{entity_id}"}}', updated_at=updated_at)
        insert_logbook_row(path, logbook_row(entity_id, ADA[0]))
    insert_sync_row(path, BEN[0], "goal", "ben-goal", '{"id":"ben-goal"}', updated_at="2025-12-03 12:00:00")
    return path


@pytest.mark.parametrize(
    "since",
    ["2025-12-01 00:00:00", "2025-12-01T00:00:00Z", "2025-12-01T01:00:00+01:00", "2025-12-01T00:00:00.250Z",
     "2025-12-01"],
)
def test_since_exports_rows_changed_at_or_after_the_time(recovered: Path, export_d1: Export, since: str) -> None:
    result = export_d1(recovered, "--since", since)
    assert result.code == 0, result.err
    assert result.manifest()["selection"] == {"since": "2025-12-01 00:00:00", "upload_id": None}

    production = create_app_database(recovered.with_name("production.db"), ADA, BEN)
    apply_export(production, result.out_dir)
    assert sorted(r[0] for r in rows(production, "SELECT entity_id FROM sync_data")) == ["ben-goal", "dec-01",
                                                                                          "dec-02"]
    assert sorted(r[0] for r in rows(production, "SELECT id FROM logbook_entries")) == ["dec-01", "dec-02"]


def test_without_a_filter_every_row_of_every_known_user_is_exported(recovered: Path, export_d1: Export) -> None:
    # A row of a user who is not in users (the service never writes one; the app's foreign key would refuse it).
    with closing(sqlite3.connect(recovered)) as conn:
        conn.execute("INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, seq)"
                     " VALUES ('sync_ghost', 'user_ghost', 'goal', 'g', '{}', 'c', 500)")
        conn.commit()
    result = export_d1(recovered)
    assert result.code == 0, result.err
    assert result.manifest()["rows"] == {"sync_data": 4, "logbook_entries": 3, "sync_sequence": 1}

    production = create_app_database(recovered.with_name("production.db"), ADA, BEN)
    apply_export(production, result.out_dir)
    state, source = app_state(production), app_state(recovered)
    assert state["sync_data"] == {k: v for k, v in source["sync_data"].items() if k[0] != "user_ghost"}
    assert state["sync_sequence"] == [(1, 104)]  # raised to the recovered sequence


def test_manifest_describes_the_files_and_the_source(recovered: Path, export_d1: Export) -> None:
    digest_before = hashlib.sha256(recovered.read_bytes()).hexdigest()
    result = export_d1(recovered, "--max-file-statements", "3")
    assert result.code == 0, result.err
    manifest = result.manifest()

    assert hashlib.sha256(recovered.read_bytes()).hexdigest() == digest_before  # read only
    assert manifest["source"]["sha256"] == digest_before
    assert manifest["source"]["wal_pending"] is False
    names = [f["name"] for f in manifest["files"]]
    assert names == [f.name for f in export_files(result.out_dir)]
    assert names == [f"{n:04d}-{t}" for n, t in enumerate(
        ["sync_data.sql"] * 4 + ["logbook_entries.sql"] + ["sync_sequence.sql"], start=1)]
    for described in manifest["files"]:
        statements = read_statements(result.out_dir / described["name"])
        assert described["statements"] == len(statements) <= 3
        assert described["max_statement_bytes"] == max(len(s.encode()) for s in statements)
    assert manifest["statements"] == sum(f["statements"] for f in manifest["files"])
    assert manifest["oversize"] == {"split": 0, "skipped": 0, "report": None}
    assert not (result.out_dir / "oversize.json").exists()
    assert "4 sync_data rows, 3 logbook_entries rows" in result.out
    assert digest_before in result.out


def test_unknown_upload_and_missing_recovery_tables_are_refused(recovered: Path, export_d1: Export,
                                                                tmp_path: Path) -> None:
    result = export_d1(recovered, "--upload", "upl_nope")
    assert result.code == 2
    assert "recovery_ledger" in result.err
    assert not result.out_dir.exists()  # nothing written

    with closing(sqlite3.connect(recovered)) as conn:
        conn.execute("CREATE TABLE recovery_ledger (upload_id TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE recovery_raw_records (user_id, entity_type, entity_id, upload_id)")
        conn.commit()
    result = export_d1(recovered, "--upload", "upl_nope")
    assert result.code == 2
    assert "no upload 'upl_nope'" in result.err


def test_unusable_databases_exit_2(tmp_path: Path, export_d1: Export) -> None:
    missing = export_d1(tmp_path / "missing.db")
    assert missing.code == 2
    assert "no such database file" in missing.err

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    assert export_d1(garbage).code == 2

    empty = tmp_path / "empty.db"
    with closing(sqlite3.connect(empty)) as conn:
        conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY)")
    result = export_d1(empty)
    assert result.code == 2
    assert "not an app database: no table sync_data" in result.err


def test_a_non_empty_directory_needs_force_which_replaces_only_export_files(
    recovered: Path, export_d1: Export, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "0009-sync_data.sql").write_text("-- stale file from an earlier export\n")
    (out / "notes.txt").write_text("kept")

    refused = export_d1(recovered, out=out)
    assert refused.code == 2
    assert "--force" in refused.err
    assert (out / "0009-sync_data.sql").exists()

    forced = export_d1(recovered, "--force", out=out)
    assert forced.code == 0, forced.err
    assert not (out / "0009-sync_data.sql").exists()
    assert (out / "notes.txt").read_text() == "kept"
    assert [f.name for f in export_files(out)] == [f["name"] for f in forced.manifest()["files"]]


@pytest.mark.parametrize(
    "options",
    [["--since", "yesterday"], ["--since", "2025-12-01", "--upload", "upl_x"], ["--max-statement-bytes", "100000"],
     ["--max-file-statements", "0"]],
)
def test_bad_options_exit_2(recovered: Path, export_d1: Export, options: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_d1(recovered, *options)
    assert exit_info.value.code == 2


def test_runs_as_a_module(recovered: Path, tmp_path: Path) -> None:
    out = tmp_path / "module-export"
    completed = subprocess.run(
        [sys.executable, "-m", "service.d1_export", "--db", str(recovered), "--out", str(out)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2],
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads((out / "manifest.json").read_text())["rows"]["sync_data"] == 4


def test_an_export_of_a_live_wal_database_reads_its_committed_rows(recovered: Path, export_d1: Export) -> None:
    copy = copy_database(recovered, recovered.with_name("live.db"))
    with closing(sqlite3.connect(copy)) as writer:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, seq)"
                       " VALUES ('sync_wal', ?, 'goal', 'in-the-wal', '{}', 'c', 900)", (ADA[0],))
        writer.commit()
        result = export_d1(copy)  # while the writer still holds the database open, as the service would
    assert result.code == 0, result.err
    assert result.manifest()["rows"]["sync_data"] == 5
    assert result.manifest()["source"]["wal_pending"] is True
    assert "-wal file" in result.out


def test_rows_take_seq_above_a_production_sequence_that_is_ahead(recovered: Path, export_d1: Export) -> None:
    # Production handed out values up to 1000 (clients hold sync tokens up to there) since the service's
    # copy was taken, but the wipe left no rows holding them: recovered rows must come after 1000.
    production = create_app_database(recovered.with_name("production.db"), ADA, BEN, sequence=1000)
    result = export_d1(recovered)
    apply_export(production, result.out_dir)

    seqs = [r[0] for r in rows(production, "SELECT seq FROM sync_data ORDER BY seq")]
    assert seqs == [1001, 1002, 1003, 1004]
    assert rows(production, "SELECT current_value FROM sync_sequence") == [(1004,)]
