"""Crash during replay: `kill -9` a `python -m service replay` subprocess at a dozen random moments,
resume it each time with the same command: the app database, the ledger and the service's records end
exactly as after one uninterrupted run of the same command, and a last run is a no-op.

The input is one seeded multi-user NDJSON batch file: known users, one by email only, a stale user id
that only its email maps, an unknown user, two or three devices each (and lines with none), both line
shapes (`changes`, and `records` with `deleted` lists), the same entries sent again and again by
several lines (edits with newer `updatedAt`, stale copies, exact repeats, whole lines twice, twins under
another id, `deletedAt` markers, edits newer than a deletion), invalid records and unreadable lines.

Both runs cut the file into the same batches (`--batch-size` and the unit counts are deterministic, and a
resumed run starts exactly at a batch boundary), so even the ledger rows, the versions and the global
change numbers must be the same, row for row. The only values allowed to differ are the run's own ids
and clocks (upload ids, `*_at` columns, and the deletion time of ids in `deleted` lists, which counts as
the time of the upload).

What `tests/replay/test_resume.py` checks for one kill (a checkpoint commits with its batch, the resumed
run reports where it resumed) is checked here after every kill and resume. Between runs the database is
only read through read-only connections, so each resumed run itself recovers the WAL the killed one left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import ADA, BEN
from tests.reliability.histories import START_MS, DeviceHistory, iso
from tests.reliability.liveserver import _DIE_WITH_PARENT, ROOT  # children die with the test process
from tests.replay.helpers import app_database, ledger_counts, ndjson, progress, query

pytestmark = pytest.mark.slow  # a live server or crashes: CI runs it, `-m "not slow"` skips it

SEED = 20_251_130
BATCH_SIZE = 20
KILLS = 12
LINES = 800
# Kill points: a seeded threshold of units done per kill (between these fractions of the file), then a
# seeded pause of up to two batches, so that the kill lands anywhere in the read-normalise-write cycle.
KILL_SPAN = (0.04, 0.85)
MAX_PAUSE_S = 0.03
POLL_S = 0.002
RUN_TIMEOUT_S = 60.0

CARA = ("user_CaraCaraCaraCaraCara00", "cara@example.com", "user")
DAN = ("user_DanDanDanDanDanDanDan0", "dan@example.com", "user")
USERS = [ADA, BEN, CARA, DAN]
UNKNOWN = "user_NobodyNobodyNobody00"  # not in `users`: every record it sends is quarantined
CARA_OLD_ID = "user_CaraOldIdFromADevice0"  # a stale id: Cara is found by the email on the line
class History(DeviceHistory):
    """One user's records as their devices hold them: each `record()` is a new one, an edit, a stale or
    repeated copy, a deletion, a goal, a twin under another id, or one the pipeline must quarantine."""

    def some_id(self) -> str | None:
        return self.rng.choice(sorted(self.entries)) if self.entries else None

    def record(self) -> tuple[str, Any]:
        """One record, as (entity type, document)."""
        roll = self.rng.random()
        entity_id = self.some_id()
        if roll < 0.28 or entity_id is None:
            return "logbook_entry", self.new_entry()
        versions = self.entries[entity_id]
        if roll < 0.46:  # an edit: newer updatedAt (after a deletion, it brings the entry back)
            edited = {**versions[-1], "notes": f"{entity_id} edit {len(versions)}", "updatedAt": self.tick()}
            versions.append(edited)
            return "logbook_entry", edited
        if roll < 0.58:  # a stale copy from a device that missed edits, or an exact repeat
            return "logbook_entry", self.rng.choice(versions)
        if roll < 0.64:  # a deletion marker at an explicit time
            return "logbook_entry", {"id": entity_id, "deletedAt": self.tick()}
        if roll < 0.74:  # a goal, new or edited
            edit = self.goals and self.rng.random() < 0.5
            goal_id = self.rng.choice(sorted(self.goals)) if edit else self.new_id("g")
            goal = {"id": goal_id, "title": f"goal {goal_id} at {self.clock}", "status": "PAUSED",
                    "progress": self.rng.randint(0, 100), "createdAt": iso(START_MS), "updatedAt": self.tick()}
            self.goals[goal_id] = goal
            return "goal", goal
        if roll < 0.79:  # the same session logged under another id
            twin_id = self.new_id("twin")
            twin = {**versions[-1], "id": twin_id, "createdAt": self.tick()}
            self.entries[twin_id] = [twin]
            return "logbook_entry", twin
        if roll < 0.82:  # a practice plan, stored as the device holds it
            return "practice_plan", {"id": self.new_id("plan"), "title": "week", "updatedAt": self.tick()}
        if roll < 0.94:  # legacy enum spellings, a newer version
            legacy = {**versions[-1], "type": "PRACTICE", "mood": "SATISFIED", "updatedAt": self.tick()}
            versions.append(legacy)
            return "logbook_entry", legacy
        return self.invalid(versions[-1])

    def invalid(self, base: dict[str, Any]) -> tuple[str, Any]:
        """A record the pipeline quarantines (and keeps)."""
        kind = self.rng.randrange(6)
        if kind == 0:
            return "logbook_entry", {**base, "id": self.new_id("bad"), "duration": -1}
        if kind == 1:
            return "logbook_entry", {**base, "id": self.new_id("other"), "user_id": "user_SomebodyElse00000000"}
        if kind == 2:
            return "logbook_entry", {**base, "id": self.new_id("future"), "updatedAt": "2999-01-01T00:00:00.000Z"}
        if kind == 3:
            return "logbook_entry", {key: value for key, value in base.items() if key != "id"}
        if kind == 4:
            return "flashcard", {"id": self.new_id("card"), "front": "C major"}
        return "goal", 42


# NDJSON `changes` groups of the entity types a line may carry that way.
CHANGE_GROUPS = {"logbook_entry": "entries", "goal": "goals", "practice_plan": "practicePlans"}
UNREADABLE_LINES: list[bytes] = [
    b'{"user_id": "' + ADA[0].encode() + b'", "records": [{"entity_type": "logbook_entry", "data": {"id"',
    b"\xff\xfe not text at all \x00\x81",
    b'{"user_id": 7, "records": []}',  # valid JSON of the wrong shape
]


def build_file(path: Path, seed: int = SEED) -> tuple[Path, int]:
    """The batch file, and how many units (records, deleted ids, unreadable lines) it holds."""
    rng = random.Random(seed)
    histories = {user[0]: History(user[0][5:9].lower(), rng) for user in USERS}
    histories[UNKNOWN] = History("nobody", rng)
    devices = {owner: [f"dev_{owner[5:9]}{d}{'x' * 12}" for d in range(rng.randint(2, 3))] for owner in histories}
    bad_at = set(rng.sample(range(50, LINES - 50), len(UNREADABLE_LINES)))
    lines: list[Any] = []
    units = 0
    for number in range(LINES):
        if number in bad_at:
            lines.append(UNREADABLE_LINES[len([n for n in bad_at if n < number])])
            units += 1
            continue
        if lines and rng.random() < 0.03:  # a device sending the very same line again
            again = rng.choice([line for line in lines if isinstance(line, dict)])
            lines.append(again)
            units += line_units(again)
            continue
        if rng.random() < 0.01:
            lines.append("")  # blank lines are skipped, not counted
        owner, line = owner_of_line(rng)
        history = histories[owner]
        if rng.random() < 0.95:
            line["device_id"] = rng.choice(devices[owner])
        records = [history.record() for _ in range(rng.randint(2, 22))]
        if rng.random() < 0.5 and all(entity_type in CHANGE_GROUPS for entity_type, _ in records):
            changes: dict[str, list[Any]] = {}
            for entity_type, document in records:
                changes.setdefault(CHANGE_GROUPS[entity_type], []).append(document)
            line["changes"] = changes
        else:
            line["records"] = [{"entity_type": t, "data": d} for t, d in records]
            if rng.random() < 0.25:
                line["deleted"] = deleted_ids(history, rng)
        lines.append(line)
        units += line_units(line)
    return ndjson(path, *lines), units


def owner_of_line(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Whose records a line holds, and how the line names them."""
    roll = rng.random()
    if roll < 0.05:
        return UNKNOWN, {"user_id": UNKNOWN}
    if roll < 0.10:
        return BEN[0], {"email": BEN[1].upper()}  # by email only, in another case than stored
    if roll < 0.14:
        return CARA[0], {"user_id": CARA_OLD_ID, "email": CARA[1]}
    user_id = rng.choice(USERS)[0]
    return user_id, {"user_id": user_id}


