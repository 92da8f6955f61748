"""The storage interface's units on PostgreSQL: the statements of one transaction, run synchronously on the
connection's own thread (engine.py). The same semantics as the SQLite engine's, in PostgreSQL's dialect:

- keys travel as arrays (`unnest(%b::text[], %b::text[])`), so a load is one statement whatever the
  number of keys, and bulk writes are one `INSERT ... SELECT FROM unnest(...)` per table;
- `lock_user` is `pg_advisory_xact_lock` on the user (two-int key space: (USER_LOCKS, hashtext(user))):
  a user's writes are serialised, other users' run beside them;
- `seq` values come from the service's sequence `recovery_change_seq` (never repeats, never goes back);
  taken under the user's lock, so one user's values follow the user's commit order;
- idempotency is one `INSERT ... ON CONFLICT` that claims a key or leaves the stored answer to read.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pg_errors

from service.domain.merge import EntityKey, MergePlan, StoredEntity, SyncWrite
from service.domain.outcomes import OUTCOMES as _OUTCOMES
from service.domain.outcomes import Receipt
from service.domain.owners import EmailMatch, UserRecord, match_email_among
from service.domain.progress import RecoveryState, state_of
from service.domain.records import LOGBOOK_ENTRY, LogbookRow
from service.domain.times import app_timestamp, ms_to_iso_z
from service.store.device_records import SentBefore, receipt_of_upload
from service.store.interface import IDEMPOTENCY_TTL_SECONDS, UserExists
from service.store.merge_state import content_key_from, holders_of, stored_entities
from service.store.rows import (
    ArchivedConflict,
    ArchiveTotals,
    BatchState,
    Checkpoint,
    ContentProbes,
    Declaration,
    DeviceProgress,
    EntityStateRow,
    HourlyActivity,
    KeptRawRecord,
    KnownRaw,
    LedgerEntry,
    LiveDocument,
    NewUser,
    QuarantinedRecord,
    QuarantineRow,
    RawRecordRow,
    RedrivableRecord,
    StoredDocument,
    StoredResponse,
    StoredSyncRow,
    SummaryFigures,
    SyncMetadata,
    SyncRow,
    UserListItem,
    UserProfile,
    UserProgress,
)

# pg_advisory_xact_lock(USER_LOCKS, hashtext(user_id)): the per-user lock (two-int keys; the migrations'
# lock is a one-bigint key, a space of its own). SEQ_BLOCK_LOCK guards a contiguous block of seq values.
USER_LOCKS = 0x5253_5955  # "RSYU"
SEQ_BLOCK_LOCK = 0x5253_5351  # "RSSQ"
SEQUENCE = "recovery_change_seq"
_json = msgspec.json.Encoder()


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the parameters of `unnest(%b::t[], ...)`."""
    return [[r[i] for r in rows] for i in range(width)] if rows else [[] for _ in range(width)]


def _last_per_key(rows: Sequence[tuple[Any, ...]], key: slice) -> list[tuple[Any, ...]]:
    """The last row of each key, in order: one set-based statement must do what one statement per row did
    (a later row for the same key wins), and PostgreSQL refuses to change a row twice in one statement."""
    last: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        k = row[key]
        last.pop(k, None)
        last[k] = row
    return list(last.values())


def _quarantined(r: Mapping[str, Any]) -> QuarantinedRecord:
    try:
        raw: Any = msgspec.json.decode(r["raw"])
    except msgspec.DecodeError:
        raw = r["raw"]
    return QuarantinedRecord(
        id=r["id"], entity_type=r["entity_type"], entity_id=r["entity_id"], reason=r["reason"], field=r["field"],
        detail=r["detail"], raw=raw, upload_id=r["upload_id"], device_id=r["device_id"],
        quarantined_at=r["quarantined_at"], resolved_at=r["resolved_at"],
    )


# One user's figures the state rule (`service.domain.progress.state_of`) decides from (`u.id` is the user).
STATE_FIGURES_SQL = """
  (EXISTS (SELECT 1 FROM recovery_quarantine q WHERE q.owner = u.id AND q.resolved_at IS NULL)
   OR EXISTS (SELECT 1 FROM recovery_archive a WHERE a.user_id = u.id AND a.reviewed_at IS NULL)) AS waiting,
  EXISTS (SELECT 1 FROM recovery_users r WHERE r.user_id = u.id) AS uploaded,
  (EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id)
   AND NOT EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id AND d.complete = 0)) AS all_complete
"""


def _state(row: Mapping[str, Any]) -> RecoveryState:
    return state_of(waiting=bool(row["waiting"]), uploaded=bool(row["uploaded"]),
                    all_devices_complete=bool(row["all_complete"]))

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


