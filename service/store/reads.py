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


async def user_profile(conn: GuardedConnection, user_id: str) -> sqlite3.Row | None:
    """The `users` columns the app's `GET /api/user/me` answers with."""
    return await conn.fetchone(
        "SELECT id, email, display_name, auth_provider, role, created_at FROM users WHERE id = ?", (user_id,)
    )


async def changes_after(
    conn: GuardedConnection, user_id: str, entity_type: str, after_seq: int, limit: int
) -> list[sqlite3.Row]:
    """A user's rows of one type changed after `after_seq`, tombstones included, in change order: what a
    live-sync client asks for with `SYNC_REQUEST {lastSeq}`. Rows without a `seq` are never sent."""
    return await conn.fetchall(
        "SELECT entity_id, data, seq, deleted_at FROM sync_data"
        " WHERE user_id = ? AND entity_type = ? AND seq > ? ORDER BY seq LIMIT ?",
        (user_id, entity_type, after_seq, limit),
    )


async def rows_of(conn: GuardedConnection, user_id: str, entity_type: str, entity_ids: list[str]) -> list[sqlite3.Row]:
    """The current rows (live or tombstones) of some of a user's keys of one type."""
    rows: list[sqlite3.Row] = []
    for start in range(0, len(entity_ids), 500):  # under SQLite's bound-parameter limit
        chunk = entity_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows.extend(await conn.fetchall(
            f"SELECT entity_id, data, seq, deleted_at, created_at, updated_at FROM sync_data"  # noqa: S608
            f" WHERE user_id = ? AND entity_type = ? AND entity_id IN ({marks})",
            (user_id, entity_type, *chunk),
        ))
    return rows


async def live_documents_of_type(conn: GuardedConnection, user_id: str, entity_type: str) -> list[sqlite3.Row]:
    """A user's live documents of one type, newest change first."""
    return await conn.fetchall(
        "SELECT entity_id, data, created_at, updated_at FROM sync_data"
        " WHERE user_id = ? AND entity_type = ? AND deleted_at IS NULL ORDER BY seq DESC",
        (user_id, entity_type),
    )
