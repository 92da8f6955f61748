"""A replay stopped by a signal to its whole process group (`timeout -s TERM`, `kill -- -PGID`, systemd's
default, Ctrl-C in a terminal) exits at once, every time: the clean note, no traceback from it or its
worker processes, and with `--json` the summary of what was done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.replay.cli import EXIT_INTERRUPTED
from tests.replay.helpers import USERS, app_database, batch_file, ledger_counts, query

ROOT = Path(__file__).resolve().parents[2]
RUNS = [(signal.SIGTERM, delay) for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)] + [(signal.SIGINT, 0.0),
                                                                                   (signal.SIGINT, 0.1)]


@pytest.mark.slow
def test_a_signal_to_the_process_group_stops_the_replay_promptly_every_time(tmp_path: Path) -> None:
    source, units = batch_file(tmp_path / "devices.ndjson")
    for run, (signum, delay) in enumerate(RUNS):
        db = app_database(tmp_path / f"run{run}.db", *USERS)
        command = [sys.executable, "-m", "service", "replay", "--db", db, "--batch-size", "500", "--json", str(source)]
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not query(db, "SELECT 1 FROM recovery_replay_checkpoints WHERE records_done > 0"):
                assert process.poll() is None, "the replay ended before it could be stopped"
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(delay)  # workers busy, between batches, mid-commit: different moments
            os.killpg(process.pid, signum)  # the whole group: the replay and its worker processes
            sent = time.monotonic()
            stdout, stderr = process.communicate(timeout=20)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        where = f"run {run} ({signum.name} after {delay}s)"
        assert process.returncode == EXIT_INTERRUPTED, (where, stderr)
        assert took < 5, (where, took)
        assert "Traceback" not in stderr, (where, stderr)
        assert "interrupted: every batch committed so far is kept" in stderr, where
        summary = json.loads(stdout)
        assert summary["interrupted"] is True and summary["exit_code"] == EXIT_INTERRUPTED
        assert summary["files"][0]["status"] == "stopped"
        done = query(db, "SELECT records_done FROM recovery_replay_checkpoints")[0]["records_done"]
        assert 0 < done < units
        # The summary counts exactly the batches that committed.
        assert summary["records"] == done == sum(c["received"] for c in ledger_counts(db).values()), where