def deleted_ids(history: History, rng: random.Random) -> dict[str, list[Any]]:
    deleted: dict[str, list[Any]] = {"logbook_entry": [i for i in (history.some_id() for _ in range(3)) if i]}
    if rng.random() < 0.3:
        deleted["logbook_entry"].append(history.new_id("never-sent"))
    if history.goals and rng.random() < 0.3:
        deleted["goal"] = [rng.choice(sorted(history.goals))]
    if rng.random() < 0.1:
        deleted["flashcard"] = ["card-1"]  # quarantined: no such entity type
    if rng.random() < 0.1:
        deleted["logbook_entry"].append("")  # quarantined: no id
    return deleted


def line_units(line: dict[str, Any]) -> int:
    records = sum(len(group) for group in line.get("changes", {}).values()) + len(line.get("records", []))
    return records + sum(len(ids) for ids in line.get("deleted", {}).values())


# ---- running the command ----------------------------------------------------------------------------


def command(db: str, source: Path) -> list[str]:
    return [sys.executable, "-m", "service", "replay", "--db", db, "--batch-size", str(BATCH_SIZE), "--json",
            str(source)]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESYNC_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def run_to_end(db: str, source: Path) -> tuple[int, dict[str, Any], str]:
    """The command run to its end: exit status, JSON summary, stderr."""
    done = subprocess.run(command(db, source), cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, preexec_fn=_DIE_WITH_PARENT,
                          check=False)
    summary: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def read_only(db: str, sql: str) -> list[sqlite3.Row]:
    """A query through a read-only connection. Unlike a read-write one, it never checkpoints the WAL a
    killed run left behind when it closes: recovering that is the next run's job."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def records_done(db: str) -> int | None:
    """The checkpoint's count while a run writes (None when it cannot be read at this moment)."""
    try:
        found = read_only(db, "SELECT records_done FROM recovery_replay_checkpoints")
    except sqlite3.Error:
        return None
    return int(found[0]["records_done"]) if found else 0


