"""The SQLite engine's units of work: every statement the service runs on SQLite, as the methods of
`SqliteReadUnit` (one snapshot on a reader) and `SqliteWriteUnit` (one write transaction on the writer).

Both run on their connection's own thread (see `engine`), synchronously, so a use case's whole
transaction is one hop from the event loop. The write-path statements are a fixed number whatever the
number of records: keys travel as one JSON parameter, rows many to an INSERT (`SyncConnection.insert_rows`).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.domain.merge import EntityKey, MergePlan, StoredEntity, SyncWrite
from service.domain.outcomes import OUTCOMES, Receipt
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
from service.store.sqlite.connection import SyncConnection

_json = msgspec.json.Encoder()


def _ids_by_type(keys: Iterable[EntityKey]) -> str:
    """Keys as one JSON parameter, {type: [ids]}: each id a plain JSON text for `json_each` (not an array
    parsed again per lookup: half the cost per key)."""
    by_type: dict[str, list[str]] = {}
    for entity_type, entity_id in keys:
        by_type.setdefault(entity_type, []).append(entity_id)
    return _json.encode(by_type).decode()


def _user(row: sqlite3.Row | None) -> UserRecord | None:
    return None if row is None else UserRecord(row["id"], row["email"], row["role"])


# One user's figures the state rule (`service.domain.progress.state_of`) decides from (`u.id` is the
# user): waiting review, uploaded at all, every device declared complete.
STATE_FIGURES_SQL = """
  (EXISTS (SELECT 1 FROM recovery_quarantine q WHERE q.owner = u.id AND q.resolved_at IS NULL)
   OR EXISTS (SELECT 1 FROM recovery_archive a WHERE a.user_id = u.id AND a.reviewed_at IS NULL)) AS waiting,
  EXISTS (SELECT 1 FROM recovery_users r WHERE r.user_id = u.id) AS uploaded,
  (EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id)
   AND NOT EXISTS (SELECT 1 FROM recovery_devices d WHERE d.user_id = u.id AND d.complete = 0)) AS all_complete
