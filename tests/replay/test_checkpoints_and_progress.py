"""Checkpoints commit with their batch and refuse to move from under another run; progress output."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from service.domain.owners import UserRecord
from service.replay.checkpoints import Checkpoint, CheckpointMoved, checkpoint_writer, load_checkpoint, replay_key
from service.replay.owners import OwnerOption
from service.replay.progress import BarProgress, LineProgress, progress_for
from service.store.interface import WriteUnit
from service.store.sqlite.engine import SqliteStorage
from service.usecases.ingest import IncomingRecord, Upload, ingest_batch
from tests.conftest import ADA
from tests.replay.helpers import app_database, count

SHA = "ab" * 32


def test_checkpoint_keys_name_the_file_and_the_owner_option() -> None:
    assert replay_key(SHA, OwnerOption()) == f"{SHA}:owner-from-file"
    assert replay_key(SHA, OwnerOption(user_id=ADA[0])) == f"{SHA}:user={ADA[0]}"
    assert replay_key(SHA, OwnerOption(email="Ada@Example.com")) == f"{SHA}:email=ada@example.com"


async def test_a_batch_is_rolled_back_when_another_run_moved_the_checkpoint(tmp_path: Path) -> None:
    db = await SqliteStorage.open(app_database(tmp_path / "app.db", ADA))
    try:
        key = replay_key(SHA, OwnerOption())

        def move(before: int, after: int, finished: bool = False) -> Callable[[WriteUnit], None]:
            return checkpoint_writer(key, file_name="f.ndjson", file_sha256=SHA, done_before=before,
                                     done_after=after, finished=finished)

        await ingest_batch(db, [], in_transaction=move(0, 500))
        assert await load_checkpoint(db, key) == Checkpoint(500, False)
        await ingest_batch(db, [], in_transaction=move(500, 700, finished=True))  # an upsert, never REPLACE
        assert await load_checkpoint(db, key) == Checkpoint(700, True)

        goal = IncomingRecord("goal", b'{"id": "g1", "title": "Scales", "status": "active"}')
        upload = Upload(owner=ADA[0], user=UserRecord(*ADA), device_id=None, source="replay", records=[goal])
        with pytest.raises(CheckpointMoved, match="expected 0 records done, found 700"):
            await ingest_batch(db, [upload], in_transaction=move(0, 1))
    finally:
        await db.close()
    db_path = str(tmp_path / "app.db")
    assert count(db_path, "sync_data") == count(db_path, "recovery_ledger") == 0


def test_log_lines_come_every_few_seconds_with_rate_and_time_left() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = LineProgress(out, interval=5.0, clock=lambda: now[0])
    progress.start("devices.ndjson", 1000)
    progress.update(100, 50)
    now[0] = 6.0
    progress.update(250, 600)
    now[0] = 7.0
    progress.update(300, 700)  # within the interval: quiet
    now[0] = 12.0
    progress.finish()
    assert out.getvalue().splitlines() == [
        "replay: devices.ndjson: 600 records, 100 records/s, 25% about 0:00:18 left",
        "replay: devices.ndjson: 700 records, 58 records/s, done in 0:00:12",
    ]
    progress.start("small.json", 10)  # a phase too short for a line stays quiet
    progress.update(10, 10)
    progress.finish()
    progress.message("already replayed: x")
    assert out.getvalue().splitlines()[2:] == ["already replayed: x"]


def test_a_terminal_gets_a_progress_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_for(Terminal()), BarProgress)
    assert isinstance(progress_for(io.StringIO()), LineProgress)
    out = io.StringIO()
    bar = BarProgress(Console(file=out, force_terminal=True, width=120))
    bar.start("devices.ndjson", 1000)
    bar.update(500, 1234)
    bar.message("resuming devices.ndjson")
    bar.close()
    assert "devices.ndjson" in out.getvalue() and "1,234 records" in out.getvalue()
    assert "records/s" in out.getvalue() and "resuming devices.ndjson" in out.getvalue()
