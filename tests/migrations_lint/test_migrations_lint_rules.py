"""The lint rules, run through run() on migration files in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.migrations_lint.sql_text import split_statements

INCIDENT_CHILDREN = {"sync_data", "logbook_entries", "sync_metadata"}

Lint = Callable[..., Any]
Write = Callable[..., Path]


def line_of(sql: str, text: str) -> int:
    return next(number for number, line in enumerate(sql.splitlines(), 1) if text in line)


def child_tables(finding: dict[str, Any]) -> set[str]:
    return {child["table"] for child in finding["children"]}


def test_incident_rebuild_of_users_is_one_error_at_the_drop_naming_the_children(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_rebuild_users.sql": rebuild_users})

    result = lint(migrations)

    assert result.code == 1
    [finding] = result.findings()
    assert finding["rule"] == "rebuild-referenced-parent"
    assert finding["severity"] == "error"
    assert finding["file"].endswith("0002_rebuild_users.sql")
    assert finding["line"] == line_of(rebuild_users, "DROP TABLE users")
    assert finding["statement"] == "DROP TABLE users"
    assert finding["table"] == "users"
    assert child_tables(finding) == INCIDENT_CHILDREN
    assert {child["on_delete"] for child in finding["children"]} == {"CASCADE"}
    assert "users_new renamed to users" in finding["message"]
    assert "ALTER TABLE users ADD COLUMN" in finding["safe_pattern"]


def test_incident_rebuild_text_output_names_children_and_safe_pattern(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_rebuild_users.sql": rebuild_users})

    result = lint(migrations, output="text")

    drop_line = line_of(rebuild_users, "DROP TABLE users")
    assert f"0002_rebuild_users.sql:{drop_line}: error rebuild-referenced-parent: " in result.out
    assert "children: sync_data (ON DELETE CASCADE), logbook_entries (ON DELETE CASCADE)" in result.out
    assert "safe pattern: Change users in place" in result.out
    assert result.out.rstrip().endswith("1 error and 0 warnings in 2 migration files.")


def test_foreign_keys_off_around_the_rebuild_is_flagged_with_the_rebuild(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    wrapped = f"PRAGMA foreign_keys=OFF;\n{rebuild_users}PRAGMA foreign_keys=ON;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0003_fk_off.sql": wrapped})

    result = lint(migrations)

    assert result.code == 1
    [pragma] = result.findings("foreign-keys-pragma-ineffective")
    assert (pragma["severity"], pragma["line"]) == ("error", 1)
    assert child_tables(pragma) == INCIDENT_CHILDREN
    assert "foreign_keys=OFF" in pragma["message"]
    [rebuild] = result.findings("rebuild-referenced-parent")
    assert rebuild["line"] == line_of(wrapped, "DROP TABLE users")


def test_defer_foreign_keys_does_not_stop_the_cascade_either(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    migration = "PRAGMA defer_foreign_keys = true;\nDELETE FROM users;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_defer.sql": migration})

    result = lint(migrations)

    [pragma] = result.findings("foreign-keys-pragma-ineffective")
    assert pragma["severity"] == "error"
    assert "cascade" in pragma["message"].lower()
    assert result.findings("delete-all-from-referenced-parent")


def test_foreign_keys_off_guarding_nothing_is_only_a_warning(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    migration = "PRAGMA foreign_keys = 0;\nALTER TABLE users ADD COLUMN google_id TEXT;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_harmless.sql": migration})

    result = lint(migrations)

    assert result.code == 0
    [pragma] = result.findings()
    assert (pragma["rule"], pragma["severity"]) == ("foreign-keys-pragma-ineffective", "warning")


def test_replace_into_users_is_an_error_and_the_upsert_is_not(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    migration = (
        "INSERT OR REPLACE INTO users (id, email) VALUES ('user_a', 'a@example.com');\n"
        "REPLACE INTO users (id, email) VALUES ('user_b', 'b@example.com');\n"
        "INSERT INTO users (id, email) VALUES ('user_c', 'c@example.com')\n"
        "  ON CONFLICT(id) DO UPDATE SET email = excluded.email;\n"
    )
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_seed_admin.sql": migration})

    result = lint(migrations)

    assert result.code == 1
    findings = result.findings()
    assert [(f["rule"], f["line"]) for f in findings] == [
        ("replace-into-referenced-parent", 1),
        ("replace-into-referenced-parent", 2),
    ]
    assert all(child_tables(f) == INCIDENT_CHILDREN for f in findings)
    assert "ON CONFLICT(id) DO UPDATE" in findings[0]["safe_pattern"]


def test_delete_from_users_without_where_is_an_error(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_reset.sql": "DELETE FROM users;\n"})

    result = lint(migrations)

    assert result.code == 1
    [finding] = result.findings()
    assert finding["rule"] == "delete-all-from-referenced-parent"
    assert child_tables(finding) == INCIDENT_CHILDREN


def test_delete_from_users_with_where_is_no_finding(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    migration = "DELETE FROM users WHERE email = 'test@example.com';\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_cleanup.sql": migration})

    result = lint(migrations)

    assert (result.code, result.findings()) == (0, [])


def test_dropping_a_table_whose_rows_were_never_copied_is_a_warning(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_drop.sql": "DROP TABLE sync_sequence;\n"})

    result = lint(migrations)

    assert result.code == 0
    [finding] = result.findings()
    assert (finding["rule"], finding["severity"], finding["table"]) == (
        "drop-without-copy",
        "warning",
        "sync_sequence",
    )
    assert "sync_sequence_archive" in finding["safe_pattern"]


def test_dropping_a_copied_leaf_table_is_no_finding(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    migration = (
        "CREATE TABLE sync_sequence_v2 (id INTEGER PRIMARY KEY, current_value INTEGER NOT NULL DEFAULT 0);\n"
        "INSERT INTO sync_sequence_v2 SELECT id, current_value FROM sync_sequence;\n"
        "DROP TABLE sync_sequence;\n"
    )
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_leaf.sql": migration})

    assert lint(migrations).findings() == []


def test_dropping_a_referenced_parent_without_copy_is_both_findings(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_drop.sql": "DROP TABLE users;\n"})

    result = lint(migrations)

    assert [(f["rule"], f["severity"]) for f in result.findings()] == [
        ("drop-referenced-parent", "error"),
        ("drop-without-copy", "warning"),
        ("dangling-foreign-key", "error"),
    ]


def test_cascade_is_followed_to_grandchildren(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    plans = (
        "CREATE TABLE practice_plans (id TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE);\n"
        "CREATE TABLE plan_occurrences (id TEXT PRIMARY KEY,"
        " plan_id TEXT REFERENCES practice_plans(id) ON DELETE CASCADE);\n"
    )
    migrations = write_migrations(
        {"0001_init.sql": app_schema, "0002_plans.sql": plans, "0003_reset.sql": "DELETE FROM users;\n"}
    )

    [finding] = lint(migrations).findings()

    assert {"table": "plan_occurrences", "on_delete": "CASCADE", "via": "practice_plans"} in finding["children"]


def test_rename_first_rebuild_follows_the_children_to_the_old_name(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    # Since SQLite 3.26 the rename re-points sync_data & co at users_old, so dropping it cascades.
    migration = (
        "ALTER TABLE users RENAME TO users_old;\n"
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, display_name TEXT,\n"
        "  auth_provider TEXT, role TEXT);\n"
        "INSERT INTO users SELECT * FROM users_old;\n"
        "DROP TABLE users_old;\n"
    )
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_rename_first.sql": migration})

    result = lint(migrations)

    [rebuild] = result.findings("rebuild-referenced-parent")
    assert (rebuild["line"], rebuild["table"]) == (5, "users_old")
    assert child_tables(rebuild) == INCIDENT_CHILDREN
    assert "users renamed to users_old at line 1" in rebuild["message"]
    [dangling] = result.findings("dangling-foreign-key")
    assert "users_old" in dangling["message"]


def test_safe_migrations_produce_no_finding(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    safe = """\
ALTER TABLE users ADD COLUMN google_id TEXT;
ALTER TABLE users ADD COLUMN login_count INTEGER DEFAULT 0;
CREATE INDEX idx_sync_data_user ON sync_data (user_id, entity_type);
CREATE TABLE recovery_uploads (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, raw TEXT NOT NULL);
INSERT INTO users (id, email) VALUES ('user_admin', 'admin@example.com')
  ON CONFLICT(id) DO UPDATE SET email = excluded.email;
