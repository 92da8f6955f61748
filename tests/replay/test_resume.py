"""A replay killed with SIGKILL, or stopped with Ctrl-C or SIGTERM, continues where it stopped when run again:
nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service.replay.cli import EXIT_INTERRUPTED
from tests.replay.helpers import app_database, count, ledger_counts, ndjson, progress, query, replay, sync_rows

pytestmark = pytest.mark.slow  # real processes, killed and resumed: CI runs it, `-m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[2]
USERS = [(f"user_ReplayTestUser{n:07d}", f"user{n}@example.com", "user") for n in range(20)]
UNKNOWN = "user_NobodyNobodyNobody00"
LINES = 3000
RECORDS_PER_LINE = 10


def entry(entry_id: str, day: int, notes: str, updated: str = "2025-06-01T18:30:12.345Z") -> dict[str, Any]:
    return {
        "id": entry_id, "timestamp": f"2025-{1 + day % 12:02d}-{1 + day % 28:02d}T17:45:00.000Z",
        "duration": 5 + day % 55, "type": "practice", "instrument": "piano",
        "pieces": [{"title": f"Etude {day % 40}", "composer": "Czerny"}], "notes": notes,
        "createdAt": "2025-06-01T18:30:12.345Z", "updatedAt": updated,
    }


def batch_file(path: Path) -> tuple[Path, int]:
    """Many users and devices, edits re-sent later, deletions, an unknown user and bad lines."""
    lines: list[Any] = []
    units = 0
    for i in range(LINES):
        user = UNKNOWN if i % 250 == 7 else USERS[i % len(USERS)][0]
        records = [{"entity_type": "logbook_entry", "data": entry(f"e{i}_{j}", i + j, f"line {i} record {j}")}
                   for j in range(RECORDS_PER_LINE - 1)]
        if i >= 40:  # the same user's entry from 40 lines back, edited later
            records.append({"entity_type": "logbook_entry",
                            "data": entry(f"e{i - 40}_1", i, f"edit of e{i - 40}_1", "2025-08-01T10:00:00.000Z")})
        device = f"dev_{i % len(USERS):02d}{i % 7 == 0:014d}"  # a second device now and then
        line: dict[str, Any] = {"user_id": user, "device_id": device, "records": records}
        if i % 100 == 50:
            line["deleted"] = {"logbook_entry": [f"e{i - 20}_2"]}
        lines.append(line)
        units += len(records) + (1 if "deleted" in line else 0)
        if i % 700 == 3:
            lines.append('{"user_id": "' + USERS[0][0] + '", "records": [')  # cut short
            units += 1
    return ndjson(path, *lines), units


def versioned_rows(db: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in query(db, "SELECT user_id, entity_type, entity_id, checksum, version,"
                                        " deleted_at IS NOT NULL FROM sync_data")}


def live_logbook(db: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in query(db, "SELECT id, user_id, checksum, sync_version FROM logbook_entries"
                                        " WHERE deleted_at IS NULL")}


@pytest.mark.parametrize(
    ("stop", "exit_code", "ctrl_c_ignored"),
    [
        pytest.param(signal.SIGKILL, -signal.SIGKILL, False, id="killed"),
        # Stopped as an operator would (Ctrl-C, `kill`, `docker stop`): the interrupted exit, and why.
        pytest.param(signal.SIGINT, EXIT_INTERRUPTED, False, id="ctrl-c"),
        pytest.param(signal.SIGTERM, EXIT_INTERRUPTED, False, id="terminated"),
        # Started in the background by a script, which ignores Ctrl-C for it: SIGTERM still stops it.
        pytest.param(signal.SIGTERM, EXIT_INTERRUPTED, True, id="terminated-in-background"),
    ],
)
def test_a_stopped_replay_resumes_without_losing_or_repeating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stop: signal.Signals, exit_code: int, ctrl_c_ignored: bool
) -> None:
    source, units = batch_file(tmp_path / "devices.ndjson")
    assert units > 29_000

    whole = app_database(tmp_path / "whole.db", *USERS)
    assert replay(capsys, whole, source).exit_code == 0  # other batch boundaries, same results

    killed = app_database(tmp_path / "killed.db", *USERS)
    command = [sys.executable, "-m", "service.replay", "--db", killed, "--batch-size", "500", "--json", str(source)]
    if ctrl_c_ignored:
        command = ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *command]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not query(killed, "SELECT 1 FROM recovery_replay_checkpoints WHERE records_done > 0"):
            assert process.poll() is None, "the replay ended before it could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        process.send_signal(stop)
    finally:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code
    if stop != signal.SIGKILL:
        assert "interrupted: every batch committed so far is kept" in stderr

    checkpoint = query(killed, "SELECT records_done, finished FROM recovery_replay_checkpoints")
    assert len(checkpoint) == 1 and checkpoint[0]["finished"] == 0
    done = checkpoint[0]["records_done"]
    assert 0 < done < units
    # The checkpoint commits with its batch: the ledger holds exactly the units it says are done.
    assert sum(c["received"] for c in ledger_counts(killed).values()) == done

    resumed = replay(capsys, killed, "--batch-size", "500", source)
    assert resumed.exit_code == 0
    assert resumed.file("devices.ndjson")["status"] == "resumed"
    assert resumed.file("devices.ndjson")["resumed_from"] == done
    assert resumed.summary["records"] == units - done

    assert versioned_rows(killed) == versioned_rows(whole)
    assert ledger_counts(killed) == ledger_counts(whole)
    assert progress(killed) == progress(whole)
    assert sum(c["received"] for c in ledger_counts(killed).values()) == units
    for table in ("recovery_raw_records", "recovery_quarantine", "recovery_archive"):
        assert count(killed, table) == count(whole, table), table
    # Live rows only: an entry inserted and deleted within one upload gets no soft-deleted
    # logbook_entries row (store.apply_plan), so that mirror depends on where batches are cut.
    assert live_logbook(killed) == live_logbook(whole)
    assert query(killed, "SELECT records_done, finished FROM recovery_replay_checkpoints")[0][:] == (units, 1)

    again = replay(capsys, killed, "--batch-size", "500", source)
    assert again.file("devices.ndjson")["status"] == "already_replayed"
    assert "already replayed: " in again.stderr
    assert sync_rows(killed) == sync_rows(whole)
    assert sum(c["received"] for c in ledger_counts(killed).values()) == units
