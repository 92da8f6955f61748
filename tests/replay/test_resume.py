"""A replay killed with SIGKILL, or stopped with Ctrl-C or SIGTERM, continues where it stopped when run again:
nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.replay.cli import EXIT_INTERRUPTED
from tests.replay.helpers import (
    USERS,
    app_database,
    batch_file,
    count,
    ledger_counts,
    live_logbook,
    progress,
    query,
    replay,
    sync_rows,
    versioned_rows,
)

pytestmark = pytest.mark.slow  # real processes, killed and resumed: CI runs it, `-m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[2]


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
