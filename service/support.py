"""Support use cases shared by every front end (the JSON support API and the support page): the rules
live here, in `service.redrive` or in the store, never in a controller or a template."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.store import progress
from service.store.database import Database, SyncConnection
from service.store.rows import HourlyActivity


class Difference(msgspec.Struct):
    expected: int
    received: int


def declaration_differences(expected: Mapping[str, int], received: Mapping[str, int]) -> dict[str, Difference]:
    """Per entity type, where a device's declared counts differ from the distinct records it sent (a type
    missing on either side counts 0). Empty: the declaration matches and the device is complete."""
    return {
        t: Difference(expected.get(t, 0), received.get(t, 0))
        for t in sorted(set(expected) | set(received))
        if expected.get(t, 0) != received.get(t, 0)
    }


class ReviewOutcome(msgspec.Struct):
    reviewed: int
    state: str


async def review_user(db: Database, user_id: str) -> ReviewOutcome | None:
    """Marks the user's archived conflicts reviewed (they stay kept); None when the service knows nothing
    of the user."""
    async with db.write() as conn:
        if await conn.run(lambda sync: progress.user_progress(sync, user_id)) is None:
            return None
        reviewed = await progress.mark_archive_reviewed(conn, user_id)
        state = await progress.user_state(conn, user_id)
    return ReviewOutcome(reviewed, state)


class Overview(msgspec.Struct):
    """Every figure of the support overview, read together at `as_of`."""

    summary: dict[str, Any]
    activity: list[HourlyActivity]  # uploads and records per hour since the window's start
    archive: dict[str, int]
    last_upload_at: str | None
    as_of: datetime


def _hour_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H")  # as `ledger_per_hour` names hours


class OverviewFigures:
    """The overview's figures, shared by everyone watching it.

    Its counts scan the user base (380 ms at 100k users), and every open overview polls them. So one
    request at a time computes them, and the others take that result while it is fresher than ten times
    what it cost (at least `min_age_s`): however many people watch, the readers spend at most about a
    tenth of their time on it, and the figures are never older than their `as_of` says.
    The chart's closed hours cannot change once a minute has passed since they closed (a ledger row is
    timed when its upload commits), so they are read once per hour; only the current hour is re-read.
    """

    SETTLE_S = 60.0  # after an hour closes, uploads stamped within it may still be committing

    def __init__(self, *, hours: int, min_age_s: float = 1.0) -> None:
        self._hours = hours
        self._min_age_s = min_age_s
        self._lock = asyncio.Lock()
        self._latest: Overview | None = None
        self._fresh_until = 0.0
        self._closed: tuple[str, list[HourlyActivity]] | None = None  # (current hour, closed hours)

    async def read(self, db: Database) -> Overview:
        if self._latest is not None and time.monotonic() < self._fresh_until:
            return self._latest
        async with self._lock:  # one computation at a time; those who waited take its result
            if self._latest is not None and time.monotonic() < self._fresh_until:
                return self._latest
            started = time.monotonic()
            self._latest = await db.read_run(self._compute)
            cost = time.monotonic() - started
            self._fresh_until = time.monotonic() + max(self._min_age_s, 10 * cost)
            return self._latest

    def _compute(self, conn: SyncConnection) -> Overview:
        now = datetime.now(UTC)
        current = _hour_text(now)
        if self._closed is None or self._closed[0] != current:
            start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=self._hours - 1)
            closed = [a for a in progress.ledger_per_hour(conn, f"{_hour_text(start)}:00:00") if a.hour < current]
            settled = (now - now.replace(minute=0, second=0, microsecond=0)).total_seconds() >= self.SETTLE_S
            self._closed = (current, closed) if settled else None
        else:
            closed = self._closed[1]
        live = progress.ledger_per_hour(conn, f"{current}:00:00")
        return Overview(
            summary=progress.summary_figures(conn), activity=[*closed, *live],
            archive=progress.archive_totals(conn), last_upload_at=progress.last_upload_at(conn), as_of=now,
        )
