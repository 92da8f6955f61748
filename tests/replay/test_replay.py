"""`python -m service replay`: every input format, owners, bad lines, re-runs, dry runs and archives."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADA, BEN
from tests.replay.helpers import (
    EXPORT_1_0,
    EXPORT_2_0,
    LOCALSTORAGE_DUMP,
    PRACTICE_REPORT,
    app_database,
    count,
    ledger_counts,
    ndjson,
    query,
    replay,
    sync_rows,
)

Capsys = pytest.CaptureFixture[str]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
NOBODY = "user_NobodyNobodyNobody00"
GOAL = {"id": "g1", "title": "Scales", "status": "active"}
ALL_TABLES = ("sync_data", "logbook_entries", "sync_metadata", "recovery_ledger", "recovery_progress",
              "recovery_quarantine", "recovery_raw_records", "recovery_entity_state", "recovery_users",
              "recovery_devices", "recovery_replay_checkpoints", "recovery_archive")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return app_database(tmp_path / "app.db", ADA, BEN)


def snapshot(db: str) -> dict[str, int]:
    return {table: count(db, table) for table in ALL_TABLES}


def entry(entry_id: str, notes: str = "") -> dict[str, Any]:
    return {"id": entry_id, "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
            "instrument": "piano", "notes": notes or entry_id, "updatedAt": "2025-06-01T18:30:12.345Z"}


@pytest.mark.parametrize(
    ("fixture", "options", "counts", "types"),
    [
        (EXPORT_2_0, [], {"inserted": 15},
         {"logbook_entry": 12, "goal": 1, "repertoire_item": 1, "user_preferences": 1}),
        (EXPORT_1_0, [], {"inserted": 7}, {"logbook_entry": 5, "repertoire_item": 1, "user_preferences": 1}),
        (PRACTICE_REPORT, ["--user", ADA[0]], {"inserted": 5}, {"logbook_entry": 5}),
        (LOCALSTORAGE_DUMP, [], {"inserted": 8, "deleted": 1, "content_duplicate": 1},
         {"logbook_entry": 7, "goal": 1}),
    ],
)
def test_every_export_format_is_replayed_and_accounted_for(
    capsys: Capsys, db: str, fixture: Path, options: list[str], counts: dict[str, int], types: dict[str, int]
) -> None:
    run = replay(capsys, db, *options, fixture)
    assert run.exit_code == 0, run.stderr
    report = run.file(fixture.name)
    assert report["status"] == "replayed"
    assert {k: v for k, v in report["counts"].items() if v} == counts
    assert run.summary["users"] == {ADA[0]: report["counts"]}
    stored = query(db, "SELECT entity_type, COUNT(*) AS n FROM sync_data WHERE user_id = ? GROUP BY 1", (ADA[0],))
    assert {r["entity_type"]: r["n"] for r in stored} == types

    sha = hashlib.sha256(fixture.read_bytes()).hexdigest()
    ledger = query(db, "SELECT source, file_name, payload_sha256, received, user_id FROM recovery_ledger")
    assert [tuple(r) for r in ledger] == [("replay", fixture.name, sha, sum(counts.values()), ADA[0])]
    progress = query(db, "SELECT SUM(n) AS n FROM recovery_progress WHERE user_id = ?", (ADA[0],))
    assert progress[0]["n"] == sum(counts.values())
    checkpoint = query(db, "SELECT replay_key, file_sha256, records_done, finished FROM recovery_replay_checkpoints")
    assert [tuple(r)[1:] for r in checkpoint] == [(sha, sum(counts.values()), 1)]
    assert checkpoint[0]["replay_key"].startswith(sha)


def test_the_localstorage_device_is_recorded_and_a_profile_email_finds_a_user_whose_id_changed(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    assert replay(capsys, db, LOCALSTORAGE_DUMP).exit_code == 0
    assert {r["device_id"] for r in query(db, "SELECT device_id FROM sync_data")} == {DEVICE}

    export = json.loads(EXPORT_2_0.read_text(encoding="utf-8"))
    export["profile"] = {"id": "user_IdBeforeTheRebuild00", "email": BEN[1].upper()}
    moved = tmp_path / "ben-export.json"
    moved.write_text(json.dumps(export))
    run = replay(capsys, db, "--device", "dev_benLaptop00000001", moved)
    assert run.summary["users"][BEN[0]]["inserted"] == 15
    assert {r["device_id"] for r in query(db, "SELECT device_id FROM sync_data WHERE user_id = ?", (BEN[0],))} == {
        "dev_benLaptop00000001"}
    aliases = query(db, "SELECT token_sub, user_id FROM recovery_user_aliases")
    assert [tuple(a) for a in aliases] == [("user_IdBeforeTheRebuild00", BEN[0])]


def test_a_multi_user_batch_file_reports_bad_lines_and_quarantines_unknown_owners(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    source = ndjson(
        tmp_path / "devices.ndjson",
        {"user_id": ADA[0], "device_id": DEVICE, "changes": {"entries": [entry("a1"), entry("a2")], "goals": [GOAL]}},
        {"email": "BEN.guitar@example.com", "device_id": "dev_benPhone000000001",
         "records": [{"entity_type": "logbook_entry", "data": entry("b1")}], "deleted": {"logbook_entry": ["b0"]}},
        '{"user_id": "' + ADA[0] + '", "changes": {"entries": [',  # 3: cut short
        {"user_id": NOBODY, "records": [{"entity_type": "logbook_entry", "data": entry("n1")},
                                        {"entity_type": "logbook_entry", "data": entry("n2")}]},
        [1, 2, 3],  # 5: not an object
        "",
        {"user_id": ADA[0]},  # 7: nothing to replay
        {"email": "ghost@example.com", "changes": {"entries": [entry("x1")]}},
        {"user_id": ADA[0], "changes": {"entries": 5}},  # 9: wrong shape
        {"records": [{"entity_type": "goal", "data": {"id": "orphan"}}]},  # names no owner
        b"\xff\xfe not text",  # 11: not even UTF-8
    )
    run = replay(capsys, db, source)
    assert run.exit_code == 0, run.stderr  # bad lines and unknown owners are reported, not errors
    report = run.file("devices.ndjson")
    assert [b["line"] for b in report["bad_lines"]] == [3, 5, 7, 9, 11]
    reasons = {b["line"]: b["reason"] for b in report["bad_lines"]}
    assert "invalid JSON" in reasons[3] and "wrong shape" in reasons[5] and "`changes`" in reasons[7]
    for line in (3, 5, 7, 9, 11):
        assert f"devices.ndjson:{line}: bad line" in run.stderr

    problems = {(p["reason"], p["owner"]): (p["first_line"], p["records"]) for p in report["owner_problems"]}
    assert problems == {
        ("unknown_user", NOBODY): (4, 2),
        ("unknown_user", "ghost@example.com"): (8, 1),
        ("unknown_user", "unknown"): (10, 1),
        ("unreadable_line", "unknown"): (3, 5),
    }
    assert sync_rows(db) == {
        (ADA[0], "logbook_entry", "a1", *_checksum_and_live(db, "a1")),
        (ADA[0], "logbook_entry", "a2", *_checksum_and_live(db, "a2")),
        (ADA[0], "goal", "g1", *_checksum_and_live(db, "g1")),
        (BEN[0], "logbook_entry", "b1", *_checksum_and_live(db, "b1")),
    }
    assert run.summary["users"][BEN[0]]["deleted"] == 1  # b0: remembered, so an old copy cannot return
    assert run.summary["records"] == 3 + 2 + 2 + 1 + 1 + 5  # every unit, bad lines included

    kept = query(db, "SELECT owner, email, entity_type, entity_id, raw FROM recovery_quarantine ORDER BY id")
    assert {(k["owner"], k["entity_id"]) for k in kept if k["entity_type"] != "unreadable_line"} == {
        (NOBODY, "n1"), (NOBODY, "n2"), ("ghost@example.com", "x1"), ("unknown", "orphan")}
    assert next(k["email"] for k in kept if k["owner"] == "ghost@example.com") == "ghost@example.com"
    lines = [json.loads(k["raw"]) for k in kept if k["entity_type"] == "unreadable_line"]
    assert [(line["line"], line["file"]) for line in lines] == [(n, str(source)) for n in (3, 5, 7, 9, 11)]
    assert lines[0]["text"] == '{"user_id": "' + ADA[0] + '", "changes": {"entries": ['
    assert bytes.fromhex(lines[-1]["text_hex"]) == source.read_bytes().splitlines()[-1]  # kept byte for byte
    totals = ledger_counts(db)
    assert sum(t["received"] for t in totals.values()) == run.summary["records"]


def _checksum_and_live(db: str, entity_id: str) -> tuple[str, bool]:
    row = query(db, "SELECT checksum, deleted_at FROM sync_data WHERE entity_id = ?", (entity_id,))[0]
    return row["checksum"], row["deleted_at"] is not None


def test_a_file_naming_another_user_than_the_option_is_quarantined_as_a_mismatch(capsys: Capsys, db: str) -> None:
    run = replay(capsys, db, "--user", BEN[0], EXPORT_2_0)
    assert run.exit_code == 0
    assert count(db, "sync_data") == 0
    problem = run.file(EXPORT_2_0.name)["owner_problems"]
    assert [(p["reason"], p["owner"], p["records"]) for p in problem] == [("user_mismatch", ADA[0], 15)]
    assert f"--user {BEN[0]}" in problem[0]["detail"]
    # Kept under the user the file names, never under the option's user: a re-drive cannot misfile it.
    assert {r["owner"] for r in query(db, "SELECT owner FROM recovery_quarantine")} == {ADA[0]}
    assert count(db, "recovery_quarantine") == 15

    matching = replay(capsys, db, "--email", ADA[1].upper(), EXPORT_2_0)  # emails compare case-insensitively
    assert matching.summary["users"] == {ADA[0]: {**matching.summary["counts"]}}
    assert matching.summary["counts"]["inserted"] == 15


def test_an_unknown_option_user_quarantines_everything_under_that_id(capsys: Capsys, db: str) -> None:
    run = replay(capsys, db, "--user", NOBODY, PRACTICE_REPORT)
    assert run.exit_code == 0
    assert run.summary["counts"]["quarantined"] == 5
    assert {(r["owner"], r["reason"]) for r in query(db, "SELECT owner, reason FROM recovery_quarantine")} == {
        (NOBODY, "unknown_user")}


def test_a_second_run_changes_nothing_and_a_renamed_copy_is_recognised(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    assert replay(capsys, db, EXPORT_2_0, LOCALSTORAGE_DUMP).exit_code == 0
    before = snapshot(db), sync_rows(db)

    again = replay(capsys, db, EXPORT_2_0, LOCALSTORAGE_DUMP)
    assert again.exit_code == 0
    assert [f["status"] for f in again.summary["files"]] == ["already_replayed", "already_replayed"]
    sha = hashlib.sha256(EXPORT_2_0.read_bytes()).hexdigest()
    assert f"already replayed: {EXPORT_2_0} ({sha})" in again.stderr
    renamed = tmp_path / "renamed.json"
    shutil.copy(EXPORT_2_0, renamed)
    assert replay(capsys, db, renamed).file("renamed.json")["status"] == "already_replayed"
    assert (snapshot(db), sync_rows(db)) == before

    # Another owner option is another replay (of records the database already holds).
    other = replay(capsys, db, "--user", ADA[0], EXPORT_2_0)
    assert other.file(EXPORT_2_0.name)["status"] == "replayed"
    counts = {k: v for k, v in other.summary["counts"].items() if v}
    assert counts == {"duplicate": 14, "suppressed": 1}  # -0001 stays deleted (localStorage dump)
    assert sync_rows(db) == before[1]


def test_the_same_file_twice_in_one_run_is_replayed_once(capsys: Capsys, db: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.json"
    shutil.copy(EXPORT_1_0, copy)
    run = replay(capsys, db, "--dry-run", EXPORT_1_0, copy)
    assert [f["status"] for f in run.summary["files"]] == ["replayed", "duplicate_input"]
    assert run.summary["records"] == 7


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(capsys: Capsys, db: str, tmp_path: Path) -> None:
    source = ndjson(tmp_path / "more.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("b1")]}}, "oops")
    before = snapshot(db)
    dry = replay(capsys, db, "--dry-run", EXPORT_2_0, LOCALSTORAGE_DUMP, source)
    assert dry.exit_code == 0
    assert dry.summary["dry_run"] is True
    assert snapshot(db) == before
    assert set(before.values()) == {0}

    assert [f["records"] for f in dry.summary["files"]] == [15, 10, 2]
    assert dry.file("more.ndjson")["bad_lines"] == [{"line": 2, "reason": dry.file("more.ndjson")["bad_lines"][0][
        "reason"]}]

    # Each batch is judged against the database as it is: the first file's answer is exact.
    real = replay(capsys, db, EXPORT_2_0)
    assert real.file(EXPORT_2_0.name)["counts"] == dry.file(EXPORT_2_0.name)["counts"]
    assert replay(capsys, db, "--dry-run", EXPORT_2_0).file(EXPORT_2_0.name)["status"] == "already_replayed"


def test_a_dry_run_of_several_files_predicts_the_real_runs_counts(capsys: Capsys, db: str, tmp_path: Path) -> None:
    """The whole dry run is one transaction, rolled back at the end: a file is judged against what the files
    (and batches) before it would have written, so overlapping files get the real run's answers."""
    first = ndjson(tmp_path / "a.ndjson", *({"user_id": BEN[0], "changes": {"entries": [entry(f"b{n}")]}}
                                          for n in range(30)))
    edited = {**entry("b1", "edited"), "updatedAt": "2025-07-01T00:00:00.000Z"}
    second = ndjson(tmp_path / "b.ndjson", {"user_id": BEN[0], "changes": {"entries": [
        entry("b0"), edited, entry("b2", "older copy")]}}, {"user_id": BEN[0], "deleted": {"logbook_entry": ["b3"]}})
    dry = replay(capsys, db, "--dry-run", "--batch-size", "7", first, second, EXPORT_2_0)
    assert count(db, "sync_data") == count(db, "recovery_ledger") == 0
    real = replay(capsys, db, "--batch-size", "7", first, second, EXPORT_2_0)
    assert [f["counts"] for f in dry.summary["files"]] == [f["counts"] for f in real.summary["files"]]
    assert dry.summary["users"] == real.summary["users"]
    assert real.file("b.ndjson")["counts"]["inserted"] == 0  # b0..b3 were inserted by a.ndjson


