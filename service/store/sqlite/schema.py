"""The app's schema (CONTRACT section 2) and the service's own `recovery_` tables.

The app tables are created only when missing, so on an existing app database nothing of the app's
changes. The service's tables never reference `users`: a foreign key with ON DELETE CASCADE to an app
table is exactly how the history was lost, and the recovery records must outlive any future rebuild.
"""

from __future__ import annotations

APP_TABLES: frozenset[str] = frozenset(
    {"users", "sync_data", "sync_sequence", "logbook_entries", "sync_metadata"}
)

APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  display_name TEXT,
  primary_instrument TEXT DEFAULT 'piano',
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  auth_provider TEXT DEFAULT 'magic_link' CHECK (auth_provider IN ('magic_link', 'google')),
  google_id TEXT,
  last_login_at TIMESTAMP,
  login_count INTEGER DEFAULT 0,
  role TEXT DEFAULT 'user' CHECK (role IN ('user', 'teacher', 'admin'))
);

CREATE TABLE IF NOT EXISTS sync_data (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  data TEXT NOT NULL,
  checksum TEXT NOT NULL,
  version INTEGER DEFAULT 1,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  deleted_at TIMESTAMP,
  device_id TEXT,
  seq INTEGER,
  UNIQUE (user_id, entity_type, entity_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_sync_data_live
  ON sync_data (user_id, entity_type, entity_id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_data_checksum
  ON sync_data (user_id, entity_type, checksum) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_sync_data_seq ON sync_data (seq);
CREATE INDEX IF NOT EXISTS idx_sync_data_user_seq ON sync_data (user_id, entity_type, seq);
CREATE TRIGGER IF NOT EXISTS sync_data_touch_updated_at AFTER UPDATE ON sync_data
BEGIN
  UPDATE sync_data SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
END;

CREATE TABLE IF NOT EXISTS sync_sequence (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  current_value INTEGER NOT NULL DEFAULT 0
);
INSERT INTO sync_sequence (id, current_value)
  SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM sync_sequence WHERE id = 1);

CREATE TABLE IF NOT EXISTS logbook_entries (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  timestamp INTEGER NOT NULL,
  duration INTEGER NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('practice', 'performance', 'lesson', 'rehearsal', 'technique')),
  instrument TEXT NOT NULL CHECK (instrument IN ('piano', 'guitar')),
  pieces TEXT NOT NULL DEFAULT '[]',
  techniques TEXT NOT NULL DEFAULT '[]',
  goal_ids TEXT NOT NULL DEFAULT '[]',
  notes TEXT,
  mood TEXT CHECK (mood IN ('frustrated', 'neutral', 'satisfied', 'excited')),
  tags TEXT NOT NULL DEFAULT '[]',
  session_id TEXT,
  metadata TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  sync_version INTEGER DEFAULT 1,
  checksum TEXT,
  deleted_at DATETIME,
  device_id TEXT
);
CREATE INDEX IF NOT EXISTS idx_logbook_entries_user ON logbook_entries (user_id, timestamp);

CREATE TABLE IF NOT EXISTS sync_metadata (
  user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  last_sync_token TEXT,
  last_sync_time TIMESTAMP,
  device_count INTEGER DEFAULT 1,
  last_device_id TEXT,
  sync_conflict_count INTEGER DEFAULT 0
);
"""

SERVICE_SCHEMA = """
-- Merge bookkeeping per entity key: the client's last-modified time of the stored version, and
-- tombstones, including those for rows that do not exist yet (CONTRACT section 8).
CREATE TABLE IF NOT EXISTS recovery_entity_state (
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  updated_ms INTEGER,
  deleted_ms INTEGER,
  content_key TEXT,
  duplicate_of TEXT,
  PRIMARY KEY (user_id, entity_type, entity_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_recovery_entity_state_content
  ON recovery_entity_state (user_id, content_key) WHERE content_key IS NOT NULL;
-- The content duplicates of an entry, found when it is deleted or edited to other content.
CREATE INDEX IF NOT EXISTS idx_recovery_entity_state_duplicate
  ON recovery_entity_state (user_id, entity_type, duplicate_of) WHERE duplicate_of IS NOT NULL;

-- Every distinct raw record ever received, verbatim, once per distinct byte content. Rows are large
-- (the record itself), so they are appended in arrival order; the narrow unique index finds them by key.
CREATE TABLE IF NOT EXISTS recovery_raw_records (
  id INTEGER PRIMARY KEY,
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  raw_sha256 TEXT NOT NULL,
  raw TEXT NOT NULL,
  -- The checksum this raw record normalised to (NULL for deletions): a byte-identical re-upload of a
  -- record whose stored row still has this checksum is a duplicate without normalising it again.
  checksum TEXT,
  upload_id TEXT NOT NULL,
  device_id TEXT,
  received_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_recovery_raw_records_key
  ON recovery_raw_records (user_id, entity_type, entity_id, raw_sha256);

-- Versions that lost a merge (the stored one replaced by a newer edit, or an older incoming copy).
CREATE TABLE IF NOT EXISTS recovery_archive (
  id INTEGER PRIMARY KEY,
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  data TEXT NOT NULL,
  checksum TEXT NOT NULL,
  updated_ms INTEGER,
  reason TEXT NOT NULL,
  upload_id TEXT NOT NULL,
  archived_at TEXT NOT NULL,
  reviewed_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_recovery_archive_user ON recovery_archive (user_id, reviewed_at);
-- A version already archived for a key is not archived again.
CREATE INDEX IF NOT EXISTS idx_recovery_archive_key ON recovery_archive (user_id, entity_type, entity_id, checksum);

-- Records that cannot go in yet, kept verbatim with the reason. Re-driven after the cause is fixed.
CREATE TABLE IF NOT EXISTS recovery_quarantine (
  id INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  email TEXT,
  entity_type TEXT NOT NULL,
  entity_id TEXT,
  raw TEXT NOT NULL,
  reason TEXT NOT NULL,
  field TEXT,
  detail TEXT NOT NULL DEFAULT '',
  upload_id TEXT NOT NULL,
  device_id TEXT,
  quarantined_at TEXT NOT NULL,
  resolved_at TEXT,
  resolved_upload_id TEXT,
  -- 1 when `owner` was a user when the record was kept, 0 for an unknown owner (a token subject or a
  -- replay's claim nobody matched): only those may follow their email into an account on re-drive.
  owner_known INTEGER
);
CREATE INDEX IF NOT EXISTS idx_recovery_quarantine_owner ON recovery_quarantine (owner, resolved_at, id);
CREATE INDEX IF NOT EXISTS idx_recovery_quarantine_email ON recovery_quarantine (email) WHERE resolved_at IS NULL;

-- A token whose `sub` is not in users but whose email is: which user it was mapped to.
CREATE TABLE IF NOT EXISTS recovery_user_aliases (
  token_sub TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  email TEXT NOT NULL,
  mapped_at TEXT NOT NULL
);

-- A stored answer per user, route and idempotency key (a key names one request to one route).
CREATE TABLE IF NOT EXISTS recovery_idempotency_keys (
  user_id TEXT NOT NULL,
  route TEXT NOT NULL,
  key TEXT NOT NULL,
  request_sha256 TEXT NOT NULL,
  response TEXT NOT NULL,
  created_at REAL NOT NULL,
  PRIMARY KEY (user_id, route, key)
) WITHOUT ROWID;

-- The service's own settings of this database; writing it on every start proves the file is writable.
CREATE TABLE IF NOT EXISTS recovery_service (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- Append-only: one row per upload of any source.
CREATE TABLE IF NOT EXISTS recovery_ledger (
  upload_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  device_id TEXT,
  source TEXT NOT NULL,
  file_name TEXT,
  payload_sha256 TEXT NOT NULL,
  received INTEGER NOT NULL,
  counts TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_recovery_ledger_user ON recovery_ledger (user_id, created_at);
CREATE INDEX IF NOT EXISTS idx_recovery_ledger_time ON recovery_ledger (created_at);
-- The support page's uploads and records per hour, read from the index alone.
CREATE INDEX IF NOT EXISTS idx_recovery_ledger_time_received ON recovery_ledger (created_at, received);

-- Running totals per user, entity type and outcome (the ledger is the history, this the summary).
CREATE TABLE IF NOT EXISTS recovery_progress (
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  outcome TEXT NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (user_id, entity_type, outcome)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS recovery_users (
  user_id TEXT PRIMARY KEY,
  first_upload_at TEXT NOT NULL,
  last_upload_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS recovery_devices (
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  first_upload_at TEXT NOT NULL,
  last_upload_at TEXT NOT NULL,
  declared_at TEXT,
  expected TEXT,
  complete INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- Every declaration a device made, matching or not (append-only): a declaration that does not match
-- changes nothing in recovery_devices, so this is its only trace.
CREATE TABLE IF NOT EXISTS recovery_device_declarations (
  id INTEGER PRIMARY KEY,
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  declared_at TEXT NOT NULL,
  expected TEXT NOT NULL,
  matched INTEGER NOT NULL
);
-- A user's latest declaration per device, for the support page.
CREATE INDEX IF NOT EXISTS idx_recovery_device_declarations_user
  ON recovery_device_declarations (user_id, device_id, id);

-- Distinct records each device has sent, to check a device's declaration of completeness.
CREATE TABLE IF NOT EXISTS recovery_device_records (
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  PRIMARY KEY (user_id, device_id, entity_type, entity_id)
) WITHOUT ROWID;

-- How many of those distinct records each device has sent, per entity type: kept with them, so support
-- reads a device's figures in one row, however long the user's history.
CREATE TABLE IF NOT EXISTS recovery_device_counts (
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  received INTEGER NOT NULL,
  PRIMARY KEY (user_id, device_id, entity_type)
) WITHOUT ROWID;

-- Replay checkpoints, written in the same transaction as the batch they cover.
CREATE TABLE IF NOT EXISTS recovery_replay_checkpoints (
  replay_key TEXT PRIMARY KEY,
  file_name TEXT NOT NULL,
  file_sha256 TEXT NOT NULL,
  records_done INTEGER NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL
);
"""

# Columns added after the first release: (table, column, its type, what fills it on an existing database).
ADDED_COLUMNS: list[tuple[str, str, str, str]] = [
    (
        "recovery_quarantine", "owner_known", "INTEGER",
        # The owner of a record kept by the previous version was known if it is a user's id now.
        "UPDATE recovery_quarantine SET owner_known = EXISTS (SELECT 1 FROM users u WHERE u.id = owner)",
    ),
]

# Idempotency keys of the previous version, unscoped (user, key): copied to the route they were used on,
# told apart by their stored answer (a push's has `success`), so retries after an upgrade still replay.
LEGACY_IDEMPOTENCY_TABLE = "recovery_idempotency"
LEGACY_IDEMPOTENCY_COPY = """
INSERT INTO recovery_idempotency_keys (user_id, route, key, request_sha256, response, created_at)
  SELECT user_id,
         CASE WHEN json_valid(response) AND json_type(response, '$.success') IS NOT NULL
              THEN 'POST /api/sync/push' ELSE 'POST /v1/recovery/uploads' END,
         key, request_sha256, response, created_at
  FROM recovery_idempotency WHERE true
  ON CONFLICT DO NOTHING
"""

# Tables added after the first release, with what fills them from the tables they summarise when an
# existing database gets them.
BACKFILLS: dict[str, str] = {
    "recovery_device_counts": """
INSERT INTO recovery_device_counts (user_id, device_id, entity_type, received)
  SELECT user_id, device_id, entity_type, COUNT(*) FROM recovery_device_records
  GROUP BY user_id, device_id, entity_type
""",
}
