"""Support use cases shared by every front end (the JSON support API and the support page): the rules
live here, in `service.usecases` or in the store, never in a controller or a template."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.domain.progress import RecoveryState
from service.domain.times import app_hour
from service.store.interface import ReadUnit, Storage, WriteUnit
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
    state: RecoveryState


async def review_user(db: Storage, user_id: str) -> ReviewOutcome | None:
    """Marks the user's archived conflicts reviewed (they stay kept); None when the service knows nothing
    of the user."""

    def review(unit: WriteUnit) -> ReviewOutcome | None:
        if unit.user_progress(user_id) is None:
            return None
        unit.lock_user(user_id)
        reviewed = unit.mark_archive_reviewed(user_id)
        return ReviewOutcome(reviewed, unit.user_state(user_id))

    return await db.write(review)


class Overview(msgspec.Struct):
    """Every figure of the support overview, read together at `as_of`."""

    summary: dict[str, Any]
    activity: list[HourlyActivity]  # uploads and records per hour since the window's start
    archive: dict[str, int]
    last_upload_at: str | None
    as_of: datetime


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

    def __init__(self, *, hours: int, min_age_s: float = 1.0, cost_factor: float = 10.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock  # the wall clock the hours are cut by (a test holds it still)
        self._hours = hours
        self._min_age_s = min_age_s
        self._cost_factor = cost_factor
        self._lock = asyncio.Lock()
        self._latest: Overview | None = None
        self._fresh_until = 0.0
        self._closed: tuple[str, list[HourlyActivity]] | None = None  # (current hour, closed hours)

    async def read(self, db: Storage) -> Overview:
        if self._latest is not None and time.monotonic() < self._fresh_until:
            return self._latest
        async with self._lock:  # one computation at a time; those who waited take its result
            if self._latest is not None and time.monotonic() < self._fresh_until:
                return self._latest
            started = time.monotonic()
            self._latest = await db.read(self._compute)
            cost = time.monotonic() - started
            self._fresh_until = time.monotonic() + max(self._min_age_s, self._cost_factor * cost)
            return self._latest

    def _compute(self, unit: ReadUnit) -> Overview:
        now = self._clock()
        current = app_hour(now)
        if self._closed is None or self._closed[0] != current:
            start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=self._hours - 1)
            closed = [a for a in unit.ledger_per_hour(f"{app_hour(start)}:00:00") if a.hour < current]
            settled = (now - now.replace(minute=0, second=0, microsecond=0)).total_seconds() >= self.SETTLE_S
            self._closed = (current, closed) if settled else None
        else:
            closed = self._closed[1]
        live = unit.ledger_per_hour(f"{current}:00:00")
        return Overview(
            summary=msgspec.structs.asdict(unit.summary_figures()), activity=[*closed, *live],
            archive=msgspec.structs.asdict(unit.archive_totals()), last_upload_at=unit.last_upload_at(), as_of=now,
        )
