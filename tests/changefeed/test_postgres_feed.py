"""The PostgreSQL change feed: a notice published by one process is heard by every process listening on
the same server (itself included), also when the publisher only publishes (a replay); a listener whose
connection is lost comes back and says notices may have been missed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from service.changefeed import announce, feed_of, publishing
from service.changefeed.postgres import CHANNEL, PostgresFeed, parse, payload
from service.store.postgres import PostgresStorage
from service.store.sqlite import SqliteStorage
from tests.pgfixtures import PgDatabase

WAIT_S = 10


class Heard:
    def __init__(self) -> None:
        self.notices: list[tuple[str | None, int]] = []
        self._changed = asyncio.Event()

    def __call__(self, user_id: str | None, seq: int) -> None:
        self.notices.append((user_id, seq))
        self._changed.set()

    async def until(self, count: int) -> list[tuple[str | None, int]]:
        async with asyncio.timeout(WAIT_S):
            while len(self.notices) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.notices


def test_a_payload_is_seq_then_user() -> None:
    assert parse(payload("user_Q1w2E3r4T5y6U7i8O9p0a", 42)) == ("user_Q1w2E3r4T5y6U7i8O9p0a", 42)
    assert parse("x user") is None and parse("42") is None and parse("42 ") is None


async def test_a_notice_from_one_replica_is_heard_by_every_replica(pg_database: PgDatabase) -> None:
    first, second = await asyncio.gather(PostgresFeed.open(pg_database.url), PostgresFeed.open(pg_database.url))
    replay = await PostgresFeed.open(pg_database.url, listen=False)
    heard_first, heard_second = Heard(), Heard()
    first.subscribe(heard_first)
    second.subscribe(heard_second)
    try:
        first.publish("user_a", 3)
        assert await heard_second.until(1) == [("user_a", 3)]
        assert await heard_first.until(1) == [("user_a", 3)]
        # Notices queued together go together, one per user, the highest seq.
        second.publish("user_b", 5)
        second.publish("user_b", 7)
        second.publish("user_c", 6)
        replay.publish("user_d", 9)
        assert sorted((await heard_first.until(4))[1:], key=str) == [("user_b", 7), ("user_c", 6), ("user_d", 9)]
    finally:
        await asyncio.gather(first.close(), second.close(), replay.close())


async def test_close_sends_what_is_queued(pg_database: PgDatabase) -> None:
    listener = await PostgresFeed.open(pg_database.url)
    heard = Heard()
    listener.subscribe(heard)
    publisher = await PostgresFeed.open(pg_database.url, listen=False)
    try:
        for seq in range(1, 51):
            publisher.publish(f"user_{seq % 5}", seq)
        await publisher.close()
        assert sorted(await heard.until(5)) == [("user_0", 50)] + [(f"user_{n}", 45 + n) for n in range(1, 5)]
    finally:
        await listener.close()


async def test_a_listener_that_lost_its_connection_comes_back_and_says_so(pg_database: PgDatabase) -> None:
    feed = await PostgresFeed.open(pg_database.url)
    heard = Heard()
    feed.subscribe(heard)
    try:
        with psycopg.connect(pg_database.superuser_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s", (f"LISTEN {CHANNEL}",)
            ).fetchall()
        assert ended == [(True,)]
        assert await heard.until(1) == [(None, 0)]  # back, and every listener re-reads
        feed.publish("user_a", 11)
        assert (await heard.until(2))[1] == ("user_a", 11)
    finally:
        await feed.close()


async def test_a_command_writing_outside_the_server_is_heard_by_the_replicas(pg_database: PgDatabase) -> None:
    """replay, redrive and renormalise announce through `publishing`: on PostgreSQL, to every listener."""
    storage = await PostgresStorage.open(pg_database.url)
    listener = await PostgresFeed.open(pg_database.url)
    heard = Heard()
    listener.subscribe(heard)
    try:
        async with publishing(storage):
            assert feed_of(storage) is not None
            announce(storage, [("user_a", 4), ("user_a", 8)])
        assert feed_of(storage) is None
        assert await heard.until(1) == [("user_a", 8)]
    finally:
        await listener.close()
        await storage.close()


async def test_on_sqlite_a_command_has_no_feed(tmp_path: Path) -> None:
    """No socket of another process could hear an SQLite command's notice: nothing is opened."""
    storage = await SqliteStorage.open(tmp_path / "app.db")
    try:
        async with publishing(storage):
            assert feed_of(storage) is None
    finally:
        await storage.close()
