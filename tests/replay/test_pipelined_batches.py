"""Batches are staged while the one before commits: an error found in a later batch leaves every batch
before it committed, in order, each with its checkpoint."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from service.replay.inputs import survey
from service.replay.progress import progress_for
from service.replay.runner import Replayer, ReplayOptions
from service.replay.summary import UNREADABLE, ReplaySummary
from service.store.sqlite.engine import SqliteStorage
from tests.replay.helpers import USERS, app_database, entry, ndjson

LINES = 40
BATCH = 25  # records per transaction: 16 batches of this file


async def test_a_file_changed_during_the_replay_keeps_the_batches_before_the_check(tmp_path: Path) -> None:
    """The file is checked against its surveyed SHA-256 before its last batch commits; when that fails, the
    batches staged and committed before stay, each with its checkpoint, and nothing of the last batch."""
    db_path = app_database(tmp_path / "app.db", *USERS[:2])
    lines = [{"user_id": USERS[i % 2][0], "records": [{"entity_type": "logbook_entry",
                                                       "data": entry(f"e{i}_{j}", i + j, "notes")}
                                                      for j in range(10)]} for i in range(LINES)]
    path = ndjson(tmp_path / "batch.ndjson", *lines)
    found = survey([path])
    path.write_bytes(path.read_bytes().replace(b'"notes"', b'"NOTES"'))  # same size, other content

    summary = ReplaySummary(db_path, dry_run=False)
    db = await SqliteStorage.open(db_path)
    try:
        options = ReplayOptions(batch_size=BATCH)
        await Replayer(db, options, progress_for(io.StringIO()), summary).replay([path], found.files)
    finally:
        await db.close()

    assert summary.files[0].status == UNREADABLE
    with sqlite3.connect(db_path) as conn:
        received = conn.execute("SELECT SUM(received) FROM recovery_ledger").fetchone()[0]
        done = conn.execute("SELECT records_done, finished FROM recovery_replay_checkpoints").fetchone()
    # Every batch but the last one committed, in order, each with the checkpoint that covers it.
    assert received == LINES * 10 - BATCH
    assert done == (LINES * 10 - BATCH, 0)
