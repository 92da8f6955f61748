"""`python -m service ...` for a new operator: a bad --db is one clear line for every command, a SQLite file
that is not the app's is refused unless asked, the dev secret is found by every command, tokens expire
when asked, and the help names every command and setting."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import jwt
import pytest

from service.cli import DEV_SECRET_FILE, build_parser, main
from tests.conftest import ADA, BEN
from tests.replay.helpers import EXPORT_2_0, app_database, ndjson, replay, sync_rows

Capsys = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parents[1]
DB_COMMANDS = [["serve"], ["create-user", "--email", "new@example.com"], ["replay", str(EXPORT_2_0)]]


def bad_databases(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "plain.txt").write_text("hello")
    garbage = tmp / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 50)
    other = tmp / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    return {
        "a directory": (tmp, "is a directory, not a database file"),
        "under a file": (tmp / "plain.txt" / "app.db", "is not a directory"),
        "not SQLite": (garbage, "is not a SQLite database"),
        "another SQLite database": (other, "not the app's (no users table; it holds notes); give --init-app-schema"),
    }


@pytest.mark.parametrize("command", DB_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case", ["a directory", "under a file", "not SQLite", "another SQLite database"])
def test_a_bad_db_is_one_clear_line_for_every_command(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], case: str
) -> None:
    monkeypatch.setenv("RESYNC_JWT_SECRET", "a-secret-for-the-tests-at-least-32-bytes")
    path, message = bad_databases(tmp_path)[case]
    capsys.readouterr()
    if command[0] == "replay" and case == "under a file":
        message = "no app database at"  # the replay never creates a database
    assert main([command[0], "--db", str(path), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_an_unwritable_db_is_one_clear_line(capsys: Capsys) -> None:
    capsys.readouterr()
    assert main(["create-user", "--db", "/proc/resync-test/app.db", "--email", "a@example.com"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "/proc/resync-test" in err, err


def test_another_sqlite_database_gets_the_app_schema_only_when_asked(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESYNC_JWT_SECRET", raising=False)
    other = bad_databases(tmp_path)["another SQLite database"][0]
    assert main(["create-user", "--db", str(other), "--email", "a@example.com"]) == 2
    with sqlite3.connect(other) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]
    conn.close()
    assert main(["create-user", "--db", str(other), "--email", "a@example.com", "--init-app-schema"]) == 0
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT email FROM users").fetchall() == [("a@example.com",)]
    conn.close()


def test_create_user_without_a_secret_says_why_it_printed_no_token(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESYNC_JWT_SECRET", raising=False)
    db = tmp_path / "app.db"
    capsys.readouterr()
    assert main(["create-user", "--db", str(db), "--email", "a@example.com", "--id", ADA[0]]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == ADA[0]  # the id only: no token
    assert "no token printed: RESYNC_JWT_SECRET is not set" in out.err
    assert str(tmp_path / DEV_SECRET_FILE) in out.err


@pytest.mark.slow
def test_serve_dev_keeps_a_secret_next_to_the_database_that_create_user_and_token_use(tmp_path: Path) -> None:
    db = tmp_path / "data" / "app.db"
    env = {k: v for k, v in os.environ.items() if k != "RESYNC_JWT_SECRET"} | {"PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--dev", "--db", str(db), "--port", "0"],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert server.stderr is not None
        lines = []
        deadline = time.monotonic() + 60
        while not any("token (valid 30 days)" in line for line in lines):
            assert time.monotonic() < deadline and server.poll() is None, lines
            lines.append(server.stderr.readline())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
    kept = db.parent / DEV_SECRET_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    secret = kept.read_text().strip()
    assert any(f'export RESYNC_JWT_SECRET="$(cat {kept})"' in line for line in lines), lines

    made = subprocess.run([sys.executable, "-m", "service", "create-user", "--db", str(db), "--email",
                           "ada@example.com", "--id", ADA[0]], cwd=ROOT, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    user_id, token = made.stdout.split()
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == ADA[0] == user_id
    assert f"signed with the dev secret in {kept}" in made.stderr

    issued = subprocess.run([sys.executable, "-m", "service", "token", ADA[0], "ada@example.com", "--db", str(db),
                             "--expires-in", "2h"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert issued.returncode == 0, issued.stderr
    claims = jwt.decode(issued.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7200


@pytest.mark.parametrize(("text", "seconds"),
                         [("90", 90), ("90s", 90), ("45m", 2700), ("12h", 43200), ("30d", 2592000)])
def test_token_expires_in(capsys: Capsys, monkeypatch: pytest.MonkeyPatch, text: str, seconds: int) -> None:
    monkeypatch.setenv("RESYNC_JWT_SECRET", "a-secret-for-the-tests-at-least-32-bytes")
    capsys.readouterr()
    assert main(["token", ADA[0], ADA[1], "--expires-in", text]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == seconds


def test_the_help_names_every_command_and_every_setting(capsys: Capsys) -> None:
    parser = build_parser()
    top = parser.format_help()
    for command in ("serve", "replay", "redrive", "create-user", "token", "lint-migrations", "export-d1", "openapi"):
        assert f"  {command} " in top, command
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    for variable in ("RESYNC_JWT_SECRET", "RESYNC_DB", "RESYNC_HOST", "RESYNC_PORT", "RESYNC_WORKERS",
                     "RESYNC_MAX_BODY_MB", "RESYNC_CORS_ORIGINS"):
        assert variable in serve_help, variable


def test_export_d1_defaults_to_resync_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    db = app_database(tmp_path / "app.db", ADA)
    monkeypatch.setenv("RESYNC_DB", db)
    assert main(["export-d1", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_gzip_compressed_ndjson_and_exports_are_read_also_inside_a_tar_gz(capsys: Capsys, tmp_path: Path) -> None:
    db = app_database(tmp_path / "app.db", ADA, BEN)
    lines = ndjson(tmp_path / "ben.ndjson", {"user_id": BEN[0], "changes": {"entries": [
        {"id": "b1", "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
         "instrument": "piano", "updatedAt": "2025-06-01T18:30:12.345Z"}]}})
    (tmp_path / "users.ndjson.gz").write_bytes(gzip.compress(lines.read_bytes()))
    (tmp_path / "export.json.gz").write_bytes(gzip.compress(EXPORT_2_0.read_bytes()))
    run = replay(capsys, db, tmp_path / "users.ndjson.gz", tmp_path / "export.json.gz")
    assert run.exit_code == 0, run.stderr
    assert [f["status"] for f in run.summary["files"]] == ["replayed", "replayed"]
    assert run.summary["counts"]["inserted"] == 16

    archive = tmp_path / "users.ndjson.gz.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "users.ndjson.gz", arcname="users.ndjson.gz")
    fresh = app_database(tmp_path / "fresh.db", ADA, BEN)
    in_tar = replay(capsys, fresh, archive)
    assert in_tar.exit_code == 0, in_tar.stderr
    assert [f["file_name"] for f in in_tar.summary["files"]] == ["users.ndjson.gz"]
    assert {entity_id for _, _, entity_id, *_ in sync_rows(fresh)} == {"b1"}
    # The compressed copy is the same content: already replayed under the plain file's checksum.
    assert replay(capsys, fresh, lines).file("ben.ndjson")["status"] == "already_replayed"


def test_an_input_that_gives_no_record_exits_non_zero_and_says_why(capsys: Capsys, tmp_path: Path) -> None:
    db = app_database(tmp_path / "app.db", ADA)
    archive = tmp_path / "notes.tar.gz"
    (tmp_path / "notes.txt").write_text("nothing to replay")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    run = replay(capsys, db, archive)
    assert run.exit_code == 2
    assert f"{archive}: nothing in it is a file the replay reads (1 skipped, listed)" in run.stderr

    empty = tmp_path / "empty.ndjson"
    empty.write_text("\n\n")
    run = replay(capsys, db, empty)
    assert run.exit_code == 2
    assert run.file("empty.ndjson")["status"] == "nothing_to_replay"
    assert "no record in it to replay" in run.stderr


def test_the_summary_says_how_to_bring_in_records_of_unknown_users_and_already_replayed_once(
    capsys: Capsys, tmp_path: Path
) -> None:
    db = app_database(tmp_path / "app.db", ADA)
    source = ndjson(tmp_path / "ghost.ndjson", {"email": "ghost@example.com", "changes": {"entries": [
        {"id": "g1", "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
         "instrument": "piano"}]}})
    capsys.readouterr()
    assert main(["replay", "--db", db, str(source)]) == 0
    first = capsys.readouterr()
    assert "next: then bring their records in: python -m service redrive --user USER_ID" in first.out
    assert main(["replay", "--db", db, str(source)]) == 0
    again = capsys.readouterr()
    assert (again.out + again.err).count("already replayed") == 1


def test_a_terminal_summary_never_cuts_user_ids(tmp_path: Path) -> None:
    from rich.console import Console

    from service.replay.report import print_rich
    from service.replay.summary import ReplaySummary, zero_counts

    summary = ReplaySummary(str(tmp_path / "app.db"), dry_run=False)
    users = [f"user_{n:02d}AbCdEfGhIjKlMnOpQrSt" for n in range(3)]
    for user in users:
        summary.users[user] = {**zero_counts(), "inserted": 1_234_567, "duplicate": 7_654_321, "updated": 1,
                               "kept_existing": 5, "quarantined": 3}
    summary.counts = {**zero_counts(), "inserted": 3_703_701, "duplicate": 22_962_963, "updated": 3,
                      "kept_existing": 15, "quarantined": 9}
    console = Console(width=80, record=True, force_terminal=True)
    print_rich(summary, console)
    text = console.export_text()
    assert "…" not in text, text  # RUF001: the ellipsis rich cuts with
    for user in users:
        assert f"{user}  1,234,567" in text, text


def test_redrive_from_the_command_line_brings_in_what_the_replay_quarantined_for_unknown_users(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarantined by the replay before their users existed; after create-user a re-run of the replay says
    'already replayed', and `redrive` (the support API's re-drive function) brings the records in."""
    monkeypatch.delenv("RESYNC_JWT_SECRET", raising=False)
    db = app_database(tmp_path / "app.db", ADA)
    entries = {"g1": "ghost@example.com", "h1": "hugo@example.com", "h2": "hugo@example.com"}
    source = ndjson(tmp_path / "later.ndjson", *({"email": email, "changes": {"entries": [
        {"id": entry_id, "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
         "instrument": "piano", "notes": entry_id}]}} for entry_id, email in entries.items()))
    assert replay(capsys, db, source).exit_code == 0
    assert sync_rows(db) == set()
    for email in ("ghost@example.com", "hugo@example.com"):
        assert main(["create-user", "--db", db, "--email", email]) == 0
    assert "python -m service redrive --user" in capsys.readouterr().err
    assert replay(capsys, db, source).file("later.ndjson")["status"] == "already_replayed"

    assert main(["redrive", "--db", db, "--email", "GHOST@example.com"]) == 0
    assert "re-drove 1 records: 1 went in, 0 still quarantined" in capsys.readouterr().out
    assert {entity_id for _, _, entity_id, *_ in sync_rows(db)} == {"g1"}

    assert main(["redrive", "--db", db, "--all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(u["redriven"], u["resolved"]) for u in result["users"]] == [(2, 2)]
    assert {entity_id for _, _, entity_id, *_ in sync_rows(db)} == {"g1", "h1", "h2"}

    assert main(["redrive", "--db", db, "--all"]) == 0
    assert "nothing to re-drive" in capsys.readouterr().out
    assert main(["redrive", "--db", db, "--user", "user_NobodyNobodyNobody00"]) == 2
    assert "create the user first" in capsys.readouterr().err
