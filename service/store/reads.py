"""Reads for the app's pull and status endpoints (run on the read-only connections)."""

from __future__ import annotations

import sqlite3

from service.store.database import GuardedConnection, SyncConnection


async def live_documents(conn: GuardedConnection, user_id: str) -> list[sqlite3.Row]:
    """The user's live documents in change order, as clients pull them."""
    return await conn.fetchall(
        "SELECT entity_type, data FROM sync_data WHERE user_id = ? AND deleted_at IS NULL ORDER BY seq",
        (user_id,),
    )


def current_seq(conn: SyncConnection) -> int:
    """The app's global change number: a sync token (run on a connection's thread, see `run`)."""
    row = conn.fetchone("SELECT current_value FROM sync_sequence WHERE id = 1")
    return int(row["current_value"]) if row is not None else 0


async def live_counts(conn: GuardedConnection, user_id: str) -> dict[str, int]:
    rows = await conn.fetchall(
        "SELECT entity_type, COUNT(*) AS n FROM sync_data WHERE user_id = ? AND deleted_at IS NULL"
        " GROUP BY entity_type",
        (user_id,),
    )
    return {r["entity_type"]: r["n"] for r in rows}


async def sync_metadata(conn: GuardedConnection, user_id: str) -> sqlite3.Row | None:
    return await conn.fetchone(
        "SELECT last_sync_token, last_sync_time FROM sync_metadata WHERE user_id = ?", (user_id,)
    )


async def device_count(conn: GuardedConnection, user_id: str) -> int:
    row = await conn.fetchone("SELECT COUNT(*) AS n FROM recovery_devices WHERE user_id = ?", (user_id,))
    return int(row["n"]) if row is not None else 0
