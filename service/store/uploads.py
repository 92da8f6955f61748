"""The batch statements one upload needs: load the state of its keys, apply its merge plan, account for it.

The write-path functions take the writer's `SyncConnection` inside an open write transaction (they run
on the writer's thread, see `GuardedConnection.run`) and issue a fixed number of statements whatever the
number of records (keys travel as one JSON parameter, rows through `executemany`).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from service import jsontext
from service.domain.merge import EntityKey, MergePlan, StoredEntity, SyncWrite
from service.domain.outcomes import Receipt
from service.domain.owners import match_email_among
from service.domain.records import LOGBOOK_ENTRY, LogbookRow
from service.domain.times import ms_to_iso_z, to_epoch_ms
from service.store.database import GuardedConnection, SyncConnection
from service.store.rows import EmailMatch, QuarantineRow, RawRecordRow, StoredResponse, UserRecord

_json = msgspec.json.Encoder()


def utc_now_text() -> str:
    """The app's TIMESTAMP form: `YYYY-MM-DD HH:MM:SS` in UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _keys_param(keys: Iterable[EntityKey]) -> str:
    return _json.encode([list(k) for k in keys]).decode()


def _document_updated_ms(data: str, row_updated_at: str | None) -> int | None:
    """A row the app stored before the service existed: its client time, else the server's."""
    try:
        document = jsontext.decode(data)
    except msgspec.DecodeError:
        document = None
    if isinstance(document, dict):
        for field in ("updatedAt", "updated_at", "createdAt", "created_at"):
            value = document.get(field)
            if value:
                ms = to_epoch_ms(value)
                if ms is not None:
                    return ms
    return to_epoch_ms(row_updated_at) if row_updated_at else None


def load_state(conn: SyncConnection, user_id: str, keys: set[EntityKey]) -> dict[EntityKey, StoredEntity]:
    """The stored state of every key (two queries: sync_data rows and the service's merge state).

    CROSS JOIN keeps the keys as the outer loop, so each key is one index lookup; left to itself the
    planner may scan all of the user's rows instead."""
    if not keys:
        return {}
    param = _keys_param(keys)
    stored: dict[EntityKey, StoredEntity] = {}
    rows = conn.fetchall(
        """
        SELECT s.entity_type, s.entity_id, s.id, s.checksum, s.version, s.deleted_at, s.data, s.updated_at
        FROM json_each(?) AS k CROSS JOIN sync_data s
          ON s.user_id = ? AND s.entity_type = k.value ->> 0 AND s.entity_id = k.value ->> 1
        """,
        (param, user_id),
    )
    for r in rows:
        deleted_at = r["deleted_at"]
        stored[(r["entity_type"], r["entity_id"])] = StoredEntity(
            row_id=r["id"],
            checksum=r["checksum"],
            version=r["version"] or 1,
            live=deleted_at is None,
            data=r["data"],
            updated_ms=_document_updated_ms(r["data"], r["updated_at"]),
            deleted_ms=to_epoch_ms(deleted_at) if deleted_at is not None else None,
        )
    rows = conn.fetchall(
        """
        SELECT e.entity_type, e.entity_id, e.updated_ms, e.deleted_ms, e.content_key, e.duplicate_of
        FROM json_each(?) AS k CROSS JOIN recovery_entity_state e
          ON e.user_id = ? AND e.entity_type = k.value ->> 0 AND e.entity_id = k.value ->> 1
        """,
        (param, user_id),
    )
    for r in rows:
        key = (r["entity_type"], r["entity_id"])
        entity = stored.setdefault(key, StoredEntity())
        if r["updated_ms"] is not None:
            entity.updated_ms = r["updated_ms"]
        if not entity.live and r["deleted_ms"] is not None:
            entity.deleted_ms = r["deleted_ms"]
        entity.content_key = r["content_key"]
        entity.duplicate_of = r["duplicate_of"]
    return stored