INSERT INTO sync_sequence (id, current_value) VALUES (1, 0) ON CONFLICT(id) DO NOTHING;
"""
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_safe.sql": safe})

    result = lint(migrations, output="text")

    assert result.code == 0
    assert result.out.strip() == "No findings in 2 migration files."


def test_data_changes_needing_production_rows_do_not_stop_the_lint(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    # The scratch database has no users, so this insert fails its foreign key there; in production it
    # would not. The lint skips it instead of calling the migration unreadable.
    migration = "INSERT INTO sync_metadata (user_id) VALUES ('user_existing_in_production');\nDELETE FROM users;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_data.sql": migration})

    result = lint(migrations)

    assert result.code == 1
    assert [(f["rule"], f["line"]) for f in result.findings()] == [("delete-all-from-referenced-parent", 2)]


def test_begin_commit_in_a_migration_is_a_warning(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    migration = "BEGIN TRANSACTION;\nALTER TABLE users ADD COLUMN google_id TEXT;\nCOMMIT;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_tx.sql": migration})

    result = lint(migrations)

    assert result.code == 0
    assert [(f["rule"], f["line"]) for f in result.findings()] == [
        ("transaction-statement", 1),
        ("transaction-statement", 3),
    ]


def test_statements_split_on_semicolons_sqlite_would_end_them_at() -> None:
    text = """\
-- a comment; with a semicolon
CREATE TABLE notes (body TEXT DEFAULT 'a;b'); /* trailing; comment */ INSERT INTO notes VALUES ('x;y');

CREATE TRIGGER notes_touch AFTER INSERT ON notes
BEGIN
  UPDATE notes SET body = body || ';'; -- inside the trigger
END;
SELECT 1
"""
    statements = split_statements(text)

    assert [(s.line, s.code.split()[0]) for s in statements] == [
        (2, "CREATE"),
        (2, "INSERT"),
        (4, "CREATE"),
        (8, "SELECT"),
    ]
    assert statements[2].sql.endswith("END;")
    assert "inside the trigger" not in statements[2].code
