"""Support reads over the whole user base."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path

from service.domain.progress import STATES
from service.store.sqlite.engine import SqliteStorage
from tests.web.page_speed import seed, user_id


async def test_users_by_state_counted_by_sets_equals_the_state_rule_per_user(tmp_path: Path) -> None:
    """The overview's set-based counts give exactly what the state rule (`state_of`) gives user by user,
    including records kept for subjects that are no user, progress of a user no longer in `users`, and
    devices without uploads."""
    db_path = str(tmp_path / "app.db")
    await (await SqliteStorage.open(db_path)).close()
    seed(db_path, 3000, rng=random.Random(7))
    rng = random.Random(8)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO recovery_quarantine (owner, entity_type, raw, reason, upload_id, quarantined_at)"
                     " VALUES ('user_nobody', 'goal', '{}', 'unknown_user', 'upl_x', '2026-01-01 00:00:00')")
        conn.execute("INSERT INTO recovery_users VALUES ('user_gone', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        for i in rng.sample(range(3000), 200):  # devices, complete or not, whatever the user's other rows
            conn.execute("INSERT OR IGNORE INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at,"
                         " complete) VALUES (?, 'dev_extra', '2026-01-01', '2026-01-01', ?)",
                         (user_id(i), rng.choice((0, 1))))
        for i in rng.sample(range(3000), 100):
            conn.execute("UPDATE recovery_quarantine SET resolved_at = '2026-01-02' WHERE owner = ?", (user_id(i),))
            conn.execute("UPDATE recovery_archive SET reviewed_at = '2026-01-02' WHERE user_id = ?", (user_id(i),))
    db = await SqliteStorage.open(db_path)
    try:
        listed, by_sets = await db.read(lambda unit: (
            unit.list_users(email=None, state=None, after=None, limit=10_000), unit.users_by_state_counts()
        ))
        per_user = {s: 0 for s in STATES} | Counter(item.state for item in listed)
    finally:
        await db.close()
    assert by_sets == per_user
    assert all(per_user.values())  # every state is represented
