"""Hostile and broken replay inputs (issue 13, items 7 and 12): a poison line is one bad line, a SQL dump
that never ends is stopped by its budget, a compressed bomb is refused before it is read whole, links
out of a directory are not followed, and an unreadable file is reported while the rest goes in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from service.replay import sqldump
from tests.conftest import ADA, BEN
from tests.replay.helpers import EXPORT_1_0, EXPORT_2_0, app_database, count, ndjson, query, replay, sync_rows

Capsys = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parents[2]
DEEP = 1000


def entry(entry_id: str) -> dict[str, object]:
    return {"id": entry_id, "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
            "instrument": "piano", "notes": entry_id, "updatedAt": "2025-06-01T18:30:12.345Z"}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return app_database(tmp_path / "app.db", ADA, BEN)


def test_a_line_nested_past_the_decoder_limit_is_one_bad_line_and_the_rest_commits(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    nested_record = ('{"user_id": "' + ADA[0] + '", "records": [{"entity_type": "logbook_entry", "data": '
                     + '{"a": ' * DEEP + "1" + "}" * DEEP + "}]}")
    source = ndjson(
        tmp_path / "devices.ndjson",
        {"user_id": ADA[0], "changes": {"entries": [entry("a1")]}},
        '{"user_id": "x", "changes": {"entries": [' + "[" * DEEP + "]" * DEEP + "]}}",  # 2
        nested_record,  # 3
        {"user_id": BEN[0], "changes": {"entries": [entry("b1")]}},
    )
    run = replay(capsys, db, source)
    assert run.exit_code == 0, run.stderr
    report = run.file("devices.ndjson")
    assert [(b["line"], "nested deeper" in b["reason"]) for b in report["bad_lines"]] == [(2, True), (3, True)]
    assert {(user, entity_id) for user, _, entity_id, *_ in sync_rows(db)} == {(ADA[0], "a1"), (BEN[0], "b1")}
    kept = query(db, "SELECT raw FROM recovery_quarantine WHERE entity_type = 'unreadable_line'")
    assert len(kept) == 2 and all(len(k["raw"]) > 2 * DEEP for k in kept)  # the lines are kept whole
    again = replay(capsys, db, source)
    assert again.exit_code == 0 and again.file("devices.ndjson")["status"] == "already_replayed"


def test_a_document_nested_past_the_decoder_limit_is_unreadable_and_the_other_files_go_in(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"logbook": [' + "[" * DEEP + "]" * DEEP + "]}")
    run = replay(capsys, db, deep, EXPORT_2_0)
    assert run.exit_code == 2
    assert run.file("deep.json")["status"] == "unreadable"
    assert "nested deeper" in run.file("deep.json")["error"]
    assert run.file(EXPORT_2_0.name)["status"] == "replayed"


SYNC_DATA = ("CREATE TABLE sync_data (id TEXT, user_id TEXT, entity_type TEXT, entity_id TEXT, data TEXT,"
             " deleted_at TEXT)")
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"


def _dump(*statements: str) -> str:
    """Statements of a hostile dump; FOREVER stands for a recursive CTE that never ends."""
    return "".join(statement.replace("FOREVER", FOREVER) + ";\n" for statement in statements)


@pytest.mark.parametrize(
    ("dump", "budget", "reason"),
    [
        pytest.param(_dump(SYNC_DATA, "INSERT INTO sync_data (id) FOREVER SELECT x FROM c"), {"STATEMENT_SECONDS": 1},
                     "a statement ran longer than 1 s", id="recursive CTE"),
        pytest.param(_dump("CREATE VIEW sync_data (id, user_id, entity_type, entity_id, data, deleted_at) AS FOREVER"
                           " SELECT x, 'u', 'goal', x, '{}', NULL FROM c"), {"STATEMENT_SECONDS": 1},
                     "reading sync_data ran longer than 1 s", id="recursive view"),
        pytest.param(_dump(SYNC_DATA, "INSERT INTO sync_data (data) FOREVER SELECT group_concat(hex(randomblob(1000)))"
                           " FROM c"), {"STATEMENT_MEMORY_BYTES": 64 * 1024 * 1024},
                     "a statement took more than 64 MB of memory", id="memory"),
        pytest.param(_dump(SYNC_DATA, "INSERT INTO sync_data (data) FOREVER SELECT randomblob(10000) FROM c"),
                     {"SCRATCH_SLACK_BYTES": 4 * 1024 * 1024}, "grew the scratch database past its limit",
                     id="scratch size"),
    ],
)
def test_a_dump_that_never_ends_is_stopped_by_its_budget_with_a_clear_error(
    capsys: Capsys, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dump: str, budget: dict[str, int],
    reason: str,
) -> None:
    for name, value in budget.items():
        monkeypatch.setattr(sqldump, name, value)
    source = tmp_path / "hostile.sql"
    source.write_text(dump, encoding="utf-8")
    started = time.monotonic()
    run = replay(capsys, db, source, EXPORT_1_0)
    assert time.monotonic() - started < 30
    assert run.exit_code == 2
    assert reason in run.file("hostile.sql")["error"], run.file("hostile.sql")["error"]
    assert "a recursive query or view" in run.file("hostile.sql")["error"] or "scratch" in reason
    assert run.file(EXPORT_1_0.name)["status"] == "replayed"  # the next input still goes in


def _zip_bomb(path: Path, inflated: int) -> Path:
    """A full export padded with `inflated` bytes of whitespace: a few hundred KB on disk per GiB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("export.json", "w", force_zip64=True) as member:
            member.write(b'{"version": "2.0", "profile": {"id": "' + ADA[0].encode() + b'"}, "logbook": ['
                         + json.dumps(entry("a1")).encode())
            chunk = b" " * (1024 * 1024)
            for _ in range(inflated // len(chunk)):
                member.write(chunk)
            member.write(b"]}")
        archive.writestr("ben.ndjson", json.dumps({"user_id": BEN[0], "changes": {"entries": [entry("b1")]}}))
    return path


def test_a_compressed_document_over_the_size_limit_is_refused_unread_and_the_rest_goes_in(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    bomb = _zip_bomb(tmp_path / "bomb.zip", 8 * 1024 * 1024)
    run = replay(capsys, db, "--max-document-mb", "4", bomb)
    assert run.exit_code == 2
    refused = run.file("export.json")
    assert refused["status"] == "unreadable"
    assert "larger than 4 MB is not read" in refused["error"] and "--max-document-mb" in refused["error"]
    assert run.file("ben.ndjson")["status"] == "replayed"
    # Under a limit it fits, the same document is read.
    assert replay(capsys, db, "--max-document-mb", "16", bomb).file("export.json")["status"] == "replayed"


@pytest.mark.slow
def test_a_one_gib_zip_bomb_stays_small_in_memory(tmp_path: Path) -> None:
    """The reported case: a ~1 MB zip holding a 1 GiB JSON export (it reached 2 GB of memory)."""
    bomb = _zip_bomb(tmp_path / "bomb.zip", 1024 * 1024 * 1024)
    assert bomb.stat().st_size < 2 * 1024 * 1024
    db = app_database(tmp_path / "app.db", ADA, BEN)
    # VmHWM, the process's own peak (ru_maxrss would carry over the forking test process's peak across exec).
    script = ("import re, sys; from service.cli import main; code = main(sys.argv[1:]); "
              "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr); "
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "replay", "--db", db, "--json", str(bomb)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "larger than 128 MB is not read" in done.stderr
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < 250, peak_mb


def test_links_out_of_a_directory_are_not_followed_unless_asked(capsys: Capsys, db: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = ndjson(outside / "secret.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("b1")]}})
    tree = tmp_path / "tree"
    tree.mkdir()
    ndjson(tree / "ada.ndjson", {"user_id": ADA[0], "changes": {"entries": [entry("a1")]}})
    (tree / "linked.ndjson").symlink_to(secret)
    (tree / "linked-dir").symlink_to(outside, target_is_directory=True)
    (tree / "loop").symlink_to(tree, target_is_directory=True)

    run = replay(capsys, db, tree)
    assert run.exit_code == 0, run.stderr
    assert [f["file_name"] for f in run.summary["files"]] == ["ada.ndjson"]
    skipped = {Path(s["location"]).name: s["reason"] for s in run.summary["skipped"]}
    assert set(skipped) == {"linked.ndjson", "linked-dir", "loop"}
    assert all("--follow-symlinks" in reason for reason in skipped.values())
    assert {entity_id for _, _, entity_id, *_ in sync_rows(db)} == {"a1"}

    followed = replay(capsys, db, "--follow-symlinks", tree)
    assert followed.exit_code == 0, followed.stderr
    statuses = {f["location"]: f["status"] for f in followed.summary["files"]}
    assert statuses == {str(tree / "ada.ndjson"): "already_replayed",
                        str(tree / "linked-dir" / "secret.ndjson"): "replayed",
                        str(tree / "linked.ndjson"): "duplicate_input"}  # the same file by two links
    assert {entity_id for _, _, entity_id, *_ in sync_rows(db)} == {"a1", "b1"}  # the loop was not walked forever


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_in_a_directory_is_reported_and_the_rest_goes_in_as_non_root(
    capsys: Capsys, db: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    ndjson(tree / "a.ndjson", {"user_id": ADA[0], "changes": {"entries": [entry("a1")]}})
    locked = ndjson(tree / "b.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("b1")]}})
    locked.chmod(0)
    run = replay(capsys, db, tree)
    assert run.exit_code == 2
    assert run.file("b.ndjson")["status"] == "unreadable" and "cannot read" in run.file("b.ndjson")["error"]
    assert run.file("a.ndjson")["status"] == "replayed"


def test_a_file_that_fails_to_read_in_a_directory_is_reported_and_the_rest_goes_in(
    capsys: Capsys, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as a file without read permission (which root reads anyway): opening it fails."""
    tree = tmp_path / "tree"
    tree.mkdir()
    ndjson(tree / "a.ndjson", {"user_id": ADA[0], "changes": {"entries": [entry("a1")]}})
    locked = ndjson(tree / "b.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("b1")]}})
    ndjson(tree / "c.ndjson", {"user_id": BEN[0], "changes": {"entries": [entry("c1")]}})
    real_open = Path.open

    def refusing_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refusing_open)
    run = replay(capsys, db, tree)
    assert run.exit_code == 2  # not everything was read
    assert run.file("b.ndjson")["status"] == "unreadable"
    assert run.file("b.ndjson")["error"] == "cannot read: Permission denied"
    assert [run.file(name)["status"] for name in ("a.ndjson", "c.ndjson")] == ["replayed", "replayed"]
    assert {entity_id for _, _, entity_id, *_ in sync_rows(db)} == {"a1", "c1"}
    assert f"{locked}: error: cannot read" in run.stderr
    assert count(db, "recovery_replay_checkpoints") == 2
