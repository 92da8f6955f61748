"""The change feed over one SQLite file shared by several processes (`PollingFeed`): a change committed
through one process reaches a socket held by another within a poll or two, without the socket asking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.changefeed import open_feed
from service.changefeed.polling import POLL_INTERVAL_S, PollingFeed
from service.store.sqlite import SqliteStorage
from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.units import SqliteWriteUnit
from tests.conftest import ADA, BEN, add_users
from tests.reliability.cross_process import assert_changes_cross_processes
from tests.reliability.liveserver import ServerProcess

# The bound a client sees: a couple of polls plus the catch-up read, on a loaded 2-CPU machine.
DELIVERY_BOUND_S = 2.0


async def _push(storage: SqliteStorage, user_id: str, count: int) -> int:
    """Commit `count` fresh sync_data rows for the user through this storage's writer; their last seq."""

    def write(conn: SyncConnection) -> int:
        first = SqliteWriteUnit(conn).allocate_seq(count)
        conn.executemany(
            "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, seq)"
            " VALUES (?, ?, 'logbook_entry', ?, '{}', 'c', ?)",
            [(f"row-{first + n}", user_id, f"e{first + n}", first + n) for n in range(count)],
        )
        return first + count - 1

    async with storage.sql_write() as conn:
        return await conn.run(write)


async def test_another_connections_commits_are_announced_only_while_a_listener_wants_them(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    server, other = await SqliteStorage.open(path), await SqliteStorage.open(path)
    add_users(path, ADA, BEN)
    feed = await open_feed(server)
    assert isinstance(feed, PollingFeed)
    heard: list[tuple[str | None, int]] = []
    holding = False
    feed.subscribe(lambda user, seq: heard.append((user, seq)), wanted=lambda: holding)
    try:
        await feed.poll()
        assert heard == []  # nothing committed since the feed opened
        await _push(other, ADA[0], 2)
        await feed.poll()
        assert heard == []  # no listener wanted notices: the mark moves on, nothing is read
        holding = True
        ada = await _push(other, ADA[0], 3)
        ben = await _push(other, BEN[0], 1)
        await feed.poll()
        assert sorted(heard, key=str) == sorted([(ADA[0], ada), (BEN[0], ben)], key=str)
        await feed.poll()
        assert len(heard) == 2  # an idle poll announces nothing again
        feed.publish(ADA[0], 99)  # this process's own commit: heard at once
        assert heard[-1] == (ADA[0], 99)
    finally:
        await feed.close()
        await server.close()
        await other.close()


async def test_the_feed_polls_by_itself(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    server, other = await SqliteStorage.open(path), await SqliteStorage.open(path)
    add_users(path, ADA)
    feed = await open_feed(server)
    assert feed is not None
    heard: list[tuple[str | None, int]] = []
    arrived = asyncio.Event()

    def hear(user: str | None, seq: int) -> None:
        heard.append((user, seq))
        arrived.set()

    feed.subscribe(hear)
    try:
        seq = await _push(other, ADA[0], 1)
        await asyncio.wait_for(arrived.wait(), POLL_INTERVAL_S * 8)
        assert heard == [(ADA[0], seq)]
    finally:
        await feed.close()
        await server.close()
        await other.close()


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two service processes on one SQLite file (what `serve --workers 2` runs, each on its own port so a
    test can choose which one holds a socket)."""
    db = tmp_path / "app.db"
    servers = [ServerProcess(db, tmp_path / f"server-{n}.log") for n in (1, 2)]
    try:
        for server in servers:
            server.start()
        add_users(str(db), ADA, BEN)
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
async def test_a_change_through_one_process_reaches_a_socket_held_by_another_promptly(
    two_processes: tuple[ServerProcess, ServerProcess],
) -> None:
    await assert_changes_cross_processes(*two_processes, within_s=DELIVERY_BOUND_S)