"""


def _state(row: sqlite3.Row) -> RecoveryState:
    return state_of(waiting=bool(row["waiting"]), uploaded=bool(row["uploaded"]),
                    all_devices_complete=bool(row["all_complete"]))


# The state rule counted over whole sets instead of per user: the overview asks every few seconds, and per
# user it costs five index lookups for each of 100k users (half a second); this reads each table once.
# tests/store/test_progress.py checks it gives the counts `state_of` gives user by user.
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


def _ledger_entry(r: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        upload_id=r["upload_id"], user_id=r["user_id"], device_id=r["device_id"], source=r["source"],
        file_name=r["file_name"], payload_sha256=r["payload_sha256"], received=r["received"],
        counts=json.loads(r["counts"]), created_at=r["created_at"],
    )


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


def _sync_row(r: sqlite3.Row) -> SyncRow:
    keys = r.keys()
    return SyncRow(r["entity_id"], r["data"], r["seq"], r["deleted_at"],
                   r["created_at"] if "created_at" in keys else None,
                   r["updated_at"] if "updated_at" in keys else None)


def _redrivable(r: sqlite3.Row) -> RedrivableRecord:
    return RedrivableRecord(r["id"], r["entity_type"], r["raw"], r["device_id"])


class SqliteReadUnit:
    """The reads of `ReadUnit` on one SQLite connection, inside the snapshot (or transaction) it holds."""

    def __init__(self, conn: SyncConnection) -> None:
        self.sql = conn  # the guarded connection itself, for SQLite-specific code and tests

    # ---- the app's sync data ------------------------------------------------------------------------

    def current_seq(self) -> int:
        row = self.sql.fetchone("SELECT current_value FROM sync_sequence WHERE id = 1")
        return int(row["current_value"]) if row is not None else 0

    def live_documents(self, user_id: str) -> list[LiveDocument]:
        rows = self.sql.fetchall(
            "SELECT entity_type, data FROM sync_data WHERE user_id = ? AND deleted_at IS NULL ORDER BY seq",
            (user_id,),
        )
        return [LiveDocument(r["entity_type"], r["data"]) for r in rows]

    def live_documents_of_type(self, user_id: str, entity_type: str) -> list[StoredDocument]:
        rows = self.sql.fetchall(
            "SELECT entity_id, data, created_at, updated_at FROM sync_data"
            " WHERE user_id = ? AND entity_type = ? AND deleted_at IS NULL ORDER BY seq DESC",
            (user_id, entity_type),
        )
        return [StoredDocument(r["entity_id"], r["data"], r["created_at"], r["updated_at"]) for r in rows]

    def live_counts(self, user_id: str) -> dict[str, int]:
        rows = self.sql.fetchall(
            "SELECT entity_type, COUNT(*) AS n FROM sync_data WHERE user_id = ? AND deleted_at IS NULL"
            " GROUP BY entity_type",
            (user_id,),
        )
        return {r["entity_type"]: r["n"] for r in rows}

    def changes_after(self, user_id: str, entity_type: str, after_seq: int, limit: int) -> list[SyncRow]:
        rows = self.sql.fetchall(
            "SELECT entity_id, data, seq, deleted_at FROM sync_data"
            " WHERE user_id = ? AND entity_type = ? AND seq > ? ORDER BY seq LIMIT ?",
            (user_id, entity_type, after_seq, limit),
        )
        return [_sync_row(r) for r in rows]

    def rows_of(self, user_id: str, entity_type: str, entity_ids: Collection[str]) -> list[SyncRow]:
        ids = list(entity_ids)
        rows: list[SyncRow] = []
        for start in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows.extend(_sync_row(r) for r in self.sql.fetchall(
                f"SELECT entity_id, data, seq, deleted_at, created_at, updated_at FROM sync_data"  # noqa: S608
                f" WHERE user_id = ? AND entity_type = ? AND entity_id IN ({marks})",
                (user_id, entity_type, *chunk),
            ))
        return rows

    def sync_metadata(self, user_id: str) -> SyncMetadata | None:
        row = self.sql.fetchone(
            "SELECT last_sync_token, last_sync_time FROM sync_metadata WHERE user_id = ?", (user_id,)
        )
        return None if row is None else SyncMetadata(row["last_sync_token"], row["last_sync_time"])

    def device_count(self, user_id: str) -> int:
        row = self.sql.fetchone("SELECT COUNT(*) AS n FROM recovery_devices WHERE user_id = ?", (user_id,))
        return int(row["n"]) if row is not None else 0

    def known_raw_records(
        self, user_id: str, device_id: str | None, candidates: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], KnownRaw]:
        """One index lookup per candidate, none when the user has no raw record kept yet (a first
        upload: the EXISTS is a constant term, tested once before the loop). Candidates travel as
        [{type: {id: sha}}]: ids and hashes are plain JSON texts, not arrays parsed again per lookup
        (a key named twice goes into a second layer)."""
        if not candidates:
            return {}
        layers: list[dict[str, dict[str, str]]] = []
        for entity_type, entity_id, raw_sha256 in candidates:
            for layer in layers:
                ids = layer.setdefault(entity_type, {})
                if entity_id not in ids:
                    ids[entity_id] = raw_sha256
                    break
            else:
                layers.append({entity_type: {entity_id: raw_sha256}})
        rows = self.sql.fetchall(
            """
            SELECT t.key AS entity_type, k.key AS entity_id, k.value AS raw_sha256, r.checksum,
              COALESCE(r.device_id = ?3, 0) AS from_device
            FROM json_each(?1) AS layer CROSS JOIN json_each(layer.value) AS t CROSS JOIN json_each(t.value) AS k
            CROSS JOIN recovery_raw_records r
              ON r.user_id = ?2 AND r.entity_type = t.key AND r.entity_id = k.key AND r.raw_sha256 = k.value
            WHERE r.checksum IS NOT NULL
              AND EXISTS (SELECT 1 FROM recovery_raw_records WHERE user_id = ?2)
            """,
            (_json.encode(layers).decode(), user_id, device_id),
        )
        return {(r["entity_type"], r["entity_id"], r["raw_sha256"]): KnownRaw(r["checksum"], bool(r["from_device"]))
                for r in rows}

    # ---- users ------------------------------------------------------------------------------------

    def user_by_id(self, user_id: str) -> UserRecord | None:
        return _user(self.sql.fetchone("SELECT id, email, role FROM users WHERE id = ?", (user_id,)))

    def users_with_email(self, email: str) -> list[UserRecord]:
        rows = self.sql.fetchall(
            "SELECT id, email, role FROM users WHERE LOWER(email) = LOWER(?) ORDER BY id", (email,)
        )
        return [UserRecord(r["id"], r["email"], r["role"]) for r in rows]

    def match_email(self, email: str) -> EmailMatch:
        return match_email_among(email, self.users_with_email(email))

    def user_profile(self, user_id: str) -> UserProfile | None:
        row = self.sql.fetchone(
            "SELECT id, email, display_name, auth_provider, role, created_at FROM users WHERE id = ?", (user_id,)
        )
        if row is None:
            return None
        return UserProfile(row["id"], row["email"], row["display_name"], row["auth_provider"], row["role"],
                           row["created_at"])

    # ---- progress and support ---------------------------------------------------------------------

    def user_state(self, user_id: str) -> RecoveryState:
        row = self.sql.fetchone(f"SELECT {STATE_FIGURES_SQL} FROM (SELECT ? AS id) u", (user_id,))  # noqa: S608
        assert row is not None  # a SELECT over one row has its one row
        return _state(row)

    def device_received(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = self.sql.fetchall(
            "SELECT entity_type, received FROM recovery_device_counts WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return {r["entity_type"]: r["received"] for r in rows}

    def user_progress(self, user_id: str) -> UserProgress | None:
        """Four queries, whatever the number of devices."""
        head = self.sql.fetchone(
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
        counts: dict[str, int] = {outcome: 0 for outcome in OUTCOMES}
        by_type: dict[str, dict[str, int]] = {}
        for r in self.sql.fetchall(
            "SELECT entity_type, outcome, n FROM recovery_progress WHERE user_id = ?", (user_id,)
        ):
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + r["n"]
            by_type.setdefault(r["entity_type"], {})[r["outcome"]] = r["n"]
        received: dict[str, dict[str, int]] = {}
        for r in self.sql.fetchall(
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
            for d in self.sql.fetchall(
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

    def latest_ledger(self, user_id: str, limit: int = 20) -> list[LedgerEntry]:
        rows = self.sql.fetchall(
            "SELECT * FROM recovery_ledger WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (user_id, limit),
        )
        return [_ledger_entry(r) for r in rows]

    def list_users(
        self, *, email: str | None, state: str | None, after: str | None, limit: int
    ) -> list[UserListItem]:
        """Read in pages of users by id; the state of each is the one rule's (`state_of`), so a state
        filter reads on until `limit` users match or none are left."""
        found: list[UserListItem] = []
        cursor = after
        page = max(limit, 200) if state is not None else limit
        while len(found) < limit:
            rows = self.sql.fetchall(
                f"""
                SELECT u.id, u.email, u.role, {STATE_FIGURES_SQL},
                       (SELECT last_upload_at FROM recovery_users r WHERE r.user_id = u.id) AS last_upload_at
                FROM users u
                WHERE (? IS NULL OR u.id > ?) AND (? IS NULL OR instr(LOWER(u.email), LOWER(?)) > 0)
                ORDER BY u.id
                LIMIT ?
                """,  # noqa: S608 - the figures' SQL is a constant
                (cursor, cursor, email, email, page),
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
        row = self.sql.fetchone(_STATE_COUNTS_SQL)
        assert row is not None
        return {
            RecoveryState.NOT_STARTED: row["total"] - row["needs_review"] - row["started"],
            RecoveryState.IN_PROGRESS: row["started"] - row["complete"],
            RecoveryState.COMPLETE: row["complete"],
            RecoveryState.NEEDS_REVIEW: row["needs_review"],
        }

    def summary_figures(self) -> SummaryFigures:
        users_by_state = self.users_by_state_counts()
        records: dict[str, int] = {outcome: 0 for outcome in OUTCOMES}
        for r in self.sql.fetchall("SELECT outcome, SUM(n) AS n FROM recovery_progress GROUP BY outcome"):
            records[r["outcome"]] = r["n"]
        hour_ago = app_timestamp(datetime.now(UTC) - timedelta(hours=1))
        recent = self.sql.fetchone("SELECT COUNT(*) AS n FROM recovery_ledger WHERE created_at >= ?", (hour_ago,))
        waiting = self.sql.fetchone(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT owner) AS owners FROM recovery_quarantine WHERE resolved_at IS NULL"
        )
        return SummaryFigures(
            users_by_state=users_by_state,
            records_by_outcome=records,
            uploads_last_hour=int(recent["n"]) if recent else 0,
            quarantined_waiting=int(waiting["n"]) if waiting else 0,
            quarantine_owners=int(waiting["owners"]) if waiting else 0,
        )

    def quarantine_page(
        self, owner: str, *, after: int | None, limit: int, include_resolved: bool
    ) -> list[QuarantinedRecord]:
        rows = self.sql.fetchall(
            "SELECT * FROM recovery_quarantine WHERE owner = ? AND id > ? AND (? OR resolved_at IS NULL)"
            " ORDER BY id LIMIT ?",
            (owner, after or 0, include_resolved, limit),
        )
        return [_quarantined(r) for r in rows]

    def ledger_per_hour(self, since: str) -> list[HourlyActivity]:
        rows = self.sql.fetchall(
            "SELECT substr(created_at, 1, 13) AS hour, COUNT(*) AS uploads, SUM(received) AS records"
            " FROM recovery_ledger WHERE created_at >= ? GROUP BY hour ORDER BY hour",
            (since,),
        )
        return [HourlyActivity(r["hour"], r["uploads"], int(r["records"] or 0)) for r in rows]

    def waiting_conflicts(self, user_id: str, limit: int, *, after: int = 0) -> list[ArchivedConflict]:
        rows = self.sql.fetchall(
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

    def archive_totals(self) -> ArchiveTotals:
        row = self.sql.fetchone(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE reviewed_at IS NULL) AS waiting FROM recovery_archive"
        )
        return ArchiveTotals(int(row["n"]) if row else 0, int(row["waiting"] or 0) if row else 0)

    def last_upload_at(self) -> str | None:
        row = self.sql.fetchone("SELECT MAX(created_at) AS t FROM recovery_ledger")
        return row["t"] if row else None

    def latest_declarations(self, user_id: str) -> dict[str, Declaration]:
        rows = self.sql.fetchall(
            "SELECT device_id, declared_at, expected, matched FROM recovery_device_declarations d"
            " WHERE user_id = ? AND id = (SELECT MAX(id) FROM recovery_device_declarations l"
            "   WHERE l.user_id = d.user_id AND l.device_id = d.device_id)",
            (user_id,),
        )
        return {r["device_id"]: Declaration(r["declared_at"], json.loads(r["expected"]), bool(r["matched"]))
                for r in rows}

    # ---- re-drive ---------------------------------------------------------------------------------

    def redrivable_quarantine(self, user: UserRecord) -> list[RedrivableRecord]:
        """A record goes only where it is proven to belong, never by an email alone:
        - it was kept under `user.id`: resolved to this user, or kept under a token subject (or a replay's
          claimed id) that is now this user's id;
        - or its owner was unknown when it was kept and still is no user's id, and its email names `user`
          as a token's email is resolved (`match_email`). A record kept under a known owner never moves by
          its email: a token whose `sub` is one user and whose `email` is another's files its records
          under the first, whatever it says.
        """
        rows = self.sql.fetchall(
            "SELECT * FROM recovery_quarantine WHERE resolved_at IS NULL AND owner = ? ORDER BY id", (user.id,)
        )
        candidates = self.sql.fetchall(
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
                found = self.match_email(email).user
                matches[email] = found is not None and found.id == user.id
            if matches[email]:
                rows.append(row)
        rows.sort(key=lambda r: r["id"])
        return [_redrivable(r) for r in rows]

    def users_with_redrivable_quarantine(self) -> list[str]:
        ids = {r["id"] for r in self.sql.fetchall(
            "SELECT DISTINCT u.id FROM recovery_quarantine q JOIN users u ON u.id = q.owner WHERE q.resolved_at IS NULL"
        )}
        emails = self.sql.fetchall(
            """SELECT DISTINCT q.email FROM recovery_quarantine q
               WHERE q.resolved_at IS NULL AND q.owner_known = 0 AND q.email IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = q.owner)"""
        )
        for row in emails:
            user = self.match_email(row["email"]).user
            if user is not None:
                ids.add(user.id)
        return sorted(ids)

    # ---- replay -----------------------------------------------------------------------------------

    def checkpoint(self, replay_key: str) -> Checkpoint | None:
        row = self.sql.fetchone(
            "SELECT records_done, finished FROM recovery_replay_checkpoints WHERE replay_key = ?", (replay_key,)
        )
        return None if row is None else Checkpoint(int(row["records_done"]), bool(row["finished"]))

    # ---- renormalise ------------------------------------------------------------------------------

    def users_with_stored_rows(self, user_id: str | None) -> list[str]:
        rows = self.sql.fetchall(
            "SELECT DISTINCT user_id FROM sync_data WHERE (? IS NULL OR user_id = ?) ORDER BY user_id",
            (user_id, user_id),
        )
        return [str(r["user_id"]) for r in rows]

    # ---- operations -------------------------------------------------------------------------------

    def ping(self) -> None:
        self.sql.fetchone("SELECT COUNT(*) FROM sync_sequence")


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


class SqliteWriteUnit(SqliteReadUnit):
    """`WriteUnit` on the writer connection, inside its open `BEGIN IMMEDIATE` transaction."""

    def lock_user(self, user_id: str) -> None:
        """SQLite's write lock is database-wide: the transaction already excludes every other writer."""

    # ---- the merge's reads ------------------------------------------------------------------------

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
        logbook_entries row holds (added to `elsewhere`, when given). The keys travel as {type: [ids]}
        (`_ids_by_type`) and stay the outer loop, one index lookup per table each. A stored document is
        decoded for its edit time only when the merge state does not remember it."""
        if not keys:
            return {}
        rows = self.sql.fetchall(
            """
            SELECT t.key AS entity_type, k.value AS entity_id,
                   s.id, s.checksum, s.version, s.deleted_at, s.data, s.updated_at,
                   e.entity_id IS NOT NULL AS has_state, e.updated_ms, e.deleted_ms, e.content_key, e.duplicate_of,
                   l.user_id IS NOT NULL AND l.user_id <> ?2 AS held_elsewhere,
                   CASE WHEN l.user_id = ?2 AND l.deleted_at IS NULL THEN l.timestamp END AS own_timestamp,
                   h.data AS holder_data
            FROM json_each(?1) AS t CROSS JOIN json_each(t.value) AS k
            LEFT JOIN sync_data s ON s.user_id = ?2 AND s.entity_type = t.key AND s.entity_id = k.value
            LEFT JOIN recovery_entity_state e ON e.user_id = ?2 AND e.entity_type = t.key AND e.entity_id = k.value
            LEFT JOIN logbook_entries l ON t.key = ?3 AND l.id = k.value
            LEFT JOIN sync_data h
              ON e.duplicate_of IS NOT NULL AND h.user_id = ?2 AND h.entity_type = ?3 AND h.entity_id = e.duplicate_of
            WHERE s.id IS NOT NULL OR e.entity_id IS NOT NULL OR l.user_id <> ?2
            """,
            (_ids_by_type(keys), user_id, LOGBOOK_ENTRY),
        )
        return stored_entities(rows, elsewhere, probes)

    def load_live_content(self, user_id: str, contents: ContentProbes) -> dict[str, list[str]]:
        if not contents:
            return {}
        # The content keys stay the outer loop (CROSS JOIN), one probe of the content index each. Written
        # as `content_key IN (...)`, SQLite chose the primary key's (user_id, entity_type) prefix instead:
        # a walk over all the user's logbook state on every upload, which grew with the history (#17).
        state_holders = self.sql.fetchall(
            """
            SELECT e.content_key, e.entity_id
            FROM json_each(?3) AS k
            CROSS JOIN recovery_entity_state e ON e.user_id = ?1 AND e.content_key = k.value
            JOIN sync_data s
              ON s.user_id = e.user_id AND s.entity_type = e.entity_type AND s.entity_id = e.entity_id
             AND s.deleted_at IS NULL
            WHERE e.entity_type = ?2 AND e.duplicate_of IS NULL
            """,
            (user_id, LOGBOOK_ENTRY, _json.encode(sorted(contents)).decode()),
        )
        times = sorted({t for t in contents.values() if t is not None})
        # The rows whose text holds their state: the app's index on (user_id, timestamp) finds the live
        # entries of the same time (content duplicates share it), one probe a time.
        same_time = self.sql.fetchall(
            """
            SELECT l.id, s.data
            FROM json_each(?3) AS k
            CROSS JOIN logbook_entries l ON l.user_id = ?1 AND l.timestamp = k.value
            CROSS JOIN sync_data s
              ON s.user_id = ?1 AND s.entity_type = ?2 AND s.entity_id = l.id AND s.deleted_at IS NULL
            WHERE l.deleted_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM recovery_entity_state e
                              WHERE e.user_id = ?1 AND e.entity_type = ?2 AND e.entity_id = l.id
                                AND (e.content_key IS NOT NULL OR e.duplicate_of IS NOT NULL))
            """,
            (user_id, LOGBOOK_ENTRY, _json.encode(times).decode()),
        ) if times else []
        return holders_of(contents, state_holders, same_time)

    def live_checksums(self, user_id: str, keys: Collection[EntityKey]) -> dict[EntityKey, str]:
        """One lookup in the live rows' index per key (the keys as in `_load_state`)."""
        if not keys:
            return {}
        rows = self.sql.fetchall(
            """
            SELECT t.key AS entity_type, k.value AS entity_id, s.checksum
            FROM json_each(?1) AS t CROSS JOIN json_each(t.value) AS k
            CROSS JOIN sync_data s
              ON s.user_id = ?2 AND s.entity_type = t.key AND s.entity_id = k.value AND s.deleted_at IS NULL
            """,
            (_ids_by_type(keys), user_id),
        )
        return {(r["entity_type"], r["entity_id"]): r["checksum"] for r in rows}

    def duplicate_keys_of(self, user_id: str, entity_ids: Collection[str]) -> dict[str, set[EntityKey]]:
        if not entity_ids:
            return {}
        rows = self.sql.fetchall(
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

    def raw_versions(self, user_id: str, key: EntityKey) -> list[bytes]:
        rows = self.sql.fetchall(
            """SELECT raw FROM recovery_raw_records
               WHERE user_id = ? AND entity_type = ? AND entity_id = ? AND checksum IS NOT NULL ORDER BY id""",
            (user_id, key[0], key[1]),
        )
        return [r["raw"].encode("utf-8", "surrogatepass") for r in rows]

    def logbook_ids_of_other_users(self, user_id: str, entity_ids: Collection[str]) -> set[str]:
        if not entity_ids:
            return set()
        rows = self.sql.fetchall(
            """SELECT l.id FROM json_each(?) AS k CROSS JOIN logbook_entries l ON l.id = k.value
               WHERE l.user_id <> ?""",
            (_json.encode(sorted(entity_ids)).decode(), user_id),
        )
        return {r["id"] for r in rows}

    # ---- the merge's writes -----------------------------------------------------------------------

    def allocate_seq(self, count: int) -> int:
        """MAX then UPDATE: safe because the write lock is held from BEGIN IMMEDIATE to COMMIT."""
        row = self.sql.fetchone(
            "SELECT MAX((SELECT current_value FROM sync_sequence WHERE id = 1),"
            " COALESCE((SELECT MAX(seq) FROM sync_data), 0)) AS current"
        )
        current = int(row["current"]) if row is not None and row["current"] is not None else 0
        self.sql.execute("UPDATE sync_sequence SET current_value = ? WHERE id = 1", (current + count,))
        return current + 1

    def apply_plan(self, plan: MergePlan, *, user_id: str, device_id: str | None, upload_id: str) -> None:
        conn = self.sql
        now = app_timestamp()
        if plan.sync_writes:
            seq = self.allocate_seq(len(plan.sync_writes))
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
                conn.insert_rows(_INSERT_SYNC, inserts)
            if updates:
                conn.executemany(_UPDATE_SYNC, updates)
            if logbook_upserts:
                conn.insert_rows(_UPSERT_LOGBOOK, logbook_upserts)
            if logbook_deletes:
                conn.executemany(_DELETE_LOGBOOK, logbook_deletes)
        if plan.state_writes:
            conn.insert_rows(
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
        now = app_timestamp()
        if keyed:
            self.sql.insert_rows(
                """INSERT INTO recovery_raw_records (user_id, entity_type, entity_id, raw_sha256, raw, checksum,
                     upload_id, device_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                [(user_id, r.entity_type, r.entity_id, r.raw_sha256, r.raw, r.checksum, upload_id, device_id, now)
                 for r in keyed],
            )
        if receipt is None:
            return
        self.sql.insert_rows(
            """INSERT INTO recovery_device_records (user_id, device_id, entity_type, entity_id)
               VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [(user_id, device_id, entity_type, entity_id) for entity_type, entity_id in receipt.rows],
        )
        self.sql.insert_rows(
            """INSERT INTO recovery_device_counts (user_id, device_id, entity_type, received) VALUES (?, ?, ?, ?)
               ON CONFLICT (user_id, device_id, entity_type) DO UPDATE SET received = received + excluded.received""",
            [(user_id, device_id, entity_type, n) for entity_type, n in receipt.new_per_type.items()],
        )

    def _sent_before(self, user_id: str, device_id: str, keys: list[EntityKey]) -> list[SentBefore]:
        """The kept raw records of these (distinct) keys, whose device, which content, and the device's
        own rows for them: one index lookup a key in each."""
        found = self.sql.fetchall(
            """
            SELECT t.key AS entity_type, i.value AS entity_id, r.raw_sha256, r.device_id IS ?3 AS mine
            FROM json_each(?1) AS t CROSS JOIN json_each(t.value) AS i
            CROSS JOIN recovery_raw_records r
              ON r.user_id = ?2 AND r.entity_type = t.key AND r.entity_id = i.value
            UNION ALL
            SELECT t.key, i.value, NULL, 1
            FROM json_each(?1) AS t CROSS JOIN json_each(t.value) AS i
            CROSS JOIN recovery_device_records d
              ON d.user_id = ?2 AND d.device_id = ?3 AND d.entity_type = t.key AND d.entity_id = i.value
            """,
            (_ids_by_type(keys), user_id, device_id),
        )
        return [SentBefore(r["entity_type"], r["entity_id"], r["raw_sha256"], bool(r["mine"])) for r in found]

    def quarantine(
        self, rows: list[QuarantineRow], *, owner: str, email: str | None, device_id: str | None, upload_id: str
    ) -> None:
        if not rows:
            return
        now = app_timestamp()
        # `owner_known`: the owner was a user when the record was kept. Only records of an unknown owner
        # may later follow their email into an account (see `redrivable_quarantine`).
        self.sql.executemany(
            """INSERT INTO recovery_quarantine (owner, email, entity_type, entity_id, raw, reason, field, detail,
                 upload_id, device_id, quarantined_at, owner_known)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, EXISTS (SELECT 1 FROM users WHERE id = ?))""",
            [(owner, email, q.entity_type, q.entity_id, q.raw, q.reason, q.field, q.detail, upload_id, device_id,
              now, owner) for q in rows],
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
        self.sql.execute(
            """INSERT INTO recovery_ledger (upload_id, user_id, device_id, source, file_name, payload_sha256,
                 received, counts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (upload_id, user_id, device_id, source, file_name, payload_sha256, receipt.received,
             _json.encode(receipt.counts()).decode(), now),
        )
        by_type = receipt.counts_by_type()
        if by_type:
            self.sql.executemany(
                """INSERT INTO recovery_progress (user_id, entity_type, outcome, n) VALUES (?, ?, ?, ?)
                   ON CONFLICT (user_id, entity_type, outcome) DO UPDATE SET n = n + excluded.n""",
                [(user_id, entity_type, outcome, n) for (entity_type, outcome), n in by_type.items()],
            )
        self.sql.execute(
            """INSERT INTO recovery_users (user_id, first_upload_at, last_upload_at) VALUES (?, ?, ?)
               ON CONFLICT (user_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
            (user_id, now, now),
        )
        if device_id is not None:
            self.sql.execute(
                """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (user_id, device_id) DO UPDATE SET last_upload_at = excluded.last_upload_at""",
                (user_id, device_id, now, now),
            )

    def touch_sync_metadata(self, user_id: str, device_id: str | None, sync_token: str) -> None:
        """What the app records on every sync, for a user that exists (the row references users)."""
        self.sql.execute(
            """INSERT INTO sync_metadata (user_id, last_sync_token, last_sync_time, device_count, last_device_id)
               VALUES (?, ?, ?, 1, ?)
               ON CONFLICT (user_id) DO UPDATE SET last_sync_token = excluded.last_sync_token,
                 last_sync_time = excluded.last_sync_time,
                 last_device_id = COALESCE(excluded.last_device_id, sync_metadata.last_device_id)""",
            (user_id, sync_token, app_timestamp(), device_id),
        )

    def record_alias(self, token_sub: str, user: UserRecord, email: str) -> None:
        self.sql.execute(
            """INSERT INTO recovery_user_aliases (token_sub, user_id, email, mapped_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (token_sub) DO UPDATE SET user_id = excluded.user_id, email = excluded.email,
                 mapped_at = excluded.mapped_at""",
            (token_sub, user.id, email, app_timestamp()),
        )

    # ---- idempotency ------------------------------------------------------------------------------

    def claim_idempotency(
        self, user_id: str, route: str, key: str, request_sha256: str, now: float
    ) -> StoredResponse | None:
        """A key is the client's name for one request to one route, so the same key on another route is
        another request. Find-then-insert is atomic here: the write lock is held since BEGIN IMMEDIATE."""
        row = self.sql.fetchone(
            "SELECT request_sha256, response FROM recovery_idempotency_keys"
            " WHERE user_id = ? AND route = ? AND key = ? AND created_at > ?",
            (user_id, route, key, now - IDEMPOTENCY_TTL_SECONDS),
        )
        if row is not None:
            return StoredResponse(row["request_sha256"], row["response"].encode())
        self.sql.execute(
            """INSERT INTO recovery_idempotency_keys (user_id, route, key, request_sha256, response, created_at)
               VALUES (?, ?, ?, ?, '', ?)
               ON CONFLICT (user_id, route, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
                 response = excluded.response, created_at = excluded.created_at""",
            (user_id, route, key, request_sha256, now),
        )
        return None

    def remember_response(self, user_id: str, route: str, key: str, response: bytes, now: float) -> None:
        self.sql.execute(
            "UPDATE recovery_idempotency_keys SET response = ? WHERE user_id = ? AND route = ? AND key = ?",
            (response.decode(), user_id, route, key),
        )
        # Expired keys are the service's own bookkeeping; clearing them keeps the table small.
        self.sql.execute(
            "DELETE FROM recovery_idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_TTL_SECONDS,)
        )

    # ---- devices, review, re-drive ----------------------------------------------------------------

    def declare_device(self, user_id: str, device_id: str, expected: Mapping[str, int], complete: bool) -> None:
        """A mismatch never switches a complete device back to in progress, nor stores counts that are
        not the device's."""
        now = app_timestamp()
        expected_text = json.dumps(dict(expected), sort_keys=True)
        self.sql.execute(
            "INSERT INTO recovery_device_declarations (user_id, device_id, declared_at, expected, matched)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, device_id, now, expected_text, int(complete)),
        )
        if not complete:
            return
        self.sql.execute(
            """INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at, declared_at,
                 expected, complete) VALUES (?, ?, ?, ?, ?, ?, 1)
               ON CONFLICT (user_id, device_id) DO UPDATE SET declared_at = excluded.declared_at,
                 expected = excluded.expected, complete = 1""",
            (user_id, device_id, now, now, now, expected_text),
        )

    def mark_archive_reviewed(self, user_id: str) -> int:
        row = self.sql.fetchone(
            "SELECT COUNT(*) AS n FROM recovery_archive WHERE user_id = ? AND reviewed_at IS NULL", (user_id,)
        )
        self.sql.execute(
            "UPDATE recovery_archive SET reviewed_at = ? WHERE user_id = ? AND reviewed_at IS NULL",
            (app_timestamp(), user_id),
        )
        return int(row["n"]) if row else 0

    def resolve_redriven(self, ids: list[int], upload_id: str) -> int:
        now = app_timestamp()
        return self.sql.executemany(
            "UPDATE recovery_quarantine SET resolved_at = ?, resolved_upload_id = ?"
            " WHERE id = ? AND resolved_at IS NULL",
            [(now, upload_id, i) for i in ids],
        )

    # ---- replay -----------------------------------------------------------------------------------

    def save_checkpoint(
        self, replay_key: str, *, file_name: str, file_sha256: str, records_done: int, finished: bool
    ) -> None:
        # An upsert, never REPLACE: the guarded connection refuses REPLACE outright.
        self.sql.execute(
            """INSERT INTO recovery_replay_checkpoints
                 (replay_key, file_name, file_sha256, records_done, finished, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (replay_key) DO UPDATE SET file_name = excluded.file_name,
                 records_done = excluded.records_done, finished = excluded.finished,
                 updated_at = excluded.updated_at""",
            (replay_key, file_name, file_sha256, records_done, int(finished), app_timestamp()),
        )

    # ---- renormalise ------------------------------------------------------------------------------

    def stored_rows(self, user_id: str) -> list[StoredSyncRow]:
        rows = self.sql.fetchall(
            "SELECT id, entity_type, entity_id, data, checksum, version, deleted_at, device_id FROM sync_data"
            " WHERE user_id = ? ORDER BY seq",
            (user_id,),
        )
        return [StoredSyncRow(r["id"], r["entity_type"], r["entity_id"], r["data"], r["checksum"], r["version"],
                              r["deleted_at"], r["device_id"]) for r in rows]

    def entity_states(self, user_id: str) -> dict[EntityKey, EntityStateRow]:
        rows = self.sql.fetchall(
            "SELECT entity_type, entity_id, updated_ms, deleted_ms, content_key, duplicate_of"
            " FROM recovery_entity_state WHERE user_id = ?",
            (user_id,),
        )
        return {(r["entity_type"], r["entity_id"]): EntityStateRow(
            r["entity_type"], r["entity_id"], r["updated_ms"], r["deleted_ms"], r["content_key"], r["duplicate_of"]
        ) for r in rows}

    def kept_raw_records(self, user_id: str) -> list[KeptRawRecord]:
        rows = self.sql.fetchall(
            "SELECT id, entity_type, entity_id, raw, checksum FROM recovery_raw_records"
            " WHERE user_id = ? AND checksum IS NOT NULL ORDER BY id",
            (user_id,),
        )
        return [KeptRawRecord(r["id"], r["entity_type"], r["entity_id"], r["raw"], r["checksum"]) for r in rows]

    def content_key_of(self, user_id: str, key: EntityKey) -> str | None:
        row = self.sql.fetchone(
            """SELECT e.content_key, s.data FROM (SELECT ?1 AS u, ?2 AS t, ?3 AS i) AS k
               LEFT JOIN recovery_entity_state e ON e.user_id = k.u AND e.entity_type = k.t AND e.entity_id = k.i
               LEFT JOIN sync_data s
                 ON s.user_id = k.u AND s.entity_type = k.t AND s.entity_id = k.i AND s.deleted_at IS NULL""",
            (user_id, *key),
        )
        return content_key_from(row, key)

    def last_device_of(self, user_id: str, key: EntityKey) -> str | None:
        row = self.sql.fetchone(
            "SELECT device_id FROM recovery_raw_records WHERE user_id = ? AND entity_type = ? AND entity_id = ?"
            " ORDER BY id DESC LIMIT 1",
            (user_id, *key),
        )
        return row["device_id"] if row is not None else None

    def record_moves(self, user_id: str, moves: list[tuple[str, str, str]]) -> None:
        self.sql.executemany(
            "INSERT INTO recovery_entity_state (user_id, entity_type, entity_id, duplicate_of) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE SET duplicate_of = excluded.duplicate_of",
            [(user_id, entity_type, old_id, new_id) for entity_type, old_id, new_id in moves],
        )

    def update_raw_checksums(self, checksums: Mapping[int, str]) -> None:
        self.sql.executemany(
            "UPDATE recovery_raw_records SET checksum = ? WHERE id = ?",
            [(checksum, row_id) for row_id, checksum in checksums.items()],
        )

    # ---- users (the CLI) --------------------------------------------------------------------------

    def add_user(self, user: NewUser, *, if_absent: bool = False) -> bool:
        sql = "INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)"
        try:
            inserted = self.sql.executemany(sql + (" ON CONFLICT DO NOTHING" if if_absent else ""),
                                            [(user.id, user.email, user.display_name, user.role)])
        except sqlite3.IntegrityError as error:
            raise UserExists(str(error)) from error
        return inserted > 0
