"""Fixtures for the migration linter tests: migration files in tmp_path and a `run()` wrapper."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.migrations_lint import add_arguments, run

# The app's tables as the first migration created them (CONTRACT section 2, trimmed to what matters).
APP_SCHEMA = """\
-- 0001: the app's schema
CREATE TABLE users (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  display_name TEXT,
  auth_provider TEXT DEFAULT 'magic_link' CHECK (auth_provider IN ('magic_link', 'google')),
  role TEXT DEFAULT 'user' CHECK (role IN ('user', 'teacher', 'admin'))
);
CREATE TABLE sync_data (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  data TEXT NOT NULL,
  updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  UNIQUE (user_id, entity_type, entity_id)
);
CREATE TRIGGER sync_data_touch AFTER UPDATE ON sync_data
BEGIN
  UPDATE sync_data SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
END;
CREATE TABLE logbook_entries (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  timestamp INTEGER NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('practice', 'performance', 'lesson')),
  instrument TEXT NOT NULL CHECK (instrument IN ('piano', 'guitar'))
);
CREATE TABLE sync_metadata (
  user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  last_sync_token TEXT
);
CREATE TABLE sync_sequence (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  current_value INTEGER NOT NULL DEFAULT 0
);
"""

# The incident: the SQLite-documented table rebuild of `users`.
REBUILD_USERS = """\
CREATE TABLE users_new (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  display_name TEXT,
  auth_provider TEXT DEFAULT 'magic_link' CHECK (auth_provider IN ('magic_link', 'google')),
  role TEXT DEFAULT 'user' CHECK (role IN ('user', 'teacher', 'admin')),
  google_id TEXT
);
INSERT INTO users_new (id, email, display_name, auth_provider, role)
  SELECT id, email, display_name, auth_provider, role FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
"""


@dataclass(frozen=True)
class LintRun:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def findings(self, rule: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.json()["findings"]
        return [f for f in found if rule is None or f["rule"] == rule]


@pytest.fixture
def app_schema() -> str:
    return APP_SCHEMA


@pytest.fixture
def rebuild_users() -> str:
    return REBUILD_USERS


@pytest.fixture
def write_migrations(tmp_path: Path) -> Callable[..., Path]:
    """Write {file name: SQL} into a migrations directory (default tmp_path/migrations) and return it."""

    def write(files: dict[str, str], directory: str = "migrations") -> Path:
        target = tmp_path / directory
        target.mkdir(exist_ok=True)
        for name, sql in files.items():
            (target / name).write_text(sql, encoding="utf-8")
        return target

    return write


@pytest.fixture
def lint(capsys: pytest.CaptureFixture[str]) -> Callable[..., LintRun]:
    """Call run() as the CLI would, with a Namespace from add_arguments' parser."""

    def lint_paths(
        *paths: Path | str, output: str = "json", simulate: bool = False, baseline: Path | None = None
    ) -> LintRun:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        argv = [str(path) for path in paths] + ["--format", output] + (["--simulate"] if simulate else [])
        argv += ["--baseline", str(baseline)] if baseline else []
        code = run(parser.parse_args(argv))
        captured = capsys.readouterr()
        return LintRun(code, captured.out, captured.err)

    return lint_paths
