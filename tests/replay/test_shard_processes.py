"""Several replay processes at once against one SQLite file (its write lock serialises their batches):
two shards of one input, one of them killed and resumed, and two processes taking different files."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service.domain.owners import Owner, UserRecord
from service.replay.shards import shard_of
from tests.replay.helpers import (
    USERS,
    app_database,
    batch_file,
    count,
    ledger_counts,
    ndjson,
    query,
    replay,
    sync_rows,
)
from tests.replay.test_shards import assert_same_database

pytestmark = pytest.mark.slow  # real processes at once, one killed: CI runs it, `-m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[2]
Capsys = pytest.CaptureFixture[str]
OVERLAP_ATTEMPTS = 3  # runs of processes meant to overlap, until they do


def start(db: str, *args: str | Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "service.replay", "--db", db, "--json", "--batch-size", "500", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any] | None]:
    """Its exit code and JSON summary (None when it printed none); its stderr goes to the test's own."""
    out, err = process.communicate(timeout=300)
    sys.stderr.write(err)
    return process.returncode, (json.loads(out) if out.strip() else None)


def writers_in_commit_order(db: str, shards: int) -> list[int]:
    """The shard of each ledger row's user, in the order the rows were committed."""
    users = {u[0]: shard_of(Owner(u[0], UserRecord(*u)), shards) for u in USERS}
    return [users[r["user_id"]] for r in query(db, "SELECT user_id FROM recovery_ledger ORDER BY rowid")
            if r["user_id"] in users]


def switches(order: list[Any]) -> int:
    changes = sum(a != b for a, b in itertools.pairwise(order))
    print(f"writers switched {changes} times in {len(order)} uploads")
    return changes


def test_two_shard_processes_at_once_write_what_one_run_writes(tmp_path: Path, capsys: Capsys) -> None:
    source, units = batch_file(tmp_path / "devices.ndjson")
    whole = app_database(tmp_path / "whole.db", *USERS)
    one_run = replay(capsys, whole, "--batch-size", "500", source)
    assert one_run.exit_code == 0

    # They must run at once for the test to mean anything (their batches' commits interleave), but SQLite's
    # busy handler may let one take the lock back batch after batch while the other sleeps (seen on the
    # previous code as well, 2 runs in 5). Whatever the order, the result must be right; the overlap is retried.
    for attempt in range(1, OVERLAP_ATTEMPTS + 1):
        shared = app_database(tmp_path / f"shared-{attempt}.db", *USERS)
        processes = [start(shared, "--shard", f"{i}/2", source) for i in (1, 2)]
        (code_1, run_1), (code_2, run_2) = (finish(p) for p in processes)
        assert (code_1, code_2) == (0, 0) and run_1 is not None and run_2 is not None
        assert_same_database(shared, whole)
        assert run_1["records"] + run_2["records"] == one_run.summary["records"] == units
        assert run_1["records"] > 0 and run_2["records"] > 0
        for outcome, n in one_run.summary["counts"].items():
            assert run_1["counts"][outcome] + run_2["counts"][outcome] == n, outcome
        if switches(writers_in_commit_order(shared, 2)) >= 4:
            break
    else:
        pytest.fail(f"the two shards never ran at once in {OVERLAP_ATTEMPTS} attempts")


def test_a_shard_killed_midway_resumes_and_the_shards_still_write_what_one_run_writes(
    tmp_path: Path, capsys: Capsys
) -> None:
    source, units = batch_file(tmp_path / "devices.ndjson")
    whole = app_database(tmp_path / "whole.db", *USERS)
    assert replay(capsys, whole, "--batch-size", "500", source).exit_code == 0

    shared = app_database(tmp_path / "shared.db", *USERS)
    first, second = (start(shared, "--shard", f"{i}/2", source) for i in (1, 2))
    try:
        deadline = time.monotonic() + 60
        while not query(shared, "SELECT 1 FROM recovery_replay_checkpoints"
                                " WHERE replay_key LIKE '%:shard=1/2' AND records_done > 0"):
            assert first.poll() is None, "shard 1 ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
    finally:
        killed_code, _ = finish(first)
    assert killed_code == -signal.SIGKILL
    second_code, second_run = finish(second)
    assert second_code == 0 and second_run is not None

    checkpoints = {r["replay_key"].rsplit(":", 1)[1]: (r["records_done"], r["finished"])
                   for r in query(shared, "SELECT replay_key, records_done, finished FROM recovery_replay_checkpoints")}
    done, finished = checkpoints["shard=1/2"]
    assert 0 < done < units and not finished
    assert checkpoints["shard=2/2"] == (units, 1)

    resumed = replay(capsys, shared, "--batch-size", "500", "--shard", "1/2", source)
    assert resumed.exit_code == 0
    assert resumed.file("devices.ndjson")["status"] == "resumed"
    assert resumed.file("devices.ndjson")["resumed_from"] == done
    assert_same_database(shared, whole)
    assert sum(c["received"] for c in ledger_counts(shared).values()) == units


def test_two_processes_taking_different_files_at_once_write_what_one_run_of_both_writes(
    tmp_path: Path, capsys: Capsys
) -> None:
    """The same users in both files, edits of one file's entries in the other: the newest version of each
    entry wins whichever process commits first."""
    source, units = batch_file(tmp_path / "devices.ndjson")
    lines = source.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    first = ndjson(tmp_path / "first.ndjson", *(line.rstrip(b"\n") for line in lines[:half]))
    second = ndjson(tmp_path / "second.ndjson", *(line.rstrip(b"\n") for line in lines[half:]))

    whole = app_database(tmp_path / "whole.db", *USERS)
    one_run = replay(capsys, whole, "--batch-size", "500", first, second)
    assert one_run.exit_code == 0 and one_run.summary["records"] == units

    # The two processes must overlap for the test to mean anything; on a loaded machine one may finish
    # before the other has started. Whatever the order, the result must be right; the overlap is retried.
    for attempt in range(1, OVERLAP_ATTEMPTS + 1):
        shared = app_database(tmp_path / f"shared-{attempt}.db", *USERS)
        processes = [start(shared, path) for path in (first, second)]
        (code_1, run_1), (code_2, run_2) = (finish(p) for p in processes)
        assert (code_1, code_2) == (0, 0) and run_1 is not None and run_2 is not None
        assert run_1["records"] + run_2["records"] == units
        assert sync_rows(shared) == sync_rows(whole)  # every key once, the same winner, the same deletions
        assert sum(c["received"] for c in ledger_counts(shared).values()) == units
        for table in ("recovery_raw_records", "recovery_quarantine", "recovery_entity_state"):
            assert count(shared, table) == count(whole, table), table
        seq = query(shared, "SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS distinct_seq FROM sync_data")[0]
        assert seq["n"] == seq["distinct_seq"] == count(whole, "sync_data")
        files = [r["file_name"] for r in query(shared, "SELECT file_name FROM recovery_ledger ORDER BY rowid")]
        if switches(files) >= 4:  # both ran at once
            break
    else:
        pytest.fail(f"the two processes never ran at once in {OVERLAP_ATTEMPTS} attempts")
    # Files are told apart by their SHA-256: both finished, each with its own checkpoint.
    assert [tuple(r) for r in query(shared, "SELECT records_done, finished FROM recovery_replay_checkpoints"
                                            " ORDER BY records_done")] == sorted(
        [(run_1["records"], 1), (run_2["records"], 1)])
