"""The support use cases every front end calls (the JSON API and the support page)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.store.sqlite.engine import SqliteStorage as Database
from service.store.sqlite.units import SqliteReadUnit
from service.usecases.support import Difference, OverviewFigures, declaration_differences
from tests.conftest import add_users


def test_a_declaration_differs_where_a_count_differs_and_a_missing_type_counts_zero() -> None:
    assert declaration_differences({"logbook_entry": 3, "goal": 1}, {"logbook_entry": 3, "goal": 1}) == {}
    assert declaration_differences({"logbook_entry": 2}, {"logbook_entry": 1, "goal": 4}) == {
        "goal": Difference(expected=0, received=4),
        "logbook_entry": Difference(expected=2, received=1),
    }


async def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    real = getattr(SqliteReadUnit, name)

    def counted(*args: Any) -> Any:
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(SqliteReadUnit, name, counted)  # a method: args[0] is the unit
    return calls


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "app.db")
    try:
        yield database
    finally:
        await database.close()


async def test_overviews_asked_for_at_once_share_one_reading_of_the_figures(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = await _counting(monkeypatch, "summary_figures")
    figures = OverviewFigures(hours=24, min_age_s=60)
    seen = await asyncio.gather(*(figures.read(db) for _ in range(20)))
    assert len(counted) == 1
    assert all(s is seen[0] for s in seen)


async def test_the_figures_are_read_again_once_they_are_older_than_their_freshness(
    db: Database, tmp_path: Path
) -> None:
    figures = OverviewFigures(hours=24, min_age_s=1.0, cost_factor=0)  # fresh for 1 s, however loaded
    first = await figures.read(db)
    assert first.summary["users_by_state"]["not_started"] == 0
    add_users(str(tmp_path / "app.db"), ("user_Fresh0Fresh0Fresh0Fres", "fresh@example.com", "user"))
    assert (await figures.read(db)) is first  # still fresh
    await asyncio.sleep(1.1)
    later = await figures.read(db)
    assert later.summary["users_by_state"]["not_started"] == 1 and later.as_of > first.as_of


async def test_the_charts_closed_hours_are_read_once_and_the_current_hour_every_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = await _counting(monkeypatch, "ledger_per_hour")
    # Never fresh (every read reads), and a clock held at 20 minutes past an hour: a run that crosses an
    # hour's end is another hour's reading.
    still = datetime.now(UTC).replace(minute=20)
    figures = OverviewFigures(hours=24, min_age_s=0, cost_factor=0, clock=lambda: still)
    for _ in range(3):
        await figures.read(db)
    window, current, *later = [since for (since,) in counted]
    assert window < current and current.endswith(":00:00")
    assert later == [current, current]  # the closed hours were not read again
