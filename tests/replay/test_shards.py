"""`replay --shard i/n`: processes sharing one input by user replay, together, exactly what one unsharded
run replays: every record once, each user's records by one shard in file order, resumable per shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.owners import Owner, UserRecord
from service.replay.batching import cut_shard_batches, skip_units
from service.replay.cli import main
from service.replay.model import BadLine, Item, OwnerClaim
from service.replay.owners import NO_OWNER
from service.replay.shards import Shard, shard_of
from tests.conftest import ADA, BEN, query
from tests.replay.helpers import (
    EXPORT_2_0,
    USERS,
    app_database,
    batch_file,
    count,
    ledger_counts,
    live_logbook,
    ndjson,
    progress,
    replay,
    versioned_rows,
)
from tests.replay.test_sources import group, items_strategy, unit_labels

Capsys = pytest.CaptureFixture[str]
EVERYONE = (*USERS, ADA, BEN)


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "2", "a/b", "-1/2", "1/2/3", "", "1.5/2"])
def test_a_shard_that_is_not_i_of_n_is_refused_with_exit_2(value: str, capsys: Capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--db", str(tmp_path / "app.db"), f"--shard={value}", str(tmp_path)])
    assert stopped.value.code == 2
    assert "argument --shard: must be I/N" in capsys.readouterr().err


def test_a_shard_parses_from_i_of_n() -> None:
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4" and Shard.parse(" 1/1 ") == Shard(1, 1)


def user_owner(user_id: str) -> Owner:
    return Owner(user_id, UserRecord(user_id, f"{user_id}@example.com", "user"))


def test_an_owners_shard_is_a_stable_hash_of_its_key() -> None:
    """The same in every process and run (never Python's salted `hash`): pinned values."""
    assert [shard_of(user_owner(u[0]), 4) for u in USERS[:8]] == [4, 3, 2, 2, 1, 2, 4, 3]
    assert shard_of(user_owner(ADA[0]), 1) == 1
    # An owner nobody resolves is sharded by what its records wait under; nobody at all: shard 1.
    unknown = Owner("user_NobodyNobodyNobody00", None, problem="unknown_user")
    assert shard_of(unknown, 7) == shard_of(Owner("user_NobodyNobodyNobody00", None, problem="unknown_user"), 7)
    assert all(shard_of(Owner(NO_OWNER, None, problem=p), n) == 1
               for p in ("unknown_user", "unreadable_line") for n in (2, 5, 16))


@given(items=items_strategy, size=st.integers(1, 7), skipped=st.integers(0, 40), taken=st.sets(st.sampled_from("abc")))
async def test_a_shards_batches_hold_its_units_once_in_order_and_cover_the_file(
    items: list[Item], size: int, skipped: int, taken: set[str]
) -> None:
    """Batches of `size` units of the shard's own items; each batch also covers the other shards' units read
    with it, so that its checkpoint is a position in the whole file."""
    async def in_shard(item: Item) -> bool:
        return isinstance(item, BadLine) or (item.claim is not None and item.claim.user_id in taken)

    rest = list(skip_units(items, skipped))
    mine = [item for item in rest if await in_shard(item)]
    batches = [b async for b in cut_shard_batches(rest, size, in_shard)]
    assert [label for b in batches for label in unit_labels(b.items)] == unit_labels(mine)
    assert all(b.taken == len(unit_labels(b.items)) for b in batches)
    assert all(b.taken == size for b in batches[:-1]) and all(b.taken <= size for b in batches)
    assert sum(b.units for b in batches) == sum(item.units for item in rest)
    assert [b.last for b in batches] == [False] * (len(batches) - 1) + [True] * bool(batches)


async def test_units_of_other_shards_after_the_last_taken_one_go_with_the_last_batch() -> None:
    async def only_a(item: Item) -> bool:
        return not isinstance(item, BadLine) and item.claim == OwnerClaim("a")

    items: list[Item] = [group("a", 2, 0), group("b", 3, 0), BadLine(9, "bad", b"x")]
    batches = [b async for b in cut_shard_batches(items, 2, only_a)]
    assert [(b.taken, b.units, b.last) for b in batches] == [(2, 6, True)]
    assert [(b.taken, b.units, b.last) for b in [b async for b in cut_shard_batches(items[1:], 2, only_a)]] == [
        (0, 4, True)
    ]


def mixed_file(path: Path) -> Path:
    """Owners named every way: by email (another case), by an old id mapped by email, by nobody; bad lines."""
    def line(n: int, **owner: Any) -> dict[str, Any]:
        record = {"id": f"m{n}", "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
                  "instrument": "piano", "notes": f"mixed {n}", "updatedAt": "2025-06-01T18:30:12.345Z"}
        return {**owner, "device_id": "dev_mixed0000000001", "records": [{"entity_type": "logbook_entry",
                                                                        "data": record}]}

    return ndjson(
        path,
        line(1, email=BEN[1].upper()), line(2, user_id=BEN[0]),
        line(3, user_id="user_OldIdOfAdaOldIdOfAda0", email=ADA[1]), line(4, user_id=ADA[0]),
        line(5), b"{not json", line(6, email="nobody@example.com"), b"\xff\xfe", line(7, user_id=USERS[3][0]),
    )


def inputs(tmp_path: Path) -> tuple[list[Path], int]:
    source, units = batch_file(tmp_path / "devices.ndjson", 600)
    return [source, mixed_file(tmp_path / "mixed.ndjson"), EXPORT_2_0], units


def assert_same_database(got: str, want: str) -> None:
    assert versioned_rows(got) == versioned_rows(want)
    assert live_logbook(got) == live_logbook(want)
    assert ledger_counts(got) == ledger_counts(want)
    assert progress(got) == progress(want)
    for table in ("sync_data", "recovery_raw_records", "recovery_quarantine", "recovery_archive",
                  "recovery_entity_state"):
        assert count(got, table) == count(want, table), table
    for db in (got, want):
        seq = query(db, "SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS distinct_seq FROM sync_data")[0]
        assert seq["n"] == seq["distinct_seq"] > 0


@pytest.mark.parametrize("shards", [2, 3])
def test_the_shards_of_a_replay_together_write_what_one_run_writes(
    tmp_path: Path, capsys: Capsys, shards: int
) -> None:
    files, _ = inputs(tmp_path)
    whole = app_database(tmp_path / "whole.db", *EVERYONE)
    one_run = replay(capsys, whole, *files)
    assert one_run.exit_code == 0 and one_run.summary["shard"] is None

    sharded = app_database(tmp_path / "sharded.db", *EVERYONE)
    runs = [replay(capsys, sharded, "--shard", f"{i}/{shards}", *files) for i in range(1, shards + 1)]
    assert [r.exit_code for r in runs] == [0] * shards
    assert [r.summary["shard"] for r in runs] == [{"index": i, "count": shards} for i in range(1, shards + 1)]
    assert_same_database(sharded, whole)

    # Counts add up, per outcome and per user, and every user is replayed by one shard only.
    assert {k: sum(r.summary["counts"][k] for r in runs) for k in one_run.summary["counts"]} == one_run.summary[
        "counts"]
    owners = [set(r.summary["users"]) for r in runs]
    assert all(owners) and sum(len(o) for o in owners) == len(set().union(*owners)) == len(one_run.summary["users"])
    assert ADA[0] in one_run.summary["users"]  # by id, by email and by an old id: one owner, one shard
    # Lines nobody owns (unreadable, or naming no one) are shard 1's, once.
    assert [r.summary["bad_lines"] for r in runs] == [one_run.summary["bad_lines"]] + [0] * (shards - 1)
    assert "unknown" in runs[0].summary["users"]
    assert sum(r.summary["records"] for r in runs) == one_run.summary["records"]

    checkpoints = query(sharded, "SELECT replay_key, records_done, finished FROM recovery_replay_checkpoints")
    assert len(checkpoints) == 3 * shards and all(c["finished"] for c in checkpoints)
    assert all(c["replay_key"].endswith(f"/{shards}") for c in checkpoints)
    again = replay(capsys, sharded, "--shard", f"1/{shards}", *files)
    assert {f["status"] for f in again.summary["files"]} == {"already_replayed"}
    assert "(shard 1/" not in again.stderr and again.summary["records"] == 0


def test_a_shard_that_takes_nothing_of_a_file_has_replayed_it(tmp_path: Path, capsys: Capsys) -> None:
    """An export of one user holds nothing for the other shards: not 'nothing to replay' (exit 2)."""
    db = app_database(tmp_path / "app.db", *EVERYONE)
    runs = [replay(capsys, db, "--shard", f"{i}/3", EXPORT_2_0) for i in (1, 2, 3)]
    assert [r.exit_code for r in runs] == [0, 0, 0]
    assert sorted(r.summary["records"] for r in runs) == [0, 0, 15]
    assert {r.summary["files"][0]["status"] for r in runs} == {"replayed"}


def test_the_text_summary_names_the_shard(tmp_path: Path, capsys: Capsys) -> None:
    db = app_database(tmp_path / "app.db", *EVERYONE)
    capsys.readouterr()
    assert main(["--db", db, "--shard", "2/2", str(EXPORT_2_0)]) == 0
    assert "(shard 2/2: the users whose records fall in it)" in capsys.readouterr().out.splitlines()[0]
