"""The change feed over one SQLite file shared by several processes (`serve --workers N`, a replay beside
the server): this process's commits reach its listeners at once (as `LocalFeed`), and every
`POLL_INTERVAL_S` a `CommitWatch` tells which users' `seq` moved through the other connections.

The poll is `PRAGMA data_version` (no table read) while nothing is committed; after a commit it reads the
new high `seq`, and only while some listener wants notices (the process holds sockets) the users of the
rows committed since the last poll. With no socket held it just moves its mark: a socket that joins later
catches up by itself (its hub reads after joining). A notice repeats what a reader reads anyway, so one
about this process's own commit, heard again from the poll, sends nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.changefeed import Listener, Listeners
from service.store.interface import CommitWatch

log = logging.getLogger("service.changefeed")

POLL_INTERVAL_S = 0.25


class PollingFeed:
    """`ChangeFeed` over a `CommitWatch`: `await PollingFeed.open(watch)` (and `close()` it)."""

    def __init__(self, watch: CommitWatch, seen: int) -> None:
        self._watch = watch
        self._seen = seen  # every commit up to this seq has been announced (or needed no announcing)
        self._listeners = Listeners()
        self._wanted: list[Callable[[], bool]] = []
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, watch: CommitWatch) -> PollingFeed:
        feed = cls(watch, await watch.latest_seq() or 0)
        feed._poller = asyncio.get_running_loop().create_task(feed._poll_loop())
        return feed

    def publish(self, user_id: str, seq: int) -> None:
        self._listeners.notify(user_id, seq)

    def subscribe(self, listener: Listener, *, wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        unsubscribe = self._listeners.add(listener)
        wants = wanted if wanted is not None else (lambda: True)
        self._wanted.append(wants)

        def unsubscribe_both() -> None:
            unsubscribe()
            if wants in self._wanted:
                self._wanted.remove(wants)

        return unsubscribe_both

    async def poll(self) -> None:
        """Announce what other connections committed since the previous poll (the loop calls it)."""
        latest = await self._watch.latest_seq()
        if latest is None or latest <= self._seen:
            return
        # Checked after reading `latest`: a socket joining from now on reads everything up to it itself.
        if any(wanted() for wanted in self._wanted):
            for user_id, seq in await self._watch.users_changed(self._seen, latest):
                self._listeners.notify(user_id, seq)
        self._seen = latest

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                await self.poll()
            except Exception:  # a failed read: the next poll covers the same commits
                log.exception("change feed: polling the database for other processes' commits failed")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        await self._watch.close()
