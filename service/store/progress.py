"""Progress reads and writes: per-user state, devices, the ledger, quarantine, support listings."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.store.database import GuardedConnection, SyncConnection
from service.store.rows import (
    ArchivedConflict,
    Declaration,
    DeviceProgress,
    HourlyActivity,
    LedgerEntry,
    QuarantinedRecord,
    UserListItem,
    UserProgress,
)
from service.store.uploads import utc_now_text

NOT_STARTED = "not_started"
IN_PROGRESS = "in_progress"
COMPLETE = "complete"
NEEDS_REVIEW = "needs_review"
STATES = (NOT_STARTED, IN_PROGRESS, COMPLETE, NEEDS_REVIEW)

# One user's state, from the service's tables (`u.id` is the user). Review first: waiting quarantined
# records or unreviewed archived conflicts need a person whatever the devices say.
STATE_SQL = """
CASE
  WHEN EXISTS (SELECT 1 FROM recovery_quarantine q WHERE q.owner = u.id AND q.resolved_at IS NULL)
    OR EXISTS (SELECT 1 FROM recovery_archive a WHERE a.user_id = u.id AND a.reviewed_at IS NULL)
    THEN 'needs_review'
  WHEN NOT EXISTS (SELECT 1 FROM recovery_users r WHERE r.user_id = u.id) THEN 'not_started'
  WHEN EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id)
   AND NOT EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id AND d.complete = 0)
    THEN 'complete'
  ELSE 'in_progress'