def test_archives_and_directories_are_streamed_member_by_member(capsys: Capsys, db: str, tmp_path: Path) -> None:
    batch = ndjson(tmp_path / "ben.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("b1"), entry("b2")]}})
    members = {"exports/ada/export.json": EXPORT_2_0.read_bytes(), "exports/ben.ndjson": batch.read_bytes(),
               "exports/README.txt": b"notes", "__MACOSX/exports/._export.json": b"\x00junk"}
    zipped = tmp_path / "devices.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    folder = tmp_path / "unpacked"
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    tarred = tmp_path / "devices.tar.gz"
    with tarfile.open(tarred, "w:gz") as archive:
        archive.add(folder / "exports", arcname="exports")

    run = replay(capsys, db, zipped)
    assert run.exit_code == 0, run.stderr
    assert [(f["location"], f["file_name"], f["status"]) for f in run.summary["files"]] == [
        (f"{zipped}:exports/ada/export.json", "export.json", "replayed"),
        (f"{zipped}:exports/ben.ndjson", "ben.ndjson", "replayed"),
    ]
    assert sorted(s["location"] for s in run.summary["skipped"]) == [
        f"{zipped}:__MACOSX/exports/._export.json", f"{zipped}:exports/README.txt"]
    assert run.summary["counts"]["inserted"] == 17
    ledger = query(db, "SELECT file_name, payload_sha256 FROM recovery_ledger ORDER BY file_name")
    assert [tuple(r) for r in ledger] == [
        ("ben.ndjson", hashlib.sha256(batch.read_bytes()).hexdigest()),
        ("export.json", hashlib.sha256(EXPORT_2_0.read_bytes()).hexdigest()),
    ]

    # The same members in a .tar.gz, or a directory, are the same files: already replayed.
    for container in (tarred, folder):
        again = replay(capsys, db, container)
        assert again.exit_code == 0, again.stderr
        assert [f["status"] for f in again.summary["files"]] == ["already_replayed", "already_replayed"]

    direct = app_database(tmp_path / "direct.db", ADA, BEN)
    replay(capsys, direct, EXPORT_2_0, batch)
    assert sync_rows(direct) == sync_rows(db)


def test_unreadable_inputs_exit_2_with_a_clear_message(capsys: Capsys, db: str, tmp_path: Path) -> None:
    missing = replay(capsys, db, EXPORT_2_0, tmp_path / "nope.json")
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope.json'}: no such file or directory" in missing.stderr
    assert count(db, "recovery_ledger") == 0  # nothing is replayed when an input is missing

    broken_zip = tmp_path / "broken.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")
    assert replay(capsys, db, broken_zip).exit_code == 2

    broken = tmp_path / "broken.json"
    broken.write_text('{"logbook": [{"id": ')
    run = replay(capsys, db, broken, EXPORT_1_0)
    assert run.exit_code == 2
    assert run.file("broken.json")["status"] == "unreadable"
    assert "not valid JSON" in run.file("broken.json")["error"]
    assert run.file(EXPORT_1_0.name)["status"] == "replayed"  # the readable file still goes in

    assert replay(capsys, str(tmp_path / "no.db"), EXPORT_1_0).exit_code == 2


