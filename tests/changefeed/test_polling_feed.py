"""The change feed over one SQLite file shared by several processes (`PollingFeed`): a change committed
through one process reaches a socket held by another within a poll or two, without the socket asking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.changefeed import open_feed
from service.changefeed.polling import POLL_INTERVAL_S, PollingFeed
from service.store.sqlite import SqliteStorage
from service.store.sqlite.connection import SyncConnection
from service.store.sqlite.units import SqliteWriteUnit
from tests.conftest import ADA, BEN, add_users, auth, token_for
from tests.e2e.app_client import AppClient
from tests.reliability.liveserver import ServerProcess

# The bound a client sees: a couple of polls plus the catch-up read, on a loaded 2-CPU machine.
DELIVERY_BOUND_S = 2.0


def entry(entry_id: str) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": 1748799900000, "duration": 30, "type": "practice",
            "instrument": "piano", "notes": entry_id, "updatedAt": "2025-06-01T10:00:00.000Z"}


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
    first, second = two_processes
    on_second = AppClient(second.base_url, token_for(ADA), ADA[0], "dev_a1B2c3D4e5F6g7H8")
    on_first = AppClient(first.base_url, token_for(ADA), ADA[0], "dev_b1B2c3D4e5F6g7H8")
    ben = AppClient(second.base_url, token_for(BEN), BEN[0], "dev_c1B2c3D4e5F6g7H8")
    try:
        async with on_second.socket() as socket, on_first.socket() as sender, ben.socket() as bens:
            for s in (socket, sender, bens):
                assert (await s.receive())["type"] == "WELCOME"
            async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
                pushed = await http.post("/api/sync/push", json={"changes": {"entries": [entry("e1"), entry("e2")]}},
                                         headers=auth(ADA, **{"X-Device-ID": "dev_d1B2c3D4e5F6g7H8"}))
            answered = time.monotonic()
            assert pushed.status_code == 200, pushed.text
            bulk = await asyncio.wait_for(socket.receive(), DELIVERY_BOUND_S)
            assert time.monotonic() - answered < DELIVERY_BOUND_S
            assert bulk["type"] == "BULK_SYNC" and [e["id"] for e in bulk["entries"]] == ["e1", "e2"]
            assert bulk["lastSeq"] == int(pushed.json()["syncToken"])

            # A socket change through the first process: the second's socket hears it once.
            await sender.send({"type": "ENTRY_DELETED", "entryId": "e1"})
            assert (await sender.until("SYNC_RESPONSE"))[-1]["message"] == "Mutation applied"
            deleted = await asyncio.wait_for(socket.receive(), DELIVERY_BOUND_S)
            assert (deleted["type"], deleted["entryId"]) == ("ENTRY_DELETED", "e1")
            assert await socket.quiet(0.8) == [] and await bens.quiet(0.1) == []
    finally:
        for client in (on_second, on_first, ben):
            await client.close()
