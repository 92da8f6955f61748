-- Migration 0001: the service's own tables, as the last release before numbered migrations had them.
-- A database made before migrations existed is brought to this version by `adopt_unversioned`
-- (service/store/sqlite/migrations/__init__.py), then marked 0001. Migrations only ever create or change
-- `recovery_` tables: the app's tables are the app's (tests/store/test_migrations.py checks every file).
-- Merge bookkeeping per entity key: the client's last-modified time of the stored version, and
-- tombstones, including those for rows that do not exist yet (CONTRACT section 8).
CREATE TABLE recovery_entity_state (
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  updated_ms INTEGER,
  deleted_ms INTEGER,
  content_key TEXT,
  duplicate_of TEXT,
  PRIMARY KEY (user_id, entity_type, entity_id)
) WITHOUT ROWID;
CREATE INDEX idx_recovery_entity_state_content
  ON recovery_entity_state (user_id, content_key) WHERE content_key IS NOT NULL;
-- The content duplicates of an entry, found when it is deleted or edited to other content.
CREATE INDEX idx_recovery_entity_state_duplicate
  ON recovery_entity_state (user_id, entity_type, duplicate_of) WHERE duplicate_of IS NOT NULL;

-- Every distinct raw record ever received, verbatim, once per distinct byte content. Rows are large
-- (the record itself), so they are appended in arrival order; the narrow unique index finds them by key.
CREATE TABLE recovery_raw_records (
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
CREATE UNIQUE INDEX idx_recovery_raw_records_key
  ON recovery_raw_records (user_id, entity_type, entity_id, raw_sha256);

-- Versions that lost a merge (the stored one replaced by a newer edit, or an older incoming copy).
CREATE TABLE recovery_archive (
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
CREATE INDEX idx_recovery_archive_user ON recovery_archive (user_id, reviewed_at);
-- A version already archived for a key is not archived again.
CREATE INDEX idx_recovery_archive_key ON recovery_archive (user_id, entity_type, entity_id, checksum);

-- Records that cannot go in yet, kept verbatim with the reason. Re-driven after the cause is fixed.
CREATE TABLE recovery_quarantine (
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
CREATE INDEX idx_recovery_quarantine_owner ON recovery_quarantine (owner, resolved_at, id);
CREATE INDEX idx_recovery_quarantine_email ON recovery_quarantine (email) WHERE resolved_at IS NULL;

-- A token whose `sub` is not in users but whose email is: which user it was mapped to.
CREATE TABLE recovery_user_aliases (
  token_sub TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  email TEXT NOT NULL,
  mapped_at TEXT NOT NULL
);

-- A stored answer per user, route and idempotency key (a key names one request to one route).
CREATE TABLE recovery_idempotency_keys (
  user_id TEXT NOT NULL,
  route TEXT NOT NULL,
  key TEXT NOT NULL,
  request_sha256 TEXT NOT NULL,
  response TEXT NOT NULL,
  created_at REAL NOT NULL,
  PRIMARY KEY (user_id, route, key)
) WITHOUT ROWID;

-- The service's own settings of this database; writing it on every start proves the file is writable.
CREATE TABLE recovery_service (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- Append-only: one row per upload of any source.
CREATE TABLE recovery_ledger (
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
CREATE INDEX idx_recovery_ledger_user ON recovery_ledger (user_id, created_at);
CREATE INDEX idx_recovery_ledger_time ON recovery_ledger (created_at);
-- The support page's uploads and records per hour, read from the index alone.
CREATE INDEX idx_recovery_ledger_time_received ON recovery_ledger (created_at, received);

-- Running totals per user, entity type and outcome (the ledger is the history, this the summary).
CREATE TABLE recovery_progress (
  user_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  outcome TEXT NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (user_id, entity_type, outcome)
) WITHOUT ROWID;

CREATE TABLE recovery_users (
  user_id TEXT PRIMARY KEY,
  first_upload_at TEXT NOT NULL,
  last_upload_at TEXT NOT NULL
);

CREATE TABLE recovery_devices (
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
CREATE TABLE recovery_device_declarations (
  id INTEGER PRIMARY KEY,
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  declared_at TEXT NOT NULL,
  expected TEXT NOT NULL,
  matched INTEGER NOT NULL
);
-- A user's latest declaration per device, for the support page.
CREATE INDEX idx_recovery_device_declarations_user
  ON recovery_device_declarations (user_id, device_id, id);

-- Distinct records each device has sent, to check a device's declaration of completeness.
CREATE TABLE recovery_device_records (
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  PRIMARY KEY (user_id, device_id, entity_type, entity_id)
) WITHOUT ROWID;

-- How many of those distinct records each device has sent, per entity type: kept with them, so support
-- reads a device's figures in one row, however long the user's history.
CREATE TABLE recovery_device_counts (
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  entity_type TEXT NOT NULL,
  received INTEGER NOT NULL,
  PRIMARY KEY (user_id, device_id, entity_type)
) WITHOUT ROWID;

-- Replay checkpoints, written in the same transaction as the batch they cover.
CREATE TABLE recovery_replay_checkpoints (
  replay_key TEXT PRIMARY KEY,
  file_name TEXT NOT NULL,
  file_sha256 TEXT NOT NULL,
  records_done INTEGER NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL
);
