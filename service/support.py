"""Support use cases shared by every front end (the JSON support API and the support page): the rules
live here, in `service.redrive` or in the store, never in a controller or a template."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from service.store import progress
from service.store.database import Database


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