def test_batches_give_the_same_rows_as_one_upload_per_record(capsys: Capsys, tmp_path: Path) -> None:
    """Uploads join records of one owner and device only where the order of outcomes cannot change."""
    edited = {**entry("a1", "edited"), "updatedAt": "2025-07-01T10:00:00.000Z"}
    older = {**entry("a1", "older"), "updatedAt": "2025-05-01T10:00:00.000Z"}
    source = ndjson(
        tmp_path / "interleaved.ndjson",
        {"user_id": ADA[0], "device_id": "dev_one", "changes": {"entries": [entry("a1"), entry("a2")]}},
        {"user_id": BEN[0], "device_id": "dev_two", "changes": {"entries": [entry("b1")]}},
        {"user_id": ADA[0], "device_id": "dev_one", "deleted": {"logbook_entry": ["a2"]}},
        {"user_id": ADA[0], "device_id": "dev_one", "changes": {"entries": [entry("a2", "again"), edited]}},
        {"user_id": ADA[0], "device_id": "dev_two", "changes": {"entries": [older, entry("a3", "a1")]}},
        {"user_id": ADA[0], "device_id": "dev_one", "changes": {"entries": [{"id": "a3",
                                                                             "deletedAt": "2025-08-01T00:00:00Z"}]}},
    )
    results = {}
    for size in ("1", "3", "1000"):
        target = app_database(tmp_path / f"batch-{size}.db", ADA, BEN)
        run = replay(capsys, target, "--batch-size", size, source)
        assert run.exit_code == 0, run.stderr
        results[size] = (sync_rows(target), run.summary["users"], ledger_counts(target))
    assert results["1"] == results["3"] == results["1000"]
    assert results["1"][1][ADA[0]]["suppressed"] == 1  # a2 again, older than its deletion
    assert results["1"][1][ADA[0]]["kept_existing"] == 1  # the older copy of a1 from the other device


def test_without_json_a_summary_table_per_user_and_outcome_is_printed(capsys: Capsys, db: str) -> None:
    from service.replay.cli import main

    capsys.readouterr()
    assert main(["--db", db, EXPORT_2_0.as_posix()]) == 0
    out = capsys.readouterr().out
    assert f"replayed: {EXPORT_2_0}" in out
    assert "per user and outcome:" in out
    assert any(line.split()[:2] == [ADA[0], "15"] for line in out.splitlines())
