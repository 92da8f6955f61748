"""The app's schema (CONTRACT section 2) and the service's own `recovery_` tables.

The service's tables are the numbered migrations in `migrations/`; what is here besides the app schema is
how databases made before migrations existed are brought to migration 0001 (`adopt_unversioned`).
The app tables are created only when missing, so on an existing app database nothing of the app's
changes. The service's tables never reference `users`: a foreign key with ON DELETE CASCADE to an app
table is exactly how the history was lost, and the recovery records must outlive any future rebuild.
"""

from __future__ import annotations

import re
from importlib import resources

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

# The service's own tables as the last release before numbered migrations created them on every start
# (IF NOT EXISTS): migration 0001's text. Kept for the tests that make a database of that release.
SERVICE_SCHEMA = re.sub(
    r"^CREATE (UNIQUE )?(TABLE|INDEX) ",
    lambda m: f"CREATE {m[1] or ''}{m[2]} IF NOT EXISTS ",
    resources.files("service.store.sqlite.migrations").joinpath("0001_recovery_tables.sql").read_text("utf-8"),
    flags=re.MULTILINE,
)

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