async def known_checksums(
    conn: GuardedConnection, user_id: str, candidates: list[tuple[str, str, str]]
) -> dict[tuple[str, str, str], str]:
    """(entity_type, entity_id, raw_sha256) -> the checksum that raw record normalised to before."""
    if not candidates:
        return {}
    rows = await conn.fetchall(
        """
        SELECT r.entity_type, r.entity_id, r.raw_sha256, r.checksum
        FROM json_each(?) AS k CROSS JOIN recovery_raw_records r
          ON r.user_id = ? AND r.entity_type = k.value ->> 0 AND r.entity_id = k.value ->> 1
         AND r.raw_sha256 = k.value ->> 2
        WHERE r.checksum IS NOT NULL
        """,
        (_json.encode(candidates).decode(), user_id),
    )
    return {(r["entity_type"], r["entity_id"], r["raw_sha256"]): r["checksum"] for r in rows}


def load_live_content(conn: SyncConnection, user_id: str, content_keys: set[str]) -> dict[str, list[str]]:
    """content_key -> entity_ids of the user's live logbook entries that hold that content."""
    if not content_keys:
        return {}
    rows = conn.fetchall(
        """
        SELECT e.content_key, e.entity_id
        FROM recovery_entity_state e
        JOIN sync_data s
          ON s.user_id = e.user_id AND s.entity_type = e.entity_type AND s.entity_id = e.entity_id
         AND s.deleted_at IS NULL
        WHERE e.user_id = ? AND e.entity_type = ? AND e.duplicate_of IS NULL
          AND e.content_key IN (SELECT value FROM json_each(?))
        """,
        (user_id, LOGBOOK_ENTRY, _json.encode(sorted(content_keys)).decode()),
    )
    holders: dict[str, list[str]] = {}
    for r in rows:
        holders.setdefault(r["content_key"], []).append(r["entity_id"])
    return holders


def duplicate_keys_of(conn: SyncConnection, user_id: str, entity_ids: Collection[str]) -> dict[str, set[EntityKey]]:
    """holder entity_id -> the keys of the user's logbook entries recorded as its content duplicates."""
    if not entity_ids:
        return {}
    rows = conn.fetchall(
        """
        SELECT e.duplicate_of, e.entity_id
        FROM json_each(?) AS k CROSS JOIN recovery_entity_state e
          ON e.user_id = ? AND e.entity_type = ? AND e.duplicate_of = k.value
        """,
        (_json.encode(sorted(entity_ids)).decode(), user_id, LOGBOOK_ENTRY),
    )
    found: dict[str, set[EntityKey]] = {}
    for r in rows:
        found.setdefault(r["duplicate_of"], set()).add((LOGBOOK_ENTRY, r["entity_id"]))
    return found


def raw_versions(conn: SyncConnection, user_id: str, key: EntityKey) -> list[bytes]:
    """Every live record (not a deletion) kept verbatim for one key, oldest first."""
    rows = conn.fetchall(
        """SELECT raw FROM recovery_raw_records
           WHERE user_id = ? AND entity_type = ? AND entity_id = ? AND checksum IS NOT NULL ORDER BY id""",
        (user_id, key[0], key[1]),
    )
    return [r["raw"].encode("utf-8", "surrogatepass") for r in rows]


def logbook_ids_of_other_users(conn: SyncConnection, user_id: str, entity_ids: Collection[str]) -> set[str]:
    """Which of these ids another user's logbook_entries row holds (its id is the table's primary key)."""
    if not entity_ids:
        return set()
    rows = conn.fetchall(
        """SELECT l.id FROM json_each(?) AS k CROSS JOIN logbook_entries l ON l.id = k.value
           WHERE l.user_id <> ?""",
        (_json.encode(sorted(entity_ids)).decode(), user_id),
    )
    return {r["id"] for r in rows}


def next_seq_values(conn: SyncConnection, count: int) -> int:
    """Reserve `count` values of the app's global change number; returns the first."""
    row = conn.fetchone(
        "SELECT MAX((SELECT current_value FROM sync_sequence WHERE id = 1),"
        " COALESCE((SELECT MAX(seq) FROM sync_data), 0)) AS current"
    )
    current = int(row["current"]) if row is not None and row["current"] is not None else 0
    conn.execute("UPDATE sync_sequence SET current_value = ? WHERE id = 1", (current + count,))
    return current + 1