def checkpoint(db: str) -> tuple[int, bool]:
    found = read_only(db, "SELECT records_done, finished FROM recovery_replay_checkpoints")
    assert len(found) <= 1
    return (int(found[0]["records_done"]), bool(found[0]["finished"])) if found else (0, False)


def received(db: str) -> int:
    return int(read_only(db, "SELECT COALESCE(SUM(received), 0) AS n FROM recovery_ledger")[0]["n"])


def sane(db: str) -> None:
    assert [tuple(r) for r in read_only(db, "PRAGMA integrity_check")] == [("ok",)]
    assert read_only(db, "PRAGMA foreign_key_check") == []


def run_and_kill(db: str, source: Path, threshold: int, pause_s: float, log: IO[bytes]) -> int:
    """Start the command, wait until it has done at least `threshold` units and some since it started,
    wait `pause_s` more, `kill -9` it; returns the units its checkpoint says were done before it started."""
    before, _ = checkpoint(db)
    target = max(threshold, before + 1)
    process = subprocess.Popen(command(db, source), cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_DIE_WITH_PARENT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (done := records_done(db)) is None or done < target:
            assert process.poll() is None, f"the replay ended ({process.returncode}) before it reached {target}"
            assert time.monotonic() < deadline, f"no progress to {target} within {RUN_TIMEOUT_S}s"
            time.sleep(POLL_S)
        time.sleep(pause_s)
        assert process.poll() is None, "the replay ended before it could be killed: kill points too late"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=RUN_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    return before


# ---- what the two databases hold ----------------------------------------------------------------------


def rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in query(db, sql)), key=repr)


