"""The change feed over PostgreSQL: NOTIFY on one channel, LISTEN in every replica.

A notice's payload is `"<seq> <user_id>"`. `publish` never waits for the server: notices are queued,
merged per user (the highest seq) and sent by one task on a connection of their own, a few per
statement. A listening connection that is lost is opened again (with a growing pause); notices sent
meanwhile are lost with it, so once it is back the listeners hear `None` ("re-read everything"). A notice
is sent after its transaction commits, so a process killed between the two leaves that change to the
next notice of the user, or the client's next SYNC_REQUEST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from service.changefeed import Listener, Listeners

log = logging.getLogger("service.changefeed")

CHANNEL = "resync_changes"
CONNECT_TIMEOUT_S = 10
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def payload(user_id: str, seq: int) -> str:
    return f"{seq} {user_id}"


def parse(text: str) -> tuple[str, int] | None:
    seq, _, user_id = text.partition(" ")
    if not seq.isdigit() or not user_id:
        return None
    return user_id, int(seq)


class PostgresFeed:
    """`ChangeFeed` on a PostgreSQL server: `await PostgresFeed.open(url)` (and `close()` it)."""

    def __init__(self, url: str, *, listen: bool) -> None:
        self._url = url
        self._listen = listen
        self._listeners = Listeners()
        self._queue: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while a LISTEN connection is up

    @classmethod
    async def open(cls, url: str, *, listen: bool = True) -> PostgresFeed:
        """A feed that publishes (and, unless `listen` is False, as for a replay, hears) notices. Waits until
        it listens, so nothing committed after `open` returns goes unheard."""
        feed = cls(url, listen=listen)
        feed._sender = asyncio.get_running_loop().create_task(feed._send_loop())
        if listen:
            feed._receiver = asyncio.get_running_loop().create_task(feed._receive_loop())
            await asyncio.wait_for(feed.listening.wait(), CONNECT_TIMEOUT_S + 1)
        return feed

    def publish(self, user_id: str, seq: int) -> None:
        if self._closing:
            return
        self._queue[user_id] = max(seq, self._queue.get(user_id, seq))
        self._wake.set()

    def subscribe(self, listener: Listener, *, wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        return self._listeners.add(listener)

    async def close(self) -> None:
        """Send the queued notices (for as long as the server answers), then stop listening."""
        self._closing = True
        self._wake.set()
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sender, CONNECT_TIMEOUT_S)
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(BaseException):
                await self._receiver

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    async def _send_loop(self) -> None:
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        failures = 0
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._queue = self._queue, {}
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = await self._connect()
                    async with conn.cursor() as cursor:
                        await cursor.execute(
                            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                            (CHANNEL, [payload(user, seq) for user, seq in batch.items()]),
                        )
                    failures = 0
                except (psycopg.Error, OSError) as error:
                    failures += 1
                    for user, seq in batch.items():  # kept, merged with what came meanwhile
                        self._queue[user] = max(seq, self._queue.get(user, seq))
                    if self._closing and failures > 2:
                        log.warning("change feed: %d notices not sent at close: %s", len(self._queue), error)
                        return
                    log.warning("change feed: notices not sent, retrying: %s", error)
                    conn = None
                    await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S)) - 1])
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _receive_loop(self) -> None:
        failures = 0
        reconnected = False
        while True:
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    failures = 0
                    if reconnected:
                        self._listeners.notify(None, 0)  # what was sent while it was down is not known
                    async for notice in conn.notifies():
                        parsed = parse(notice.payload)
                        if parsed is not None:
                            self._listeners.notify(*parsed)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as error:
                log.warning("change feed: listening connection lost, reconnecting: %s", error)
            self.listening.clear()
            reconnected = True
            failures += 1
            await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S)) - 1])
