"""Paths, ordering, output formats, exit codes and --simulate."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lint = Callable[..., Any]
Write = Callable[..., Path]

SAFE = """\
ALTER TABLE users ADD COLUMN last_login_at TIMESTAMP;
CREATE INDEX idx_logbook_user ON logbook_entries (user_id, timestamp);
INSERT INTO users (id, email) VALUES ('user_admin', 'admin@example.com')
  ON CONFLICT(id) DO UPDATE SET email = excluded.email;
"""


def test_directory_applies_sql_files_in_file_name_order(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    # Written in the wrong order, and with a non-SQL file beside them: only the names decide.
    migrations = write_migrations({"0002_rebuild_users.sql": rebuild_users, "README.md": "not SQL"})
    write_migrations({"0001_init.sql": app_schema, "0010_safe.sql": SAFE})

    result = lint(migrations)

    files = [Path(name).name for name in result.json()["files"]]
    assert files == ["0001_init.sql", "0002_rebuild_users.sql", "0010_safe.sql"]
    assert result.code == 1  # 0002 ran after 0001 (else: no such table, exit 2)


def test_several_paths_form_one_sequence_in_the_order_given(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    first = write_migrations({"init.sql": app_schema}, directory="first")
    second = write_migrations({"0001_rebuild.sql": rebuild_users}, directory="second")

    result = lint(first / "init.sql", second)

    assert result.code == 1
    assert [f["rule"] for f in result.findings()] == ["rebuild-referenced-parent"]


def test_json_output_parses_with_files_findings_and_simulation(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_rebuild_users.sql": rebuild_users})

    document = lint(migrations, simulate=True).json()

    assert set(document) == {"files", "baseline", "findings", "notes", "simulation"}
    assert len(document["files"]) == 2
    assert set(document["findings"][0]) == {
        "rule",
        "severity",
        "file",
        "line",
        "statement",
        "table",
        "children",
        "message",
        "safe_pattern",
    }
    assert [Path(entry["file"]).name for entry in document["simulation"]] == [
        "0001_init.sql",
        "0002_rebuild_users.sql",
    ]
    assert (document["baseline"], document["notes"]) == (None, [])


def test_simulate_reports_the_incident_emptying_sync_data_and_logbook_entries(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_rebuild_users.sql": rebuild_users})

    result = lint(migrations, simulate=True)

    assert result.code == 1
    init, rebuild = result.json()["simulation"]
    assert init["lost_rows"] == []
    assert {seeded["table"] for seeded in init["seeded"]} >= {"users", "sync_data", "logbook_entries"}
    lost = {loss["table"]: (loss["before"], loss["after"]) for loss in rebuild["lost_rows"]}
    assert lost["sync_data"][1] == 0 and lost["sync_data"][0] > 0
    assert lost["logbook_entries"][1] == 0 and lost["logbook_entries"][0] > 0
    assert "users" not in lost  # the copy kept the users themselves


def test_simulate_reproduces_d1_ignoring_foreign_keys_off(
    lint: Lint, write_migrations: Write, app_schema: str, rebuild_users: str
) -> None:
    wrapped = f"PRAGMA foreign_keys=OFF;\n{rebuild_users}PRAGMA foreign_keys=ON;\n"
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_fk_off.sql": wrapped})

    result = lint(migrations, output="text", simulate=True)

    assert "0002_fk_off.sql: ROWS LOST: sync_data 3 -> 0, logbook_entries 3 -> 0, sync_metadata 3 -> 0" in (result.out)


def test_simulate_is_clean_for_safe_migrations(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_safe.sql": SAFE})

    result = lint(migrations, output="text", simulate=True)

    assert result.code == 0
    assert "0002_safe.sql: no rows lost" in result.out
    assert "ROWS LOST" not in result.out
    assert result.out.rstrip().endswith("No findings in 2 migration files. Simulation: no rows lost.")


def test_simulate_catches_a_loss_the_rules_do_not_see(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    # A WHERE that matches every row is no rule finding, but the cascade is real.
    migrations = write_migrations({"0001_init.sql": app_schema, "0002_purge.sql": "DELETE FROM users WHERE 1 = 1;\n"})

    assert lint(migrations).code == 0
    result = lint(migrations, simulate=True)

    assert result.code == 1
    assert result.findings() == []
    lost = {loss["table"] for loss in result.json()["simulation"][1]["lost_rows"]}
    assert lost == {"users", "sync_data", "logbook_entries", "sync_metadata"}


def test_simulate_says_which_tables_it_could_not_seed(lint: Lint, write_migrations: Write) -> None:
    schema = (
        "CREATE TABLE strict_codes (code TEXT NOT NULL CHECK (length(code) = 21));\n"
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
    )
    migrations = write_migrations({"0001_init.sql": schema})

    [init] = lint(migrations, simulate=True).json()["simulation"]

    assert [skipped["table"] for skipped in init["not_seeded"]] == ["strict_codes"]
    assert "CHECK constraint failed" in init["not_seeded"][0]["reason"]
    assert init["seeded"] == [{"table": "plain", "rows": 3}]


def test_missing_path_exits_2(lint: Lint, tmp_path: Path) -> None:
    result = lint(tmp_path / "nope")

    assert result.code == 2
    assert "nope: error: no such file or directory" in result.err


def test_directory_without_sql_files_exits_2(lint: Lint, write_migrations: Write) -> None:
    migrations = write_migrations({"notes.txt": "nothing here"})

    result = lint(migrations)

    assert result.code == 2
    assert "no .sql migration files" in result.err


def test_a_statement_sqlite_cannot_execute_is_a_warning_and_the_lint_goes_on(
    lint: Lint, write_migrations: Write, app_schema: str
) -> None:
    broken = "-- adds a column\nALTER TABLE users ADD COLUMN google_id TEXT;\n\nALTER TABLE nosuch ADD x TEXT;\n"
    migrations = write_migrations(
        {"0001_init.sql": app_schema, "0002_broken.sql": broken, "0003.sql": "DELETE FROM users;"}
    )

    result = lint(migrations, output="text")

    assert result.code == 1  # the DELETE after it is still judged
    assert "0002_broken.sql:4: warning unexecutable-statement: SQLite cannot execute this statement" in result.out
    assert "no such table: nosuch" in result.out
    assert "0003.sql:1: error delete-all-from-referenced-parent" in result.out
    assert "note: No baseline was given, and 1 statement (" in result.out
    assert result.err == ""


def test_unparseable_sql_is_a_warning_without_the_baseline_note(lint: Lint, write_migrations: Write) -> None:
    migrations = write_migrations({"0001_bad.sql": "CREATE TABLE ok (id INTEGER);\nCREATE TABLE broken (\n"})

    result = lint(migrations)

    assert result.code == 0
    [finding] = result.findings()
    assert (finding["rule"], finding["severity"], Path(finding["file"]).name, finding["line"]) == (
        "unexecutable-statement",
        "warning",
        "0001_bad.sql",
        2,
    )
    assert finding["message"].startswith("SQLite cannot parse this statement: incomplete input.")
    assert result.json()["notes"] == []  # a baseline would not help


def test_warnings_alone_exit_0_and_errors_exit_1(lint: Lint, write_migrations: Write, app_schema: str) -> None:
    warned = write_migrations({"0001_init.sql": app_schema, "0002.sql": "DROP TABLE sync_sequence;\n"}, "w")
    failed = write_migrations({"0001_init.sql": app_schema, "0002.sql": "DELETE FROM users;\n"}, "e")

    assert lint(warned).code == 0
    assert lint(failed).code == 1


def test_module_entry_point_runs(write_migrations: Write, app_schema: str) -> None:
    migrations = write_migrations({"0001_init.sql": app_schema})

    completed = subprocess.run(
        [sys.executable, "-m", "service.migrations_lint", str(migrations)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert completed.returncode == 0
    assert completed.stdout.strip() == "No findings in 1 migration file."


def test_simulate_says_a_table_whose_trigger_deletes_its_seeded_rows_was_not_seeded(
    lint: Lint, write_migrations: Write
) -> None:
    # A cleanup trigger on insert (expired keys) empties the table again: it holds no rows to lose.
    schema = (
        "CREATE TABLE keys (id TEXT PRIMARY KEY, expires_at DATETIME NOT NULL);\n"
        "CREATE TRIGGER keys_cleanup AFTER INSERT ON keys BEGIN\n"
        "  DELETE FROM keys WHERE expires_at < datetime('now');\n"
        "END;\n"
    )
    migrations = write_migrations({"0001_init.sql": schema})

    [init] = lint(migrations, simulate=True).json()["simulation"]

    assert init["seeded"] == []
    assert init["not_seeded"] == [
        {"table": "keys", "reason": "its trigger deleted the rows again (a cleanup trigger on insert)"}
    ]