def final_state(db: str) -> dict[str, Any]:
    """Everything a replay writes, without the run's own ids and clocks."""
    return {
        "sync_data": rows(db, "SELECT user_id, entity_type, entity_id, checksum, version, deleted_at IS NOT NULL,"
                              " data, device_id, seq FROM sync_data"),
        "sync_sequence": rows(db, "SELECT current_value FROM sync_sequence"),
        "logbook_entries": rows(db, "SELECT id, user_id, timestamp, duration, type, instrument, pieces, techniques,"
                                    " goal_ids, notes, mood, tags, session_id, metadata, created_at, updated_at,"
                                    " sync_version, checksum, deleted_at IS NOT NULL, device_id"
                                    " FROM logbook_entries"),
        "sync_metadata": rows(db, "SELECT user_id, last_sync_token, device_count, last_device_id FROM sync_metadata"),
        "ledger, in order": [tuple(r) for r in query(
            db, "SELECT user_id, device_id, source, file_name, payload_sha256, received, counts FROM recovery_ledger"
                " ORDER BY rowid")],
        "recovery_progress": rows(db, "SELECT user_id, entity_type, outcome, n FROM recovery_progress"),
        "recovery_quarantine": rows(db, "SELECT owner, email, entity_type, entity_id, reason, field, detail, raw,"
                                        " device_id, resolved_at FROM recovery_quarantine"),
        "recovery_archive": rows(db, "SELECT user_id, entity_type, entity_id, checksum, updated_ms, reason, data"
                                     " FROM recovery_archive"),
        "recovery_entity_state": rows(db, "SELECT user_id, entity_type, entity_id, updated_ms, deleted_ms IS NOT NULL,"
                                          " content_key, duplicate_of FROM recovery_entity_state"),
        "recovery_raw_records": rows(db, "SELECT user_id, entity_type, entity_id, raw_sha256, raw, checksum,"
                                         " device_id FROM recovery_raw_records"),
        "recovery_device_records": rows(db, "SELECT * FROM recovery_device_records"),
        "recovery_device_counts": rows(db, "SELECT * FROM recovery_device_counts"),
        "recovery_devices": rows(db, "SELECT user_id, device_id FROM recovery_devices"),
        "recovery_users": rows(db, "SELECT user_id FROM recovery_users"),
        "recovery_user_aliases": rows(db, "SELECT token_sub, user_id, email FROM recovery_user_aliases"),
        "checkpoints": rows(db, "SELECT replay_key, file_name, file_sha256, records_done, finished"
                                " FROM recovery_replay_checkpoints"),
    }