class PgReadUnit:
    """`ReadUnit` on one psycopg connection (rows as dicts) inside an open transaction."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.conn = conn

    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return self.conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> dict[str, Any] | None:
        return self.conn.execute(sql, params).fetchone()

    # -- the app's sync data
    def current_seq(self) -> int:
        """The highest change number committed (sync_sequence is raised after each commit, seq rows may be
        ahead of it for a moment): the greater of the two."""
        row = self._one(
            "SELECT GREATEST((SELECT current_value FROM sync_sequence WHERE id = 1),"
            " (SELECT MAX(seq) FROM sync_data), 0) AS current"
        )
        return int(row["current"]) if row is not None else 0

    def live_documents(self, user_id: str) -> list[LiveDocument]:
        rows = self._all(
            "SELECT entity_type, data FROM sync_data WHERE user_id = %s AND deleted_at IS NULL ORDER BY seq",
            (user_id,),
        )
        return [LiveDocument(r["entity_type"], r["data"]) for r in rows]

    def live_documents_of_type(self, user_id: str, entity_type: str) -> list[StoredDocument]:
        rows = self._all(
            "SELECT entity_id, data, created_at, updated_at FROM sync_data"
            " WHERE user_id = %s AND entity_type = %s AND deleted_at IS NULL ORDER BY seq DESC",
            (user_id, entity_type),
        )
        return [StoredDocument(r["entity_id"], r["data"], r["created_at"], r["updated_at"]) for r in rows]

    def live_counts(self, user_id: str) -> dict[str, int]:
        rows = self._all(
            "SELECT entity_type, COUNT(*) AS n FROM sync_data WHERE user_id = %s AND deleted_at IS NULL"
            " GROUP BY entity_type",
            (user_id,),
        )
        return {r["entity_type"]: int(r["n"]) for r in rows}

    def changes_after(self, user_id: str, entity_type: str, after_seq: int, limit: int) -> list[SyncRow]:
        rows = self._all(
            "SELECT entity_id, data, seq, deleted_at FROM sync_data"
            " WHERE user_id = %s AND entity_type = %s AND seq > %s ORDER BY seq LIMIT %s",
            (user_id, entity_type, after_seq, limit),
        )
        return [SyncRow(r["entity_id"], r["data"], r["seq"], r["deleted_at"]) for r in rows]

    def rows_of(self, user_id: str, entity_type: str, entity_ids: Collection[str]) -> list[SyncRow]:
        rows = self._all(
            "SELECT entity_id, data, seq, deleted_at, created_at, updated_at FROM sync_data"
            " WHERE user_id = %s AND entity_type = %s AND entity_id = ANY(%b::text[])",
            (user_id, entity_type, list(entity_ids)),
        )
        return [SyncRow(r["entity_id"], r["data"], r["seq"], r["deleted_at"], r["created_at"], r["updated_at"])
                for r in rows]

    def sync_metadata(self, user_id: str) -> SyncMetadata | None:
        row = self._one("SELECT last_sync_token, last_sync_time FROM sync_metadata WHERE user_id = %s", (user_id,))
        return None if row is None else SyncMetadata(row["last_sync_token"], row["last_sync_time"])

    def device_count(self, user_id: str) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM recovery_devices WHERE user_id = %s", (user_id,))
        return int(row["n"]) if row is not None else 0

    def known_raw_records(
        self, user_id: str, device_id: str | None, candidates: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], KnownRaw]:
        if not candidates:
            return {}
        types, ids, shas = _columns(list(candidates), 3)
        rows = self._all(
            """SELECT r.entity_type, r.entity_id, r.raw_sha256, r.checksum,
                 COALESCE(r.device_id = %s, false) AS from_device
               FROM unnest(%b::text[], %b::text[], %b::text[]) AS k(t, i, h)
               JOIN recovery_raw_records r
                 ON r.user_id = %s AND r.entity_type = k.t AND r.entity_id = k.i AND r.raw_sha256 = k.h
               WHERE r.checksum IS NOT NULL""",
            (device_id, types, ids, shas, user_id),
        )
        return {(r["entity_type"], r["entity_id"], r["raw_sha256"]): KnownRaw(r["checksum"], r["from_device"])
                for r in rows}

    # -- users
    def user_by_id(self, user_id: str) -> UserRecord | None:
        row = self._one("SELECT id, email, role FROM users WHERE id = %s", (user_id,))
        return None if row is None else UserRecord(row["id"], row["email"], row["role"])

    def users_with_email(self, email: str) -> list[UserRecord]:
        rows = self._all("SELECT id, email, role FROM users WHERE LOWER(email) = LOWER(%s) ORDER BY id", (email,))
        return [UserRecord(r["id"], r["email"], r["role"]) for r in rows]

    def match_email(self, email: str) -> EmailMatch:
        return match_email_among(email, self.users_with_email(email))

    def user_profile(self, user_id: str) -> UserProfile | None:
        row = self._one(
            "SELECT id, email, display_name, auth_provider, role, created_at FROM users WHERE id = %s", (user_id,)
        )
        if row is None:
            return None
        return UserProfile(row["id"], row["email"], row["display_name"], row["auth_provider"], row["role"],
                           row["created_at"])

    # -- progress and support
    def user_progress(self, user_id: str) -> UserProgress | None:
        head = self._one(
            """SELECT (SELECT email FROM users WHERE id = %(u)s) AS email,
                      EXISTS (SELECT 1 FROM users WHERE id = %(u)s) AS user_exists,
                      (SELECT first_upload_at FROM recovery_users WHERE user_id = %(u)s) AS first_upload_at,
                      (SELECT last_upload_at FROM recovery_users WHERE user_id = %(u)s) AS last_upload_at,
                      (SELECT COUNT(*) FROM recovery_quarantine WHERE owner = %(u)s AND resolved_at IS NULL) AS q,
                      (SELECT COUNT(*) FROM recovery_archive WHERE user_id = %(u)s AND reviewed_at IS NULL) AS a""",
            {"u": user_id},
        )
        assert head is not None
        quarantined, archived = int(head["q"]), int(head["a"])
        if not head["user_exists"] and head["first_upload_at"] is None and quarantined == 0:
            return None
        counts: dict[str, int] = {outcome: 0 for outcome in _OUTCOMES}
        by_type: dict[str, dict[str, int]] = {}
        for r in self._all("SELECT entity_type, outcome, n FROM recovery_progress WHERE user_id = %s", (user_id,)):
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + int(r["n"])
            by_type.setdefault(r["entity_type"], {})[r["outcome"]] = int(r["n"])
        received: dict[str, dict[str, int]] = {}
        for r in self._all(
            "SELECT device_id, entity_type, received FROM recovery_device_counts WHERE user_id = %s", (user_id,)
        ):
            received.setdefault(r["device_id"], {})[r["entity_type"]] = int(r["received"])
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
            for d in self._all(
                "SELECT device_id, first_upload_at, last_upload_at, declared_at, expected, complete"
                " FROM recovery_devices WHERE user_id = %s ORDER BY first_upload_at, device_id",
                (user_id,),
            )
        ]
        return UserProgress(
            user_id=user_id,
            email=head["email"],
            exists=bool(head["user_exists"]),
            state=state_of(
                waiting=quarantined + archived > 0,
                uploaded=head["first_upload_at"] is not None,
                all_devices_complete=bool(devices) and all(d.declared_complete for d in devices),
            ),
            first_upload_at=head["first_upload_at"],
            last_upload_at=head["last_upload_at"],
            counts=counts,
            counts_by_entity_type=by_type,
            quarantined_waiting=quarantined,
            archived_waiting=archived,
            devices=devices,
        )

    def user_state(self, user_id: str) -> RecoveryState:
        row = self._one(f"SELECT {STATE_FIGURES_SQL} FROM (SELECT %s::text AS id) u", (user_id,))  # noqa: S608
        assert row is not None
        return _state(row)

    def device_received(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = self._all(
            "SELECT entity_type, received FROM recovery_device_counts WHERE user_id = %s AND device_id = %s",
            (user_id, device_id),
        )
        return {r["entity_type"]: int(r["received"]) for r in rows}

    def latest_ledger(self, user_id: str, limit: int = 20) -> list[LedgerEntry]:
        rows = self._all(
            "SELECT * FROM recovery_ledger WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
            (user_id, limit),
        )
        return [
            LedgerEntry(
                upload_id=r["upload_id"], user_id=r["user_id"], device_id=r["device_id"], source=r["source"],
                file_name=r["file_name"], payload_sha256=r["payload_sha256"], received=int(r["received"]),
                counts=json.loads(r["counts"]), created_at=r["created_at"],
            )
            for r in rows
        ]

    def list_users(
        self, *, email: str | None, state: str | None, after: str | None, limit: int
    ) -> list[UserListItem]:
        """Pages of users by id; each one's state is the one rule's (`state_of`), so a state filter reads
        on until `limit` users match or none are left (as on SQLite)."""
        found: list[UserListItem] = []
        cursor = after
        page = max(limit, 200) if state is not None else limit
        while len(found) < limit:
            rows = self._all(
                f"""
                SELECT u.id, u.email, u.role, {STATE_FIGURES_SQL},
                       (SELECT last_upload_at FROM recovery_users r WHERE r.user_id = u.id) AS last_upload_at
                FROM users u
                WHERE (%(after)s::text IS NULL OR u.id > %(after)s::text)
                  AND (%(email)s::text IS NULL OR strpos(LOWER(u.email), LOWER(%(email)s::text)) > 0)
                ORDER BY u.id
                LIMIT %(limit)s
                """,  # noqa: S608 - the figures' SQL is a constant
                {"after": cursor, "email": email, "limit": page},
            )
            for r in rows:
                user_state = _state(r)
                if state is None or user_state == state:
                    found.append(UserListItem(r["id"], r["email"], r["role"], user_state, r["last_upload_at"]))
                    if len(found) == limit:
                        break
            if len(rows) < page:
                break
            cursor = rows[-1]["id"]
        return found

    def users_by_state_counts(self) -> dict[str, int]:
        row = self._one(_STATE_COUNTS_SQL)
        assert row is not None
        total, review, started, complete = (int(row[k]) for k in ("total", "needs_review", "started", "complete"))
        return {RecoveryState.NOT_STARTED: total - review - started, RecoveryState.IN_PROGRESS: started - complete,
                RecoveryState.COMPLETE: complete, RecoveryState.NEEDS_REVIEW: review}

    def summary_figures(self) -> SummaryFigures:
        records: dict[str, int] = {outcome: 0 for outcome in _OUTCOMES}
        for r in self._all("SELECT outcome, SUM(n) AS n FROM recovery_progress GROUP BY outcome"):
            records[r["outcome"]] = int(r["n"])
        hour_ago = app_timestamp(datetime.now(UTC) - timedelta(hours=1))
        recent = self._one("SELECT COUNT(*) AS n FROM recovery_ledger WHERE created_at >= %s", (hour_ago,))
        waiting = self._one(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT owner) AS owners FROM recovery_quarantine WHERE resolved_at IS NULL"
        )
        return SummaryFigures(
            users_by_state=self.users_by_state_counts(),
            records_by_outcome=records,
            uploads_last_hour=int(recent["n"]) if recent else 0,
            quarantined_waiting=int(waiting["n"]) if waiting else 0,
            quarantine_owners=int(waiting["owners"]) if waiting else 0,
        )

    def quarantine_page(
        self, owner: str, *, after: int | None, limit: int, include_resolved: bool
    ) -> list[QuarantinedRecord]:
        rows = self._all(
            "SELECT * FROM recovery_quarantine WHERE owner = %s AND id > %s AND (%s OR resolved_at IS NULL)"
            " ORDER BY id LIMIT %s",
            (owner, after or 0, include_resolved, limit),
        )
        return [_quarantined(r) for r in rows]

    def ledger_per_hour(self, since: str) -> list[HourlyActivity]:
        rows = self._all(
            "SELECT substr(created_at, 1, 13) AS hour, COUNT(*) AS uploads, SUM(received) AS records"
            " FROM recovery_ledger WHERE created_at >= %s GROUP BY hour ORDER BY hour",
            (since,),
        )
        return [HourlyActivity(r["hour"], int(r["uploads"]), int(r["records"] or 0)) for r in rows]

    def waiting_conflicts(self, user_id: str, limit: int, *, after: int = 0) -> list[ArchivedConflict]:
        rows = self._all(
            "SELECT a.id, a.entity_type, a.entity_id, a.reason, a.archived_at, a.data AS archived_data,"
            " s.data AS kept_data, s.deleted_at AS kept_deleted_at"
            " FROM recovery_archive a LEFT JOIN sync_data s"
            "   ON s.user_id = a.user_id AND s.entity_type = a.entity_type AND s.entity_id = a.entity_id"
            " WHERE a.user_id = %s AND a.reviewed_at IS NULL AND a.id > %s ORDER BY a.id LIMIT %s",
            (user_id, after, limit),
        )
        return [
            ArchivedConflict(r["id"], r["entity_type"], r["entity_id"], r["reason"], r["archived_at"],
                             r["archived_data"], r["kept_data"], r["kept_deleted_at"])
            for r in rows
        ]

    def archive_totals(self) -> ArchiveTotals:
        row = self._one(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE reviewed_at IS NULL) AS waiting FROM recovery_archive"
        )
        return ArchiveTotals(int(row["n"]) if row else 0, int(row["waiting"] or 0) if row else 0)

    def last_upload_at(self) -> str | None:
        row = self._one("SELECT MAX(created_at) AS t FROM recovery_ledger")
        return row["t"] if row else None

    def latest_declarations(self, user_id: str) -> dict[str, Declaration]:
        rows = self._all(
            "SELECT DISTINCT ON (device_id) device_id, declared_at, expected, matched"
            " FROM recovery_device_declarations WHERE user_id = %s ORDER BY device_id, id DESC",
            (user_id,),
        )
        return {r["device_id"]: Declaration(r["declared_at"], json.loads(r["expected"]), bool(r["matched"]))
                for r in rows}

    # -- re-drive
    def redrivable_quarantine(self, user: UserRecord) -> list[RedrivableRecord]:
        """As the SQLite engine: kept under `user.id`, or kept for an owner unknown then and now whose email
        names `user` by the one email rule; never by an email alone for a known owner."""
        rows = self._all(
            "SELECT id, entity_type, raw, device_id, email FROM recovery_quarantine"
            " WHERE resolved_at IS NULL AND owner = %s ORDER BY id",
            (user.id,),
        )
        candidates = self._all(
            """SELECT q.id, q.entity_type, q.raw, q.device_id, q.email FROM recovery_quarantine q
               WHERE q.resolved_at IS NULL AND q.owner_known = 0 AND q.email IS NOT NULL
                 AND LOWER(q.email) = LOWER(%s) AND q.owner <> %s
                 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = q.owner)
               ORDER BY q.id""",
            (user.email, user.id),
        )
        matches: dict[str, bool] = {}
        for row in candidates:
            email = row["email"]
            if email not in matches:
                found = self.match_email(email).user
                matches[email] = found is not None and found.id == user.id
            if matches[email]:
                rows.append(row)
        rows.sort(key=lambda r: r["id"])
        return [RedrivableRecord(r["id"], r["entity_type"], r["raw"], r["device_id"]) for r in rows]

    def users_with_redrivable_quarantine(self) -> list[str]:
        ids = {r["id"] for r in self._all(
            "SELECT DISTINCT u.id FROM recovery_quarantine q JOIN users u ON u.id = q.owner"
            " WHERE q.resolved_at IS NULL"
        )}
        emails = self._all(
            """SELECT DISTINCT q.email FROM recovery_quarantine q
               WHERE q.resolved_at IS NULL AND q.owner_known = 0 AND q.email IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = q.owner)"""
        )
        for row in emails:
            user = self.match_email(row["email"]).user
            if user is not None:
                ids.add(user.id)
        return sorted(ids)

    # -- replay
    def checkpoint(self, replay_key: str) -> Checkpoint | None:
        row = self._one(
            "SELECT records_done, finished FROM recovery_replay_checkpoints WHERE replay_key = %s", (replay_key,)
        )
        return None if row is None else Checkpoint(int(row["records_done"]), bool(row["finished"]))

    # -- renormalise
    def users_with_stored_rows(self, user_id: str | None) -> list[str]:
        rows = self._all(
            "SELECT DISTINCT user_id FROM sync_data WHERE (%(u)s::text IS NULL OR user_id = %(u)s::text)"
            " ORDER BY user_id",
            {"u": user_id},
        )
        return [str(r["user_id"]) for r in rows]

    # -- operations
    def ping(self) -> None:
        self._one("SELECT current_value FROM sync_sequence WHERE id = 1")


_INSERT_SYNC = """
INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, deleted_at, device_id, seq)
SELECT k.id, %s, k.t, k.i, k.data, k.checksum, k.version, k.deleted_at, %s, k.seq
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[], %b::bigint[])
  AS k(id, t, i, data, checksum, version, deleted_at, seq)