_INSERT_SYNC = """
INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, deleted_at, device_id, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_UPDATE_SYNC = """
UPDATE sync_data SET data = ?, checksum = ?, version = ?, deleted_at = ?, device_id = ?, seq = ?
WHERE id = ?
"""
# The relational copy follows every change of its sync_data row, soft-deleted ones included: content
# and deleted_at together, by UPDATE (never DELETE). Another user's row with the same id is left alone;
# the planner has reported it (`logbook_ids_of_other_users`), and the WHERE keeps it so regardless.
_UPSERT_LOGBOOK = """
INSERT INTO logbook_entries (id, user_id, timestamp, duration, type, instrument, pieces, techniques, goal_ids,
  notes, mood, tags, session_id, metadata, created_at, updated_at, sync_version, checksum, deleted_at, device_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
  timestamp = excluded.timestamp, duration = excluded.duration, type = excluded.type,
  instrument = excluded.instrument, pieces = excluded.pieces, techniques = excluded.techniques,
  goal_ids = excluded.goal_ids, notes = excluded.notes, mood = excluded.mood, tags = excluded.tags,
  session_id = excluded.session_id, metadata = excluded.metadata, created_at = excluded.created_at,
  updated_at = excluded.updated_at, sync_version = excluded.sync_version, checksum = excluded.checksum,
  deleted_at = excluded.deleted_at, device_id = excluded.device_id
WHERE logbook_entries.user_id = excluded.user_id
"""
# Only the deletion changed: the row keeps the content it holds.
_DELETE_LOGBOOK = """
UPDATE logbook_entries SET deleted_at = ?, sync_version = ?, device_id = ? WHERE id = ? AND user_id = ?
"""
_UPSERT_STATE = """
INSERT INTO recovery_entity_state (user_id, entity_type, entity_id, updated_ms, deleted_ms, content_key, duplicate_of)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE SET
  updated_ms = excluded.updated_ms, deleted_ms = excluded.deleted_ms,
  content_key = excluded.content_key, duplicate_of = excluded.duplicate_of
"""


def _logbook_values(
    r: LogbookRow, w: SyncWrite, user_id: str, device_id: str | None, deleted_at: str | None
) -> tuple[Any, ...]:
    return (r.id, user_id, r.timestamp, r.duration, r.type, r.instrument, r.pieces, r.techniques, r.goal_ids,
            r.notes, r.mood, r.tags, r.session_id, r.metadata, r.created_at, r.updated_at, w.version, w.checksum,
            deleted_at, device_id)


def apply_plan(
    conn: SyncConnection, plan: MergePlan, *, user_id: str, device_id: str | None, upload_id: str
) -> None:
    """Write the plan's rows: sync_data with fresh seq values, logbook_entries, merge state, archive."""
    now = utc_now_text()
    if plan.sync_writes:
        seq = next_seq_values(conn, len(plan.sync_writes))
        # The random part of every new row id at once: one call to the OS's random source per batch.
        random_hex = secrets.token_hex(4 * len(plan.sync_writes))
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        logbook_upserts: list[tuple[Any, ...]] = []
        logbook_deletes: list[tuple[Any, ...]] = []
        for w in plan.sync_writes:
            # As the app writes it: ISO-Z with milliseconds (CONTRACT section 6 item 6), in both tables.
            deleted_at = ms_to_iso_z(w.deleted_ms) if w.deleted_ms is not None else None
            if w.row_id is None:
                # Row ids lead with the seq: new rows append to the primary-key B-tree instead of landing
                # at random pages, which keeps large recoveries from slowing down as the table grows.
                random_part = random_hex[8 * len(inserts) : 8 * len(inserts) + 8]
                inserts.append(
                    (f"sync_{seq:012x}{random_part}", user_id, w.entity_type, w.entity_id, w.data, w.checksum,
                     w.version, deleted_at, device_id, seq)
                )
            else:
                updates.append((w.data, w.checksum, w.version, deleted_at, device_id, seq, w.row_id))
            seq += 1
            if w.entity_type != LOGBOOK_ENTRY:
                continue
            if w.logbook_row is not None:
                # A new version, live or held by a soft-deleted row: the relational copy gets it too.
                logbook_upserts.append(_logbook_values(w.logbook_row, w, user_id, device_id, deleted_at))
            elif deleted_at is not None:
                logbook_deletes.append((deleted_at, w.version, device_id, w.entity_id, user_id))
        if inserts:
            conn.executemany(_INSERT_SYNC, inserts)
        if updates:
            conn.executemany(_UPDATE_SYNC, updates)
        if logbook_upserts:
            conn.executemany(_UPSERT_LOGBOOK, logbook_upserts)
        if logbook_deletes:
            conn.executemany(_DELETE_LOGBOOK, logbook_deletes)
    if plan.state_writes:
        conn.executemany(
            _UPSERT_STATE,
            [(user_id, s.entity_type, s.entity_id, s.updated_ms, s.deleted_ms, s.content_key, s.duplicate_of)
             for s in plan.state_writes],
        )
    if plan.archived:
        # A version is archived once: devices re-send the same losing copy on every sync.
        conn.executemany(
            """INSERT INTO recovery_archive (user_id, entity_type, entity_id, data, checksum, updated_ms, reason,
                 upload_id, archived_at)
               SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
               WHERE NOT EXISTS (SELECT 1 FROM recovery_archive
                                 WHERE user_id = ?1 AND entity_type = ?2 AND entity_id = ?3 AND checksum = ?5
                                   AND data = ?4)""",
            [(user_id, a.entity_type, a.entity_id, a.data, a.checksum, a.updated_ms, a.reason, upload_id, now)
             for a in plan.archived],
        )


def keep_raw_records(
    conn: SyncConnection, rows: list[RawRecordRow], *, user_id: str, device_id: str | None, upload_id: str
) -> None:
    """Keep every distinct raw record verbatim (once per distinct content), and which device sent it."""
    now = utc_now_text()
    keyed = [r for r in rows if r.entity_id is not None]
    if keyed:
        conn.executemany(
            """INSERT INTO recovery_raw_records (user_id, entity_type, entity_id, raw_sha256, raw, checksum,
                 upload_id, device_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT DO NOTHING""",
            [(user_id, r.entity_type, r.entity_id, r.raw_sha256, r.raw, r.checksum, upload_id, device_id, now)
             for r in keyed],
        )


def count_device_records(
    conn: SyncConnection, keys: list[tuple[str, str]], *, user_id: str, device_id: str | None
) -> None:
    """Remember which distinct records each device sent (for its declaration of completeness), and keep
    each device's count of them per entity type."""
    if device_id is None or not keys:
        return
    by_type: dict[str, list[tuple[str, str, str, str]]] = {}
    for entity_type, entity_id in keys:
        by_type.setdefault(entity_type, []).append((user_id, device_id, entity_type, entity_id))
    counts: list[tuple[str, str, str, int]] = []
    for entity_type, rows in by_type.items():
        # One statement per entity type, so its count of inserted rows is the type's count of new records.
        inserted = conn.executemany(
            """INSERT INTO recovery_device_records (user_id, device_id, entity_type, entity_id)
               VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows,
        )
        if inserted:
            counts.append((user_id, device_id, entity_type, inserted))
    conn.executemany(
        """INSERT INTO recovery_device_counts (user_id, device_id, entity_type, received) VALUES (?, ?, ?, ?)
           ON CONFLICT (user_id, device_id, entity_type) DO UPDATE SET received = received + excluded.received""",
        counts,
    )


def quarantine(
    conn: SyncConnection,
    rows: list[QuarantineRow],
    *,
    owner: str,
    email: str | None,
    device_id: str | None,
    upload_id: str,
) -> None:
    if not rows:
        return
    now = utc_now_text()
    # `owner_known`: the owner was a user when the record was kept. Only records of an unknown owner
    # may later follow their email into an account (see `redrivable_quarantine`).
    conn.executemany(
        """INSERT INTO recovery_quarantine (owner, email, entity_type, entity_id, raw, reason, field, detail,
             upload_id, device_id, quarantined_at, owner_known)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, EXISTS (SELECT 1 FROM users WHERE id = ?))""",
        [(owner, email, q.entity_type, q.entity_id, q.raw, q.reason, q.field, q.detail, upload_id, device_id, now,
          owner) for q in rows],
    )


def record_upload(
    conn: SyncConnection,
    receipt: Receipt,
    *,
    upload_id: str,
    user_id: str,
    device_id: str | None,
    source: str,
    file_name: str | None,
    payload_sha256: str,
) -> None:
    """The ledger row, the user's running totals, and the device's first/last upload."""
    now = utc_now_text()
    conn.execute(
        """INSERT INTO recovery_ledger (upload_id, user_id, device_id, source, file_name, payload_sha256, received,
             counts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (upload_id, user_id, device_id, source, file_name, payload_sha256, receipt.received,
         _json.encode(receipt.counts()).decode(), now),
    )
    by_type = receipt.counts_by_type()
    if by_type:
        conn.executemany(
            """INSERT INTO recovery_progress (user_id, entity_type, outcome, n) VALUES (?, ?, ?, ?)
               ON CONFLICT (user_id, entity_type, outcome) DO UPDATE SET n = n + excluded.n""",
            [(user_id, entity_type, outcome, n) for (entity_type, outcome), n in by_type.items()],
        )
    conn.execute(
        """INSERT INTO recovery_users (user_id, first_upload_at, last_upload_at) VALUES (?, ?, ?)
           ON CONFLICT (user_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
        (user_id, now, now),
    )
    if device_id is not None:
        conn.execute(
            """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at)
               VALUES (?, ?, ?, ?)
               ON CONFLICT (user_id, device_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
            (user_id, device_id, now, now),
        )


def touch_sync_metadata(conn: SyncConnection, user_id: str, device_id: str | None, sync_token: str) -> None:
    """What the app records on every sync, for a user that exists (the row references users)."""
    conn.execute(
        """INSERT INTO sync_metadata (user_id, last_sync_token, last_sync_time, device_count, last_device_id)
           VALUES (?, ?, ?, 1, ?)
           ON CONFLICT (user_id) DO UPDATE SET last_sync_token = excluded.last_sync_token,
             last_sync_time = excluded.last_sync_time,
             last_device_id = COALESCE(excluded.last_device_id, sync_metadata.last_device_id)""",
        (user_id, sync_token, utc_now_text(), device_id),
    )


# ---- idempotency -----------------------------------------------------------------------------------

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def find_idempotent_response(
    conn: SyncConnection, user_id: str, route: str, key: str, now: float
) -> StoredResponse | None:
    """The answer stored for this key on this route: a key is the client's name for one request to one
    route, so the same key on another route is another request."""
    row = conn.fetchone(
        "SELECT request_sha256, response FROM recovery_idempotency_keys"
        " WHERE user_id = ? AND route = ? AND key = ? AND created_at > ?",
        (user_id, route, key, now - IDEMPOTENCY_TTL_SECONDS),
    )
    if row is None:
        return None
    return StoredResponse(row["request_sha256"], row["response"].encode())


def remember_response(
    conn: SyncConnection, user_id: str, route: str, key: str, request_sha256: str, response: bytes, now: float
) -> None:
    conn.execute(
        """INSERT INTO recovery_idempotency_keys (user_id, route, key, request_sha256, response, created_at)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (user_id, route, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
             response = excluded.response, created_at = excluded.created_at""",
        (user_id, route, key, request_sha256, response.decode(), now),
    )
    # Expired keys are the service's own bookkeeping; clearing them keeps the table small.
    conn.execute("DELETE FROM recovery_idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_TTL_SECONDS,))


# ---- users -----------------------------------------------------------------------------------------


def _user(row: sqlite3.Row | None) -> UserRecord | None:
    return None if row is None else UserRecord(row["id"], row["email"], row["role"])


def user_by_id(conn: SyncConnection, user_id: str) -> UserRecord | None:
    return _user(conn.fetchone("SELECT id, email, role FROM users WHERE id = ?", (user_id,)))


def match_email(conn: SyncConnection, email: str) -> EmailMatch:
    """Who `email` names, by the one owner rule (`service.domain.owners`)."""
    rows = conn.fetchall(
        "SELECT id, email, role FROM users WHERE LOWER(email) = LOWER(?) ORDER BY id", (email,)
    )
    return match_email_among(email, [UserRecord(r["id"], r["email"], r["role"]) for r in rows])


def user_by_email(conn: SyncConnection, email: str) -> UserRecord | None:
    return match_email(conn, email).user


async def find_user(conn: GuardedConnection, user_id: str) -> UserRecord | None:
    return await conn.run(lambda sync: user_by_id(sync, user_id))


async def find_user_by_email(conn: GuardedConnection, email: str) -> UserRecord | None:
    return await conn.run(lambda sync: user_by_email(sync, email))


async def find_email_match(conn: GuardedConnection, email: str) -> EmailMatch:
    return await conn.run(lambda sync: match_email(sync, email))


def record_alias(conn: SyncConnection, token_sub: str, user: UserRecord, email: str) -> None:
    conn.execute(
        """INSERT INTO recovery_user_aliases (token_sub, user_id, email, mapped_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (token_sub) DO UPDATE SET user_id = excluded.user_id, email = excluded.email,
             mapped_at = excluded.mapped_at""",
        (token_sub, user.id, email, utc_now_text()),
    )


# ---- re-drive ----------------------------------------------------------------------------------------


def redrivable_quarantine(conn: SyncConnection, user: UserRecord) -> list[sqlite3.Row]:
    """The unresolved quarantined records that may be re-driven into `user`'s account, oldest first.

    A record goes only where it is proven to belong, never by an email alone:
    - it was kept under `user.id`: resolved to this user, or kept under a token subject (or a replay's
      claimed id) that is now this user's id;
    - or its owner was unknown when it was kept and still is no user's id, and its email names `user`
      as a token's email is resolved (`match_email`: the exact address, else the only user whose address
      differs in case). A record kept under a known owner never moves by its email: a token whose `sub`
      is one user and whose `email` is another's files its records under the first, whatever it says.
    """
    rows = conn.fetchall(
        "SELECT * FROM recovery_quarantine WHERE resolved_at IS NULL AND owner = ? ORDER BY id", (user.id,)
    )
    candidates = conn.fetchall(
        """SELECT q.* FROM recovery_quarantine q
           WHERE q.resolved_at IS NULL AND q.owner_known = 0 AND q.email IS NOT NULL
             AND LOWER(q.email) = LOWER(?) AND q.owner != ?
             AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = q.owner)
           ORDER BY q.id""",
        (user.email, user.id),
    )
    matches: dict[str, bool] = {}
    for row in candidates:
        email = row["email"]
        if email not in matches:
            found = match_email(conn, email).user
            matches[email] = found is not None and found.id == user.id
        if matches[email]:
            rows.append(row)
    rows.sort(key=lambda r: r["id"])
    return rows


def users_with_redrivable_quarantine(conn: SyncConnection) -> list[str]:
    """The ids of the users `redrivable_quarantine` has something for (for a re-drive of everyone)."""
    ids = {r["id"] for r in conn.fetchall(
        "SELECT DISTINCT u.id FROM recovery_quarantine q JOIN users u ON u.id = q.owner WHERE q.resolved_at IS NULL"
    )}
    emails = conn.fetchall(
        """SELECT DISTINCT q.email FROM recovery_quarantine q
           WHERE q.resolved_at IS NULL AND q.owner_known = 0 AND q.email IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = q.owner)"""
    )
    for row in emails:
        user = match_email(conn, row["email"]).user
        if user is not None:
            ids.add(user.id)
    return sorted(ids)


def resolve_redriven(conn: SyncConnection, ids: list[int], upload_id: str) -> int:
    """Mark re-driven records resolved (never deleted); returns how many were still unresolved."""
    now = utc_now_text()
    return conn.executemany(
        "UPDATE recovery_quarantine SET resolved_at = ?, resolved_upload_id = ? WHERE id = ? AND resolved_at IS NULL",
        [(now, upload_id, i) for i in ids],
    )
