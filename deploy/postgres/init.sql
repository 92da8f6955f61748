-- Run as a PostgreSQL superuser: psql -v ON_ERROR_STOP=1 -f this.sql
CREATE ROLE mirubato_app NOLOGIN;
CREATE ROLE resync LOGIN;
-- C locale: ids sort and LOWER(email) matches byte by byte, as on SQLite (D1).
CREATE DATABASE mirubato OWNER mirubato_app ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\connect mirubato
REVOKE ALL ON DATABASE mirubato FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE mirubato TO resync;
-- The app's tables, owned by the owner role (load the app's data into them as that role).
SET ROLE mirubato_app;
-- The app's tables (CONTRACT.md section 2) in PostgreSQL's dialect, run by the role that OWNS them (the
-- app's), never by the service: the service's role gets SELECT, INSERT and UPDATE on them only (setup.py).
-- Times stay TEXT in the forms the app writes on D1 (`YYYY-MM-DD HH:MM:SS` UTC, ISO-Z for deleted_at), so
-- what export-d1 writes back is byte for byte what was stored; integers are BIGINT, as SQLite's are 64-bit.
-- The database is created with the C locale: text compares byte by byte and LOWER changes ASCII only, as in
-- SQLite (D1), so ids sort and emails match the same way on both engines.

CREATE FUNCTION app_utc_now_text() RETURNS TEXT LANGUAGE sql STABLE
  AS $$ SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') $$;

CREATE TABLE users (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  display_name TEXT,
  primary_instrument TEXT DEFAULT 'piano',
  created_at TEXT DEFAULT app_utc_now_text(),
  updated_at TEXT DEFAULT app_utc_now_text(),
  auth_provider TEXT DEFAULT 'magic_link' CHECK (auth_provider IN ('magic_link', 'google')),
  google_id TEXT,
  last_login_at TEXT,
  login_count BIGINT DEFAULT 0,
  role TEXT DEFAULT 'user' CHECK (role IN ('user', 'teacher', 'admin'))
);

CREATE TABLE sync_data (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  data TEXT NOT NULL,
  checksum TEXT NOT NULL,
  version BIGINT DEFAULT 1,
  created_at TEXT DEFAULT app_utc_now_text(),
  updated_at TEXT DEFAULT app_utc_now_text(),
  deleted_at TEXT,
  device_id TEXT,
  seq BIGINT,
  UNIQUE (user_id, entity_type, entity_id)
);
CREATE UNIQUE INDEX idx_sync_data_live ON sync_data (user_id, entity_type, entity_id) WHERE deleted_at IS NULL;
CREATE INDEX idx_sync_data_checksum ON sync_data (user_id, entity_type, checksum) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX idx_sync_data_seq ON sync_data (seq);
CREATE INDEX idx_sync_data_user_seq ON sync_data (user_id, entity_type, seq);

-- SQLite's AFTER UPDATE trigger that rewrites updated_at, as PostgreSQL says it: before the row is written.
CREATE FUNCTION sync_data_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := app_utc_now_text();
  RETURN NEW;
END $$;
CREATE TRIGGER sync_data_touch_updated_at BEFORE UPDATE ON sync_data
  FOR EACH ROW EXECUTE FUNCTION sync_data_touch_updated_at();

CREATE TABLE sync_sequence (
  id BIGINT PRIMARY KEY CHECK (id = 1),
  current_value BIGINT NOT NULL DEFAULT 0
);
INSERT INTO sync_sequence (id, current_value) VALUES (1, 0);

CREATE TABLE logbook_entries (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  timestamp BIGINT NOT NULL,
  duration BIGINT NOT NULL,
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
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  sync_version BIGINT DEFAULT 1,
  checksum TEXT,
  deleted_at TEXT,
  device_id TEXT
);
CREATE INDEX idx_logbook_entries_user ON logbook_entries (user_id, timestamp);

CREATE TABLE sync_metadata (
  user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  last_sync_token TEXT,
  last_sync_time TEXT,
  device_count BIGINT DEFAULT 1,
  last_device_id TEXT,
  sync_conflict_count BIGINT DEFAULT 0
);
RESET ROLE;
-- The service reads and writes the app's tables, never drops, deletes, truncates or alters them.
GRANT USAGE ON SCHEMA public TO resync;
GRANT SELECT, INSERT, UPDATE ON public.users, public.sync_data, public.sync_sequence, public.logbook_entries, public.sync_metadata TO resync;
-- Its own recovery_ tables (created by its numbered migrations, owned by it) go in the same schema.
GRANT CREATE ON SCHEMA public TO resync;