"""
_UPDATE_SYNC = """
UPDATE sync_data s SET data = k.data, checksum = k.checksum, version = k.version, deleted_at = k.deleted_at,
  device_id = %s, seq = k.seq
FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::bigint[], %b::text[])
  AS k(data, checksum, version, deleted_at, seq, id)
WHERE s.id = k.id
"""
_LOGBOOK_COLUMNS = ("id", "timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids",
                    "notes", "mood", "tags", "session_id", "metadata", "created_at", "updated_at", "sync_version",
                    "checksum", "deleted_at")
_LOGBOOK_TYPES = ("text", "bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "text",
                  "text", "text", "bigint", "bigint", "bigint", "text", "text")
# The relational copy follows every change of its sync_data row, by UPDATE (never DELETE); another user's
# row with the same id is left alone (the WHERE), as on SQLite. One row per id: a plan writes a key once.
_UPSERT_LOGBOOK = f"""
INSERT INTO logbook_entries ({", ".join(_LOGBOOK_COLUMNS)}, user_id, device_id)
SELECT k.*, %s, %s FROM unnest({", ".join(f"%b::{t}[]" for t in _LOGBOOK_TYPES)}) AS k({", ".join(_LOGBOOK_COLUMNS)})
ON CONFLICT (id) DO UPDATE SET
  {", ".join(f"{c} = excluded.{c}" for c in _LOGBOOK_COLUMNS[1:])}, device_id = excluded.device_id