def everything(db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, clocks included: what a run that writes nothing leaves untouched."""
    tables = [r["name"] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {table: rows(db, f"SELECT * FROM {table}") for table in tables}  # noqa: S608 (names from the schema)


# ---- the test ---------------------------------------------------------------------------------------------


def kill_thresholds(units: int, rng: random.Random) -> list[int]:
    """KILLS distinct batch boundaries within KILL_SPAN of the file, in order."""
    first, last = (int(units * fraction) // BATCH_SIZE * BATCH_SIZE for fraction in KILL_SPAN)
    span = range(first, last, BATCH_SIZE)
    assert len(span) >= 10 * KILLS, "the file is too small for the kills to be spread out"
    return sorted(rng.sample(span, KILLS))


def check_the_file_exercises_everything(db: str) -> None:
    """Every owner kind, deletions both ways, every merge outcome and quarantine reason happened."""
    totals: Counter[str] = Counter()
    for counts in ledger_counts(db).values():
        totals.update(counts)
    for outcome in ("inserted", "updated", "duplicate", "kept_existing", "deleted", "suppressed",
                    "content_duplicate", "quarantined"):
        assert totals[outcome] > 0, outcome
    reasons = {r["reason"] for r in query(db, "SELECT DISTINCT reason FROM recovery_quarantine")}
    assert {"unknown_user", "user_mismatch", "invalid_value", "future_time", "missing_id",
            "unknown_entity_type", "not_an_object", "unreadable_line"} <= reasons
    owners = {r["owner"] for r in query(db, "SELECT DISTINCT owner FROM recovery_quarantine")}
    assert {UNKNOWN, "unknown"} <= owners
    assert [tuple(r) for r in query(db, "SELECT token_sub, user_id FROM recovery_user_aliases")] == [
        (CARA_OLD_ID, CARA[0])
    ]
    # Lines naming Ben by email only were his: their quarantined records are kept under his id.
    by_email = query(db, "SELECT COUNT(*) AS n FROM recovery_quarantine WHERE owner = ? AND email = ?",
                     (BEN[0], BEN[1].upper()))
    assert by_email[0]["n"] > 0
    assert query(db, "SELECT COUNT(*) AS n FROM recovery_ledger WHERE device_id IS NULL")[0]["n"] > 0


def test_kill_9_at_a_dozen_random_points_and_resuming_ends_exactly_like_one_uninterrupted_replay(
    tmp_path: Path,
) -> None:
    source, units = build_file(tmp_path / "devices.ndjson")
    rng = random.Random(SEED)
    thresholds = kill_thresholds(units, rng)

    # A: one uninterrupted run of the same command.
    whole = app_database(tmp_path / "whole.db", *USERS)
    exit_code, summary, stderr = run_to_end(whole, source)
    assert exit_code == 0, stderr
    assert summary["files"][0]["status"] == "replayed" and summary["records"] == units
    assert summary["bad_lines"] == len(UNREADABLE_LINES)
    assert checkpoint(whole) == (units, True)
    check_the_file_exercises_everything(whole)
    expected = final_state(whole)

    # B: killed at KILLS seeded points, each time resumed by running the same command again.
    killed = app_database(tmp_path / "killed.db", *USERS)
    resumed_from: list[int] = []
    done_after_kills: list[int] = []
    with (tmp_path / "killed.log").open("wb") as log:
        for threshold in thresholds:
            before = run_and_kill(killed, source, threshold, rng.uniform(0, MAX_PAUSE_S), log)
            assert Path(f"{killed}-wal").stat().st_size > 0, "no WAL left to recover: not the crash of a writer"
            sane(killed)
            done, finished = checkpoint(killed)
            assert before < done < units and not finished, (before, done)
            assert done % BATCH_SIZE == 0, f"a checkpoint off a batch boundary: {done}"
            # The checkpoint commits with its batch: the ledger holds exactly the units it says are done.
            assert received(killed) == done
            resumed_from.append(before)
            done_after_kills.append(done)
    assert resumed_from == [0, *done_after_kills[:-1]]
    log_text = (tmp_path / "killed.log").read_text(encoding="utf-8", errors="replace")
    for before in resumed_from[1:]:
        assert f"resuming {source} after {before:,} records done before" in log_text

    # The last resume runs to the end (the kills all left work to do).
    exit_code, summary, stderr = run_to_end(killed, source)
    assert exit_code == 0, stderr
    report = summary["files"][0]
    assert report["status"] == "resumed" and report["resumed_from"] == done_after_kills[-1], report
    assert summary["records"] == units - done_after_kills[-1]
    assert checkpoint(killed) == (units, True)
    sane(killed)

    # Once more: a no-op that writes nothing.
    before_again = everything(killed)
    exit_code, summary, stderr = run_to_end(killed, source)
    assert exit_code == 0, stderr
    assert summary["files"][0]["status"] == "already_replayed" and summary["records"] == 0, summary
    assert f"already replayed: {source}" in stderr
    assert everything(killed) == before_again, "a run of a finished replay wrote something"

    # The same end state as the uninterrupted run, table by table.
    actual = final_state(killed)
    for table in expected:
        assert actual[table] == expected[table], f"{table} differs after {KILLS} kills and resumes"

    # Per user: the same totals received and per outcome; and received == the sum of its progress.
    assert ledger_counts(killed) == ledger_counts(whole)
    for db in (whole, killed):
        per_user: dict[str, int] = defaultdict(int)
        for (user_id, _, _), n in progress(db).items():
            per_user[user_id] += n
        assert {user: c["received"] for user, c in ledger_counts(db).items()} == per_user
        assert sum(per_user.values()) == units