END
"""


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """The value a cursor carries; ValueError when it was not made by `encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor this service issued") from exc


async def user_state(conn: GuardedConnection, user_id: str) -> str:
    row = await conn.fetchone(f"SELECT {STATE_SQL} AS state FROM (SELECT ? AS id) u", (user_id,))  # noqa: S608
    return str(row["state"]) if row is not None else NOT_STARTED


async def device_received(conn: GuardedConnection, user_id: str, device_id: str) -> dict[str, int]:
    rows = await conn.fetchall(
        "SELECT entity_type, received FROM recovery_device_counts WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    )
    return {r["entity_type"]: r["received"] for r in rows}


def state_of(*, waiting: int, uploaded: bool, devices: list[DeviceProgress]) -> str:
    """STATE_SQL for one user whose figures are already read."""
    if waiting:
        return NEEDS_REVIEW
    if not uploaded:
        return NOT_STARTED
    if devices and all(d.declared_complete for d in devices):
        return COMPLETE
    return IN_PROGRESS


def user_progress(conn: SyncConnection, user_id: str) -> UserProgress | None:
    """Everything support needs about one user's recovery (four queries, whatever the number of devices);
    None when the service knows nothing of them."""
    head = conn.fetchone(
        """SELECT (SELECT email FROM users WHERE id = :u) AS email,
                  EXISTS (SELECT 1 FROM users WHERE id = :u) AS user_exists,
                  (SELECT first_upload_at FROM recovery_users WHERE user_id = :u) AS first_upload_at,
                  (SELECT last_upload_at FROM recovery_users WHERE user_id = :u) AS last_upload_at,
                  (SELECT COUNT(*) FROM recovery_quarantine WHERE owner = :u AND resolved_at IS NULL) AS q,
                  (SELECT COUNT(*) FROM recovery_archive WHERE user_id = :u AND reviewed_at IS NULL) AS a""",
        {"u": user_id},
    )
    assert head is not None  # a SELECT without FROM always has its one row
    quarantined, archived = int(head["q"]), int(head["a"])
    if not head["user_exists"] and head["first_upload_at"] is None and quarantined == 0:
        return None
    counts = {outcome: 0 for outcome in _OUTCOMES}
    by_type: dict[str, dict[str, int]] = {}
    for r in conn.fetchall(
        "SELECT entity_type, outcome, n FROM recovery_progress WHERE user_id = ?", (user_id,)
    ):
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + r["n"]
        by_type.setdefault(r["entity_type"], {})[r["outcome"]] = r["n"]
    received: dict[str, dict[str, int]] = {}
    for r in conn.fetchall(
        "SELECT device_id, entity_type, received FROM recovery_device_counts WHERE user_id = ?", (user_id,)
    ):
        received.setdefault(r["device_id"], {})[r["entity_type"]] = r["received"]
    devices = [
        DeviceProgress(
            device_id=d["device_id"],
            first_upload_at=d["first_upload_at"],
            last_upload_at=d["last_upload_at"],
            declared_complete=bool(d["complete"]),
            declared_at=d["declared_at"],
            expected=json.loads(d["expected"]) if d["expected"] else None,
            received=received.get(d["device_id"], {}),
        )
        for d in conn.fetchall(
            "SELECT device_id, first_upload_at, last_upload_at, declared_at, expected, complete"
            " FROM recovery_devices WHERE user_id = ? ORDER BY first_upload_at, device_id",
            (user_id,),
        )
    ]
    return UserProgress(
        user_id=user_id,
        email=head["email"],
        exists=bool(head["user_exists"]),
        state=state_of(
            waiting=quarantined + archived, uploaded=head["first_upload_at"] is not None, devices=devices
        ),
        first_upload_at=head["first_upload_at"],
        last_upload_at=head["last_upload_at"],
        counts=counts,
        counts_by_entity_type=by_type,
        quarantined_waiting=quarantined,
        archived_waiting=archived,
        devices=devices,
    )


def _ledger_entry(r: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        upload_id=r["upload_id"], user_id=r["user_id"], device_id=r["device_id"], source=r["source"],
        file_name=r["file_name"], payload_sha256=r["payload_sha256"], received=r["received"],
        counts=json.loads(r["counts"]), created_at=r["created_at"],
    )


def latest_ledger(conn: SyncConnection, user_id: str, limit: int = 20) -> list[LedgerEntry]:
    rows = conn.fetchall(
        "SELECT * FROM recovery_ledger WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (user_id, limit),
    )
    return [_ledger_entry(r) for r in rows]


async def list_users(
    conn: GuardedConnection, *, email: str | None, state: str | None, after: str | None, limit: int
) -> list[UserListItem]:
    """Users by id, after the cursor's id; `email` matches any part of the address, case-insensitively."""
    rows = await conn.fetchall(
        f"""
        SELECT * FROM (
          SELECT u.id, u.email, u.role, {STATE_SQL} AS state,
                 (SELECT last_upload_at FROM recovery_users r WHERE r.user_id = u.id) AS last_upload_at
          FROM users u
          WHERE (? IS NULL OR u.id > ?) AND (? IS NULL OR instr(LOWER(u.email), LOWER(?)) > 0)
        )
        WHERE (? IS NULL OR state = ?)
        ORDER BY id
        LIMIT ?
        """,  # noqa: S608 - STATE_SQL is a constant
        (after, after, email, email, state, state, limit),
    )
    return [UserListItem(r["id"], r["email"], r["role"], r["state"], r["last_upload_at"]) for r in rows]


_OUTCOMES = ("inserted", "updated", "duplicate", "kept_existing", "deleted", "suppressed", "content_duplicate",
             "quarantined")


# STATE_SQL counted over whole sets instead of per user: the overview asks every few seconds, and per user
# it costs five index lookups for each of 100k users (half a second); this reads each table once.
# tests/store/test_progress.py checks both give the same counts.
_STATE_COUNTS_SQL = """
WITH review(id) AS (
  SELECT owner FROM recovery_quarantine WHERE resolved_at IS NULL
  UNION SELECT user_id FROM recovery_archive WHERE reviewed_at IS NULL
)
SELECT (SELECT COUNT(*) FROM users) AS total,
       (SELECT COUNT(*) FROM review JOIN users u ON u.id = review.id) AS needs_review,
       (SELECT COUNT(*) FROM recovery_users r JOIN users u ON u.id = r.user_id
         WHERE r.user_id NOT IN (SELECT id FROM review)) AS started,
       (SELECT COUNT(*) FROM (SELECT user_id FROM recovery_devices GROUP BY user_id HAVING MIN(complete) = 1) d
         JOIN recovery_users r ON r.user_id = d.user_id JOIN users u ON u.id = d.user_id
         WHERE d.user_id NOT IN (SELECT id FROM review)) AS complete
"""


def users_by_state_counts(conn: SyncConnection) -> dict[str, int]:
    """How many users are in each state (STATE_SQL's rule, counted by sets)."""
    row = conn.fetchone(_STATE_COUNTS_SQL)
    assert row is not None
    return {
        NOT_STARTED: row["total"] - row["needs_review"] - row["started"],
        IN_PROGRESS: row["started"] - row["complete"],
        COMPLETE: row["complete"],
        NEEDS_REVIEW: row["needs_review"],
    }


async def summary(conn: GuardedConnection) -> dict[str, Any]:
    return await conn.run(summary_figures)


def summary_figures(conn: SyncConnection) -> dict[str, Any]:
    """Users per state, records per outcome, recent uploads, waiting quarantine: one hop to a reader."""
    users_by_state = users_by_state_counts(conn)
    records = {outcome: 0 for outcome in _OUTCOMES}
    for r in conn.fetchall("SELECT outcome, SUM(n) AS n FROM recovery_progress GROUP BY outcome"):
        records[r["outcome"]] = r["n"]
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    recent = conn.fetchone("SELECT COUNT(*) AS n FROM recovery_ledger WHERE created_at >= ?", (hour_ago,))
    waiting = conn.fetchone(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT owner) AS owners FROM recovery_quarantine WHERE resolved_at IS NULL"
    )
    return {
        "users_by_state": users_by_state,
        "records_by_outcome": records,
        "uploads_last_hour": int(recent["n"]) if recent else 0,
        "quarantined_waiting": int(waiting["n"]) if waiting else 0,
        "quarantine_owners": int(waiting["owners"]) if waiting else 0,
    }


def _quarantined(r: sqlite3.Row) -> QuarantinedRecord:
    try:
        raw: Any = msgspec.json.decode(r["raw"])
    except msgspec.DecodeError:
        raw = r["raw"]
    return QuarantinedRecord(
        id=r["id"], entity_type=r["entity_type"], entity_id=r["entity_id"], reason=r["reason"], field=r["field"],
        detail=r["detail"], raw=raw, upload_id=r["upload_id"], device_id=r["device_id"],
        quarantined_at=r["quarantined_at"], resolved_at=r["resolved_at"],
    )


async def quarantine_page(
    conn: GuardedConnection, owner: str, *, after: int | None, limit: int, include_resolved: bool
) -> list[QuarantinedRecord]:
    rows = await conn.fetchall(
        "SELECT * FROM recovery_quarantine WHERE owner = ? AND id > ? AND (? OR resolved_at IS NULL)"
        " ORDER BY id LIMIT ?",
        (owner, after or 0, include_resolved, limit),
    )
    return [_quarantined(r) for r in rows]


async def declare_device(
    conn: GuardedConnection, user_id: str, device_id: str, expected: dict[str, int], complete: bool
) -> None:
    """Record the declaration; only one that matches (`complete`) changes the device: a mismatch never
    switches a complete device back to in progress, nor stores counts that are not the device's."""
    now = utc_now_text()
    expected_text = json.dumps(expected, sort_keys=True)
    await conn.execute(
        "INSERT INTO recovery_device_declarations (user_id, device_id, declared_at, expected, matched)"
        " VALUES (?, ?, ?, ?, ?)",
        (user_id, device_id, now, expected_text, int(complete)),
    )
    if not complete:
        return
    await conn.execute(
        """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at, declared_at, expected,
             complete) VALUES (?, ?, ?, ?, ?, ?, 1)
           ON CONFLICT (user_id, device_id) DO UPDATE SET declared_at = excluded.declared_at,
             expected = excluded.expected, complete = 1""",
        (user_id, device_id, now, now, now, expected_text),
    )


async def mark_archive_reviewed(conn: GuardedConnection, user_id: str) -> int:
    row = await conn.fetchone(
        "SELECT COUNT(*) AS n FROM recovery_archive WHERE user_id = ? AND reviewed_at IS NULL", (user_id,)
    )
    await conn.execute(
        "UPDATE recovery_archive SET reviewed_at = ? WHERE user_id = ? AND reviewed_at IS NULL",
        (utc_now_text(), user_id),
    )
    return int(row["n"]) if row else 0


def ledger_per_hour(conn: SyncConnection, since: str) -> list[HourlyActivity]:
    """Uploads and records received per hour since `since` (ledger time text), oldest first."""
    rows = conn.fetchall(
        "SELECT substr(created_at, 1, 13) AS hour, COUNT(*) AS uploads, SUM(received) AS records"
        " FROM recovery_ledger WHERE created_at >= ? GROUP BY hour ORDER BY hour",
        (since,),
    )
    return [HourlyActivity(r["hour"], r["uploads"], int(r["records"] or 0)) for r in rows]


def waiting_conflicts(conn: SyncConnection, user_id: str, limit: int, *, after: int = 0) -> list[ArchivedConflict]:
    """The user's conflicts waiting for review, in archive order, from after the archive id `after`."""
    rows = conn.fetchall(
        "SELECT a.id, a.entity_type, a.entity_id, a.reason, a.archived_at, a.data AS archived_data,"
        " s.data AS kept_data, s.deleted_at AS kept_deleted_at"
        " FROM recovery_archive a LEFT JOIN sync_data s"
        "   ON s.user_id = a.user_id AND s.entity_type = a.entity_type AND s.entity_id = a.entity_id"
        " WHERE a.user_id = ? AND a.reviewed_at IS NULL AND a.id > ? ORDER BY a.id LIMIT ?",
        (user_id, after, limit),
    )
    return [
        ArchivedConflict(r["id"], r["entity_type"], r["entity_id"], r["reason"], r["archived_at"],
                         r["archived_data"], r["kept_data"], r["kept_deleted_at"])
        for r in rows
    ]


def archive_totals(conn: SyncConnection) -> dict[str, int]:
    """Versions archived (lost a merge) across all users, and how many of them wait for review."""
    row = conn.fetchone(
        "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE reviewed_at IS NULL) AS waiting FROM recovery_archive"
    )
    return {"archived": int(row["n"]) if row else 0, "waiting": int(row["waiting"] or 0) if row else 0}


def last_upload_at(conn: SyncConnection) -> str | None:
    row = conn.fetchone("SELECT MAX(created_at) AS t FROM recovery_ledger")
    return row["t"] if row else None


def latest_declarations(conn: SyncConnection, user_id: str) -> dict[str, Declaration]:
    """Each device's latest declaration of completeness, matched or not."""
    rows = conn.fetchall(
        "SELECT device_id, declared_at, expected, matched FROM recovery_device_declarations d"
        " WHERE user_id = ? AND id = (SELECT MAX(id) FROM recovery_device_declarations l"
        "   WHERE l.user_id = d.user_id AND l.device_id = d.device_id)",
        (user_id,),
    )
    return {r["device_id"]: Declaration(r["declared_at"], json.loads(r["expected"]), bool(r["matched"]))
            for r in rows}