WHERE logbook_entries.user_id = excluded.user_id
"""  # noqa: S608 - built from the constants above
_DELETE_LOGBOOK = """
UPDATE logbook_entries l SET deleted_at = k.deleted_at, sync_version = k.version, device_id = %s
FROM unnest(%b::text[], %b::bigint[], %b::text[]) AS k(deleted_at, version, id)
WHERE l.id = k.id AND l.user_id = %s
"""
_UPSERT_STATE = """
INSERT INTO recovery_entity_state (user_id, entity_type, entity_id, updated_ms, deleted_ms, content_key, duplicate_of)
SELECT %s, k.* FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[])
  AS k(t, i, u, d, c, dup)
ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE SET
  updated_ms = excluded.updated_ms, deleted_ms = excluded.deleted_ms,
  content_key = excluded.content_key, duplicate_of = excluded.duplicate_of
"""
# A version is archived once (devices re-send the same losing copy on every sync), in the plan's order.
_ARCHIVE = """
INSERT INTO recovery_archive (user_id, entity_type, entity_id, data, checksum, updated_ms, reason, upload_id,
  archived_at)
SELECT %(u)s, k.t, k.i, k.data, k.checksum, k.updated_ms, k.reason, %(upload)s, %(now)s
FROM (SELECT DISTINCT ON (t, i, checksum, data) *
      FROM unnest(%(t)b::text[], %(i)b::text[], %(data)b::text[], %(checksum)b::text[], %(updated)b::bigint[],
                  %(reason)b::text[]) WITH ORDINALITY AS k(t, i, data, checksum, updated_ms, reason, n)
      ORDER BY t, i, checksum, data, n) k
WHERE NOT EXISTS (SELECT 1 FROM recovery_archive a
                  WHERE a.user_id = %(u)s AND a.entity_type = k.t AND a.entity_id = k.i AND a.checksum = k.checksum
                    AND a.data = k.data)
