"""The change feed: every committed change of a user reaches that user's live sockets, whoever wrote it.

A writer calls `publish(user_id, seq)` after its transaction commits (`announce` does it for a storage's
upload results); the socket hub subscribes and, on a notice, sends each of that user's sockets the rows
changed after what it last sent them (the `SYNC_REQUEST` read path). A notice says only "this user has
changes up to at least `seq`": a reader always reads the rows themselves, so a late, repeated or merged
notice never sends a row twice nor skips one.

Three implementations: `LocalFeed` (one process, nothing shared), `service.changefeed.polling.PollingFeed`
(SQLite: this process's commits at once, other processes' on the same file by polling it) and
`service.changefeed.postgres.PostgresFeed` (LISTEN/NOTIFY on one channel: every replica's hub hears
every replica's commits, and a replay or CLI writing to the same server is heard too).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("service.changefeed")

# A notice: (user_id, seq). user_id None: notices may have been missed (a feed reconnected), every
# listener re-reads for every user it serves.
Listener = Callable[[str | None, int], None]


class ChangeFeed(Protocol):
    def publish(self, user_id: str, seq: int) -> None:
        """After a commit: the user has changes up to `seq`. Never blocks, never raises."""
        ...

    def subscribe(self, listener: Listener, *, wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        """Call `listener` (on the event loop) for every notice from now on; returns the unsubscribe.
        `wanted` says whether the listener needs notices now (a hub: while it holds sockets); a feed that
        must work to find notices (polling) may skip that work while no listener wants them."""
        ...

    async def close(self) -> None:
        """Send what is queued, then stop."""
        ...


class Listeners:
    """The subscribers of a feed; a listener that raises is logged and the others still hear."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, user_id: str | None, seq: int) -> None:
        for listener in list(self._listeners):
            try:
                listener(user_id, seq)
            except Exception:
                log.exception("change feed: a listener failed on a notice for %s", user_id)


class LocalFeed:
    """The feed of one process: a notice goes straight to this process's listeners."""

    def __init__(self) -> None:
        self._listeners = Listeners()

    def publish(self, user_id: str, seq: int) -> None:
        self._listeners.notify(user_id, seq)

    def subscribe(self, listener: Listener, *, wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        return self._listeners.add(listener)

    async def close(self) -> None:
        return None


async def open_feed(storage: object, *, listen: bool = True) -> ChangeFeed | None:
    """The feed for a storage: on PostgreSQL, NOTIFY/LISTEN on its server; on a SQLite file, this process's
    commits at once and other processes' by polling the file (`PollingFeed`); None when not listening on
    SQLite (a replay: the servers' polls hear what it commits)."""
    url = getattr(storage, "url", None)
    if getattr(storage, "kind", None) == "postgresql" and isinstance(url, str):
        from service.changefeed.postgres import PostgresFeed

        return await PostgresFeed.open(url, listen=listen)
    if not listen:
        return None
    watch_commits = getattr(storage, "watch_commits", None)
    watch = await watch_commits() if watch_commits is not None else None
    if watch is None:
        return LocalFeed()
    from service.changefeed.polling import PollingFeed

    return await PollingFeed.open(watch)


@contextlib.asynccontextmanager
async def publishing(storage: object) -> AsyncIterator[None]:
    """For a command that writes outside the server (replay, re-drive, renormalise): on PostgreSQL, what it
    commits is announced to every replica's sockets while this is open (and sent before it closes)."""
    feed = await open_feed(storage, listen=False)
    if feed is None:
        yield
        return
    attach(storage, feed)
    try:
        yield
    finally:
        detach(storage)
        await feed.close()


# The feed each open storage publishes to (set where it is opened); weak, so a closed storage goes.
_FEEDS: weakref.WeakKeyDictionary[Any, ChangeFeed] = weakref.WeakKeyDictionary()


def attach(storage: object, feed: ChangeFeed) -> None:
    _FEEDS[storage] = feed


def detach(storage: object) -> None:
    _FEEDS.pop(storage, None)


def feed_of(storage: object) -> ChangeFeed | None:
    return _FEEDS.get(storage)


def announce(storage: object, changes: Iterable[tuple[str, int]]) -> None:
    """Publish `(user_id, seq)` notices of a committed transaction to the storage's feed (if it has one),
    one per user, with the highest seq."""
    feed = _FEEDS.get(storage)
    if feed is None:
        return
    highest: dict[str, int] = {}
    for user_id, seq in changes:
        highest[user_id] = max(seq, highest.get(user_id, seq))
    for user_id, seq in highest.items():
        feed.publish(user_id, seq)