ORDER BY k.n
"""


class PgWriteUnit(PgReadUnit):
    """`WriteUnit` on a writer connection inside its open (READ COMMITTED) transaction."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        super().__init__(conn)
        self.max_seq = 0  # the highest seq this transaction wrote: sync_sequence is raised to it after commit
        self._locked: set[str] = set()

    def lock_user(self, user_id: str) -> None:
        if user_id in self._locked:
            return
        self.conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (USER_LOCKS, user_id))
        self._locked.add(user_id)

    # -- the merge's reads
    def load_state(self, user_id: str, keys: Collection[EntityKey]) -> dict[EntityKey, StoredEntity]:
        return self._load_state(user_id, keys, None)

    def load_batch_state(
        self, user_id: str, keys: Collection[EntityKey], contents: ContentProbes
    ) -> BatchState:
        """The keys' state with the logbook ids other users hold, then the live holders of the content
        keys (the batch's and the stored keys' own)."""
        elsewhere: set[str] = set()
        wanted = dict(contents)
        stored = self._load_state(user_id, keys, elsewhere, wanted)
        return BatchState(stored, self.load_live_content(user_id, wanted), elsewhere)

    def _load_state(
        self, user_id: str, keys: Collection[EntityKey], elsewhere: set[str] | None,
        probes: dict[str, int | None] | None = None,
    ) -> dict[EntityKey, StoredEntity]:
        """One query: sync_data row and merge state of every key and which logbook ids another user's
        logbook_entries row holds (added to `elsewhere`, when given). A stored document is decoded for its edit
        time only when the merge state does not remember it."""
        if not keys:
            return {}
        types, ids = _columns(list(keys), 2)
        rows = self._all(
            """SELECT k.t AS entity_type, k.i AS entity_id,
                      s.id, s.checksum, s.version, s.deleted_at, s.data, s.updated_at,
                      e.entity_id IS NOT NULL AS has_state, e.updated_ms, e.deleted_ms, e.content_key,
                      e.duplicate_of, l.user_id IS NOT NULL AND l.user_id <> %(u)s AS held_elsewhere,
                      CASE WHEN l.user_id = %(u)s AND l.deleted_at IS NULL THEN l.timestamp END AS own_timestamp,
                      h.data AS holder_data
               FROM unnest(%(t)b::text[], %(i)b::text[]) AS k(t, i)
               LEFT JOIN sync_data s ON s.user_id = %(u)s AND s.entity_type = k.t AND s.entity_id = k.i
               LEFT JOIN recovery_entity_state e ON e.user_id = %(u)s AND e.entity_type = k.t AND e.entity_id = k.i
               LEFT JOIN logbook_entries l ON k.t = %(lb)s AND l.id = k.i
               LEFT JOIN sync_data h ON e.duplicate_of IS NOT NULL AND h.user_id = %(u)s AND h.entity_type = %(lb)s
                AND h.entity_id = e.duplicate_of
               WHERE s.id IS NOT NULL OR e.entity_id IS NOT NULL OR l.user_id <> %(u)s""",
            {"t": types, "i": ids, "u": user_id, "lb": LOGBOOK_ENTRY},
        )
        return stored_entities(rows, elsewhere, probes)

    def load_live_content(self, user_id: str, contents: ContentProbes) -> dict[str, list[str]]:
        if not contents:
            return {}
        state_holders = self._all(
            """SELECT e.content_key, e.entity_id
               FROM recovery_entity_state e
               JOIN sync_data s ON s.user_id = e.user_id AND s.entity_type = e.entity_type
                AND s.entity_id = e.entity_id AND s.deleted_at IS NULL
               WHERE e.user_id = %s AND e.entity_type = %s AND e.duplicate_of IS NULL
                 AND e.content_key = ANY(%b::text[])""",
            (user_id, LOGBOOK_ENTRY, sorted(contents)),
        )
        times = sorted({t for t in contents.values() if t is not None})
        # The rows whose text holds their state, found by the app's index on (user_id, timestamp).
        same_time = self._all(
            """SELECT l.id, s.data
               FROM logbook_entries l
               JOIN sync_data s ON s.user_id = l.user_id AND s.entity_type = %(lb)s AND s.entity_id = l.id
                AND s.deleted_at IS NULL
               WHERE l.user_id = %(u)s AND l.timestamp = ANY(%(ts)b::bigint[]) AND l.deleted_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM recovery_entity_state e
                                 WHERE e.user_id = l.user_id AND e.entity_type = %(lb)s AND e.entity_id = l.id
                                   AND (e.content_key IS NOT NULL OR e.duplicate_of IS NOT NULL))""",
            {"u": user_id, "lb": LOGBOOK_ENTRY, "ts": times},
        ) if times else []
        return holders_of(contents, state_holders, same_time)

    def live_checksums(self, user_id: str, keys: Collection[EntityKey]) -> dict[EntityKey, str]:
        if not keys:
            return {}
        types, ids = _columns(list(keys), 2)
        rows = self._all(
            """SELECT k.t AS entity_type, k.i AS entity_id, s.checksum
               FROM unnest(%(t)b::text[], %(i)b::text[]) AS k(t, i)
               JOIN sync_data s ON s.user_id = %(u)s AND s.entity_type = k.t AND s.entity_id = k.i
                AND s.deleted_at IS NULL""",
            {"t": types, "i": ids, "u": user_id},
        )
        return {(r["entity_type"], r["entity_id"]): r["checksum"] for r in rows}

    def duplicate_keys_of(self, user_id: str, entity_ids: Collection[str]) -> dict[str, set[EntityKey]]:
        if not entity_ids:
            return {}
        rows = self._all(
            """SELECT duplicate_of, entity_id FROM recovery_entity_state
               WHERE user_id = %s AND entity_type = %s AND duplicate_of = ANY(%b::text[])""",
            (user_id, LOGBOOK_ENTRY, sorted(entity_ids)),
        )
        found: dict[str, set[EntityKey]] = {}
        for r in rows:
            found.setdefault(r["duplicate_of"], set()).add((LOGBOOK_ENTRY, r["entity_id"]))
        return found

    def raw_versions(self, user_id: str, key: EntityKey) -> list[bytes]:
        rows = self._all(
            """SELECT raw FROM recovery_raw_records
               WHERE user_id = %s AND entity_type = %s AND entity_id = %s AND checksum IS NOT NULL ORDER BY id""",
            (user_id, key[0], key[1]),
        )
        return [r["raw"].encode("utf-8", "surrogatepass") for r in rows]

    def logbook_ids_of_other_users(self, user_id: str, entity_ids: Collection[str]) -> set[str]:
        if not entity_ids:
            return set()
        rows = self._all(
            "SELECT id FROM logbook_entries WHERE id = ANY(%b::text[]) AND user_id <> %s",
            (sorted(entity_ids), user_id),
        )
        return {r["id"] for r in rows}

    # -- the merge's writes
    def _seq_values(self, count: int) -> list[int]:
        """`count` fresh change numbers, ascending (not necessarily adjacent: other users take theirs
        beside ours, and nothing needs them adjacent)."""
        rows = self.conn.execute(
            f"SELECT nextval('{SEQUENCE}') AS v FROM generate_series(1, %s)", (count,)  # noqa: S608
        ).fetchall()
        values = sorted(int(r["v"]) for r in rows)
        if values:
            self.max_seq = max(self.max_seq, values[-1])
        return values

    def allocate_seq(self, count: int) -> int:
        """`count` adjacent values (the interface's promise): taken under a short lock that only other
        block allocations wait for, released at once, not at commit."""
        self.conn.execute("SELECT pg_advisory_lock(%s, 0)", (SEQ_BLOCK_LOCK,))
        try:
            row = self._one(f"SELECT nextval('{SEQUENCE}') AS first")
            assert row is not None
            first = int(row["first"])
            if count > 1:
                self.conn.execute(f"SELECT setval('{SEQUENCE}', %s)", (first + count - 1,))
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s, 0)", (SEQ_BLOCK_LOCK,))
        self.max_seq = max(self.max_seq, first + count - 1)
        return first

    def apply_plan(self, plan: MergePlan, *, user_id: str, device_id: str | None, upload_id: str) -> None:
        now = app_timestamp()
        if plan.sync_writes:
            seqs = self._seq_values(len(plan.sync_writes))
            random_hex = secrets.token_hex(4 * len(plan.sync_writes))
            inserts: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            logbook_upserts: list[tuple[Any, ...]] = []
            logbook_deletes: list[tuple[Any, ...]] = []
            for w, seq in zip(plan.sync_writes, seqs, strict=True):
                deleted_at = ms_to_iso_z(w.deleted_ms) if w.deleted_ms is not None else None
                if w.row_id is None:
                    random_part = random_hex[8 * len(inserts) : 8 * len(inserts) + 8]
                    inserts.append((f"sync_{seq:012x}{random_part}", w.entity_type, w.entity_id, w.data,
                                    w.checksum, w.version, deleted_at, seq))
                else:
                    updates.append((w.data, w.checksum, w.version, deleted_at, seq, w.row_id))
                if w.entity_type != LOGBOOK_ENTRY:
                    continue
                if w.logbook_row is not None:
                    logbook_upserts.append(_logbook_values(w.logbook_row, w, deleted_at))
                elif deleted_at is not None:
                    logbook_deletes.append((deleted_at, w.version, w.entity_id))
            if inserts:
                self.conn.execute(_INSERT_SYNC, (user_id, device_id, *_columns(inserts, 8)))
            if updates:
                self.conn.execute(_UPDATE_SYNC, (device_id, *_columns(_last_per_key(updates, slice(5, 6)), 6)))
            if logbook_upserts:
                self._upsert_logbook(_last_per_key(logbook_upserts, slice(0, 1)), user_id, device_id)
            if logbook_deletes:
                self.conn.execute(_DELETE_LOGBOOK, (device_id, *_columns(
                    _last_per_key(logbook_deletes, slice(2, 3)), 3), user_id))
        if plan.state_writes:
            self.conn.execute(_UPSERT_STATE, (user_id, *_columns(_last_per_key(
                [(s.entity_type, s.entity_id, s.updated_ms, s.deleted_ms, s.content_key, s.duplicate_of)
                 for s in plan.state_writes], slice(0, 2)), 6)))
        if plan.archived:
            t, i, data, checksum, updated, reason = _columns(
                [(a.entity_type, a.entity_id, a.data, a.checksum, a.updated_ms, a.reason) for a in plan.archived], 6)
            self.conn.execute(_ARCHIVE, {"u": user_id, "upload": upload_id, "now": now, "t": t, "i": i,
                                         "data": data, "checksum": checksum, "updated": updated, "reason": reason})

    def _upsert_logbook(self, rows: list[tuple[Any, ...]], user_id: str, device_id: str | None) -> None:
        """The app's CHECKs (the old enum set) may refuse a row: such a row stays in sync_data only, as on
        SQLite (where the planner leaves it out); here each refused row is skipped in a savepoint."""
        try:
            with self.conn.transaction():
                self.conn.execute(_UPSERT_LOGBOOK, (user_id, device_id, *_columns(rows, len(_LOGBOOK_COLUMNS))))
        except pg_errors.CheckViolation:
            for row in rows:
                try:
                    with self.conn.transaction():
                        self.conn.execute(_UPSERT_LOGBOOK, (user_id, device_id,
                                                            *_columns([row], len(_LOGBOOK_COLUMNS))))
                except pg_errors.CheckViolation:
                    continue

    def keep_received(
        self,
        rows: list[RawRecordRow],
        sent: list[EntityKey],
        *,
        sent_before: Collection[EntityKey],
        user_id: str,
        device_id: str | None,
        upload_id: str,
    ) -> None:
        keyed = [r for r in rows if r.entity_id is not None]
        # Read before the raw rows go in: what the device had sent, and which contents were kept already.
        receipt = (receipt_of_upload(sent, keyed, sent_before, lambda keys: self._sent_before(user_id, device_id, keys))
                   if device_id is not None and sent else None)
        if keyed:
            self.conn.execute(
                """INSERT INTO recovery_raw_records (user_id, entity_type, entity_id, raw_sha256, raw, checksum,
                     upload_id, device_id, received_at)
                   SELECT %s, k.t, k.i, k.h, k.raw, k.checksum, %s, %s, %s
                   FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])
                     WITH ORDINALITY AS k(t, i, h, raw, checksum, n)
                   ORDER BY k.n
                   ON CONFLICT DO NOTHING""",
                (user_id, upload_id, device_id, app_timestamp(), *_columns(
                    [(r.entity_type, r.entity_id, r.raw_sha256, r.raw, r.checksum) for r in keyed], 5)),
            )
        if receipt is None or not receipt.new_per_type:
            return
        types, ids = _columns(receipt.rows, 2) if receipt.rows else ([], [])
        counted_types, counts = _columns(list(receipt.new_per_type.items()), 2)
        # The device rows and the counts in one statement (a data-modifying CTE runs whether read or not).
        self.conn.execute(
            """WITH recorded AS (
                 INSERT INTO recovery_device_records (user_id, device_id, entity_type, entity_id)
                 SELECT %(u)s, %(d)s, k.t, k.i FROM unnest(%(t)b::text[], %(i)b::text[]) AS k(t, i)
                 ON CONFLICT DO NOTHING)
               INSERT INTO recovery_device_counts (user_id, device_id, entity_type, received)
               SELECT %(u)s, %(d)s, k.t, k.n FROM unnest(%(ct)b::text[], %(cn)b::int[]) AS k(t, n)
               ON CONFLICT (user_id, device_id, entity_type)
                 DO UPDATE SET received = recovery_device_counts.received + excluded.received""",
            {"u": user_id, "d": device_id, "t": types, "i": ids, "ct": counted_types, "cn": counts},
        )

    def _sent_before(self, user_id: str, device_id: str, keys: list[EntityKey]) -> list[SentBefore]:
        """The kept raw records of these (distinct) keys, whose device, which content, and the device's
        own rows for them."""
        types, ids = _columns(keys, 2)
        found = self._all(
            """SELECT k.t AS entity_type, k.i AS entity_id, r.raw_sha256, r.device_id IS NOT DISTINCT FROM %(d)s AS mine
               FROM unnest(%(t)b::text[], %(i)b::text[]) AS k(t, i)
               JOIN recovery_raw_records r ON r.user_id = %(u)s AND r.entity_type = k.t AND r.entity_id = k.i
               UNION ALL
               SELECT k.t, k.i, NULL, true
               FROM unnest(%(t)b::text[], %(i)b::text[]) AS k(t, i)
               JOIN recovery_device_records d
                 ON d.user_id = %(u)s AND d.device_id = %(d)s AND d.entity_type = k.t AND d.entity_id = k.i""",
            {"u": user_id, "d": device_id, "t": types, "i": ids},
        )
        return [SentBefore(r["entity_type"], r["entity_id"], r["raw_sha256"], r["mine"]) for r in found]

    def quarantine(
        self, rows: list[QuarantineRow], *, owner: str, email: str | None, device_id: str | None, upload_id: str
    ) -> None:
        if not rows:
            return
        self.conn.execute(
            """INSERT INTO recovery_quarantine (owner, email, entity_type, entity_id, raw, reason, field, detail,
                 upload_id, device_id, quarantined_at, owner_known)
               SELECT %(owner)s, %(email)s, k.t, k.i, k.raw, k.reason, k.field, k.detail, %(upload)s, %(device)s,
                 %(now)s, (SELECT COUNT(*) FROM users WHERE id = %(owner)s)
               FROM unnest(%(t)b::text[], %(i)b::text[], %(raw)b::text[], %(reason)b::text[], %(field)b::text[],
                           %(detail)b::text[]) WITH ORDINALITY AS k(t, i, raw, reason, field, detail, n)
               ORDER BY k.n""",
            dict(zip(("t", "i", "raw", "reason", "field", "detail"), _columns(
                [(q.entity_type, q.entity_id, q.raw, q.reason, q.field, q.detail) for q in rows], 6), strict=True),
                 owner=owner, email=email, upload=upload_id, device=device_id, now=app_timestamp()),
        )

    def record_upload(
        self,
        receipt: Receipt,
        *,
        upload_id: str,
        user_id: str,
        device_id: str | None,
        source: str,
        file_name: str | None,
        payload_sha256: str,
    ) -> None:
        now = app_timestamp()
        self.conn.execute(
            """INSERT INTO recovery_ledger (upload_id, user_id, device_id, source, file_name, payload_sha256, received,
                 counts, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (upload_id, user_id, device_id, source, file_name, payload_sha256, receipt.received,
             _json.encode(receipt.counts()).decode(), now),
        )
        by_type = receipt.counts_by_type()
        if by_type:
            self.conn.execute(
                """INSERT INTO recovery_progress (user_id, entity_type, outcome, n)
                   SELECT %s, k.t, k.o, k.n FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS k(t, o, n)
                   ON CONFLICT (user_id, entity_type, outcome) DO UPDATE SET n = recovery_progress.n + excluded.n""",
                (user_id, *_columns([(t, o, n) for (t, o), n in by_type.items()], 3)),
            )
        self.conn.execute(
            """INSERT INTO recovery_users (user_id, first_upload_at, last_upload_at) VALUES (%s, %s, %s)
               ON CONFLICT (user_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
            (user_id, now, now),
        )
        if device_id is not None:
            self.conn.execute(
                """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (user_id, device_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
                (user_id, device_id, now, now),
            )

    def touch_sync_metadata(self, user_id: str, device_id: str | None, sync_token: str) -> None:
        self.conn.execute(
            """INSERT INTO sync_metadata (user_id, last_sync_token, last_sync_time, device_count, last_device_id)
               VALUES (%s, %s, %s, 1, %s)
               ON CONFLICT (user_id) DO UPDATE SET last_sync_token = excluded.last_sync_token,
                 last_sync_time = excluded.last_sync_time,
                 last_device_id = COALESCE(excluded.last_device_id, sync_metadata.last_device_id)""",
            (user_id, sync_token, app_timestamp(), device_id),
        )

    def record_alias(self, token_sub: str, user: UserRecord, email: str) -> None:
        self.conn.execute(
            """INSERT INTO recovery_user_aliases (token_sub, user_id, email, mapped_at) VALUES (%s, %s, %s, %s)
               ON CONFLICT (token_sub) DO UPDATE SET user_id = excluded.user_id, email = excluded.email,
                 mapped_at = excluded.mapped_at""",
            (token_sub, user.id, email, app_timestamp()),
        )

    # -- idempotency
    def claim_idempotency(
        self, user_id: str, route: str, key: str, request_sha256: str, now: float
    ) -> StoredResponse | None:
        """Insert the key with an empty answer, or take over an expired one, in one statement; a request
        holding the same key in another transaction makes this one wait for its commit (the unique index),
        then read the answer it stored."""
        claimed = self._one(
            """INSERT INTO recovery_idempotency_keys (user_id, route, key, request_sha256, response, created_at)
               VALUES (%s, %s, %s, %s, '', %s)
               ON CONFLICT (user_id, route, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
                 response = '', created_at = excluded.created_at
               WHERE recovery_idempotency_keys.created_at <= %s
               RETURNING 1 AS claimed""",
            (user_id, route, key, request_sha256, now, now - IDEMPOTENCY_TTL_SECONDS),
        )
        if claimed is not None:
            return None
        row = self._one(
            "SELECT request_sha256, response FROM recovery_idempotency_keys"
            " WHERE user_id = %s AND route = %s AND key = %s",
            (user_id, route, key),
        )
        assert row is not None
        return StoredResponse(row["request_sha256"], row["response"].encode())

    def remember_response(self, user_id: str, route: str, key: str, response: bytes, now: float) -> None:
        self.conn.execute(
            "UPDATE recovery_idempotency_keys SET response = %s WHERE user_id = %s AND route = %s AND key = %s",
            (response.decode(), user_id, route, key),
        )
        # Expired keys of this user are the service's own bookkeeping: cleared to keep the table small.
        self.conn.execute(
            "DELETE FROM recovery_idempotency_keys WHERE user_id = %s AND created_at < %s",
            (user_id, now - IDEMPOTENCY_TTL_SECONDS),
        )

    # -- devices, review, re-drive
    def declare_device(self, user_id: str, device_id: str, expected: Mapping[str, int], complete: bool) -> None:
        now = app_timestamp()
        expected_text = json.dumps(dict(expected), sort_keys=True)
        self.conn.execute(
            "INSERT INTO recovery_device_declarations (user_id, device_id, declared_at, expected, matched)"
            " VALUES (%s, %s, %s, %s, %s)",
            (user_id, device_id, now, expected_text, int(complete)),
        )
        if not complete:
            return
        self.conn.execute(
            """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at, declared_at,
                 expected, complete) VALUES (%s, %s, %s, %s, %s, %s, 1)
               ON CONFLICT (user_id, device_id) DO UPDATE SET declared_at = excluded.declared_at,
                 expected = excluded.expected, complete = 1""",
            (user_id, device_id, now, now, now, expected_text),
        )

    def mark_archive_reviewed(self, user_id: str) -> int:
        cursor = self.conn.execute(
            "UPDATE recovery_archive SET reviewed_at = %s WHERE user_id = %s AND reviewed_at IS NULL",
            (app_timestamp(), user_id),
        )
        return max(cursor.rowcount, 0)

    def resolve_redriven(self, ids: list[int], upload_id: str) -> int:
        if not ids:
            return 0
        cursor = self.conn.execute(
            "UPDATE recovery_quarantine SET resolved_at = %s, resolved_upload_id = %s"
            " WHERE id = ANY(%b::bigint[]) AND resolved_at IS NULL",
            (app_timestamp(), upload_id, list(ids)),
        )
        return max(cursor.rowcount, 0)

    # -- replay
    def save_checkpoint(
        self, replay_key: str, *, file_name: str, file_sha256: str, records_done: int, finished: bool
    ) -> None:
        self.conn.execute(
            """INSERT INTO recovery_replay_checkpoints
                 (replay_key, file_name, file_sha256, records_done, finished, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (replay_key) DO UPDATE SET file_name = excluded.file_name,
                 records_done = excluded.records_done, finished = excluded.finished,
                 updated_at = excluded.updated_at""",
            (replay_key, file_name, file_sha256, records_done, int(finished), app_timestamp()),
        )

    # -- renormalise
    def stored_rows(self, user_id: str) -> list[StoredSyncRow]:
        rows = self._all(
            "SELECT id, entity_type, entity_id, data, checksum, version, deleted_at, device_id FROM sync_data"
            " WHERE user_id = %s ORDER BY seq",
            (user_id,),
        )
        return [StoredSyncRow(r["id"], r["entity_type"], r["entity_id"], r["data"], r["checksum"], r["version"],
                              r["deleted_at"], r["device_id"]) for r in rows]

    def entity_states(self, user_id: str) -> dict[EntityKey, EntityStateRow]:
        rows = self._all(
            "SELECT entity_type, entity_id, updated_ms, deleted_ms, content_key, duplicate_of"
            " FROM recovery_entity_state WHERE user_id = %s",
            (user_id,),
        )
        return {(r["entity_type"], r["entity_id"]): EntityStateRow(
            r["entity_type"], r["entity_id"], r["updated_ms"], r["deleted_ms"], r["content_key"], r["duplicate_of"])
            for r in rows}

    def kept_raw_records(self, user_id: str) -> list[KeptRawRecord]:
        rows = self._all(
            "SELECT id, entity_type, entity_id, raw, checksum FROM recovery_raw_records"
            " WHERE user_id = %s AND checksum IS NOT NULL ORDER BY id",
            (user_id,),
        )
        return [KeptRawRecord(r["id"], r["entity_type"], r["entity_id"], r["raw"], r["checksum"]) for r in rows]

    def content_key_of(self, user_id: str, key: EntityKey) -> str | None:
        row = self._one(
            """SELECT e.content_key, s.data FROM (SELECT %(u)s::text AS u, %(t)s::text AS t, %(i)s::text AS i) AS k
               LEFT JOIN recovery_entity_state e ON e.user_id = k.u AND e.entity_type = k.t AND e.entity_id = k.i
               LEFT JOIN sync_data s
                 ON s.user_id = k.u AND s.entity_type = k.t AND s.entity_id = k.i AND s.deleted_at IS NULL""",
            {"u": user_id, "t": key[0], "i": key[1]},
        )
        return content_key_from(row, key)

    def last_device_of(self, user_id: str, key: EntityKey) -> str | None:
        row = self._one(
            "SELECT device_id FROM recovery_raw_records WHERE user_id = %s AND entity_type = %s AND entity_id = %s"
            " ORDER BY id DESC LIMIT 1",
            (user_id, key[0], key[1]),
        )
        return None if row is None else row["device_id"]

    def record_moves(self, user_id: str, moves: list[tuple[str, str, str]]) -> None:
        if not moves:
            return
        self.conn.execute(
            """INSERT INTO recovery_entity_state (user_id, entity_type, entity_id, duplicate_of)
               SELECT %s, k.* FROM unnest(%b::text[], %b::text[], %b::text[]) AS k(t, old_id, new_id)
               ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE SET duplicate_of = excluded.duplicate_of""",
            (user_id, *_columns(_last_per_key(moves, slice(0, 2)), 3)),
        )

    def update_raw_checksums(self, checksums: Mapping[int, str]) -> None:
        if not checksums:
            return
        self.conn.execute(
            """UPDATE recovery_raw_records r SET checksum = k.checksum
               FROM unnest(%b::bigint[], %b::text[]) AS k(id, checksum) WHERE r.id = k.id""",
            (list(checksums), list(checksums.values())),
        )

    # -- users (the CLI)
    def add_user(self, user: NewUser, *, if_absent: bool = False) -> bool:
        sql = "INSERT INTO users (id, email, display_name, role) VALUES (%s, %s, %s, %s)"
        params = (user.id, user.email, user.display_name, user.role)
        if if_absent:
            cursor = self.conn.execute(sql + " ON CONFLICT DO NOTHING", params)
            return cursor.rowcount > 0
        try:
            with self.conn.transaction():
                self.conn.execute(sql, params)
        except pg_errors.UniqueViolation as error:
            raise UserExists(f"the id or email is taken: {error.diag.message_detail or error}") from error
        return True


def _logbook_values(r: LogbookRow, w: SyncWrite, deleted_at: str | None) -> tuple[Any, ...]:
    return (r.id, r.timestamp, r.duration, r.type, r.instrument, r.pieces, r.techniques, r.goal_ids, r.notes,
            r.mood, r.tags, r.session_id, r.metadata, r.created_at, r.updated_at, w.version, w.checksum, deleted_at)

