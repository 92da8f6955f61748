"""Histories that do not replay on an empty database (a drifted production schema), and --baseline.

The history here is the shape of the incident on a made-up schema: production got a column by hand
(`members.locale`), a later migration uses it, and a later one still rebuilds the cascaded parent
`members` behind `PRAGMA foreign_keys = OFF`. Without the live schema the lint must skip what it cannot
execute, say so, and still find every cascade after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lint = Callable[..., Any]
Write = Callable[..., Path]

INIT = """\
CREATE TABLE members (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE
);
CREATE TABLE notebooks (
  id TEXT PRIMARY KEY,
  member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
  title TEXT NOT NULL
);
CREATE TABLE pages (
  id TEXT PRIMARY KEY,
  notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
  body TEXT NOT NULL
);
"""

# Needs members.locale, which only production has (ALTER TABLE run by hand, never in a migration).
PREPARE = """\
-- normalise the hand-added column
UPDATE members SET locale = lower(locale) WHERE locale IS NOT NULL;
CREATE TABLE members_new (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  locale TEXT CHECK (locale IN ('en', 'fr'))
);
"""

SWAP = """\
INSERT INTO members_new (id, email, locale)
  SELECT id, email, locale FROM members;
PRAGMA foreign_keys = OFF;
DROP TABLE members;
ALTER TABLE members_new RENAME TO members;
PRAGMA foreign_keys = ON;
"""

ADMIN = "REPLACE INTO members (id, email) VALUES ('m_admin', 'admin@example.test');\n"

HISTORY = {"0001_init.sql": INIT, "0002_prepare.sql": PREPARE, "0003_swap_members.sql": SWAP, "0004_admin.sql": ADMIN}

# What `wrangler d1 export DB --remote --no-data` would write for production after 0001 (plus the
# hand-added column), with the d1_migrations bookkeeping; the data lines must be ignored.
D1_EXPORT = """\
PRAGMA defer_foreign_keys=TRUE;
CREATE TABLE d1_migrations(
\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,
\t\tname       TEXT UNIQUE,
\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);
INSERT INTO "d1_migrations" ("id","name","applied_at") VALUES(1,'0001_init.sql','2025-07-01 10:00:00');
CREATE TABLE members (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE
, locale TEXT CHECK (locale IN ('en', 'fr')));
CREATE TABLE notebooks (
  id TEXT PRIMARY KEY,
  member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
  title TEXT NOT NULL
);
CREATE TABLE pages (
  id TEXT PRIMARY KEY,
  notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
  body TEXT NOT NULL
);
DELETE FROM sqlite_sequence;
INSERT INTO "sqlite_sequence" VALUES('d1_migrations',1);
"""

CHILDREN = [
    {"table": "notebooks", "on_delete": "CASCADE", "via": "members"},
    {"table": "pages", "on_delete": "CASCADE", "via": "notebooks"},
]


def located(result: Any) -> list[tuple[str, str, str, int]]:
    """(rule, severity, file name, line) of every finding, in report order."""
    return [(f["rule"], f["severity"], Path(f["file"]).name, f["line"]) for f in result.findings()]


def pending(migrations: Path) -> list[Path]:
    """The migrations production has not applied yet: all but 0001."""
    return [migrations / name for name in sorted(HISTORY) if name != "0001_init.sql"]


def test_without_baseline_the_drifted_history_is_skipped_where_it_must_and_every_cascade_still_found(
    lint: Lint, write_migrations: Write
) -> None:
    result = lint(write_migrations(HISTORY))

    assert result.code == 1
    assert located(result) == [
        ("unexecutable-statement", "warning", "0002_prepare.sql", 2),
        ("unexecutable-statement", "warning", "0003_swap_members.sql", 1),
        ("foreign-keys-pragma-ineffective", "error", "0003_swap_members.sql", 3),
        ("rebuild-referenced-parent", "error", "0003_swap_members.sql", 4),
        ("replace-into-referenced-parent", "error", "0004_admin.sql", 1),
    ]
    skipped_update, skipped_copy, pragma, rebuild, replace = result.findings()
    assert "no such column: locale" in skipped_update["message"]
    assert "--baseline schema.sql" in skipped_update["safe_pattern"]
    assert "no such column: locale" in skipped_copy["message"]
    # The copy failed here, yet it is what makes the DROP a rebuild; the drop is judged all the same.
    assert rebuild["table"] == "members"
    assert rebuild["children"] == CHILDREN
    assert "rows copied into members_new at line 1 (skipped here: SQLite could not execute it)" in rebuild["message"]
    assert "members_new renamed to members at line 5" in rebuild["message"]
    assert "line 4 (rebuild-referenced-parent, members)" in pragma["message"]
    assert replace["children"] == CHILDREN
    [note] = result.json()["notes"]
    assert note.startswith("No baseline was given, and 2 statements (the first at ")
    assert "0002_prepare.sql:2) could not be executed" in note
    assert "--baseline schema.sql" in note


def test_without_baseline_text_output_reports_the_skips_the_note_and_the_summary(
    lint: Lint, write_migrations: Write
) -> None:
    result = lint(write_migrations(HISTORY), output="text")

    lines = result.out.splitlines()
    headers = [line.split(": ", 2)[0:2] for line in lines if ": warning " in line or ": error " in line]
    assert [(Path(place).name, kind) for place, kind in headers] == [
        ("0002_prepare.sql:2", "warning unexecutable-statement"),
        ("0003_swap_members.sql:1", "warning unexecutable-statement"),
        ("0003_swap_members.sql:3", "error foreign-keys-pragma-ineffective"),
        ("0003_swap_members.sql:4", "error rebuild-referenced-parent"),
        ("0004_admin.sql:1", "error replace-into-referenced-parent"),
    ]
    assert any(line.startswith("note: No baseline was given, and 2 statements") for line in lines)
    assert lines[-1] == (
        "3 errors and 2 warnings in 4 migration files (2 statements skipped: SQLite could not execute them)."
    )


def test_a_history_whose_only_problem_is_drift_exits_0_with_the_warning_and_the_note(
    lint: Lint, write_migrations: Write
) -> None:
    result = lint(write_migrations({"0001_init.sql": INIT, "0002_prepare.sql": PREPARE}))

    assert result.code == 0
    assert located(result) == [("unexecutable-statement", "warning", "0002_prepare.sql", 2)]
    [note] = result.json()["notes"]
    assert "1 statement (" in note and "--baseline" in note


def test_a_d1_export_baseline_makes_the_pending_migrations_replay_cleanly(
    lint: Lint, write_migrations: Write, tmp_path: Path
) -> None:
    migrations = write_migrations(HISTORY)
    schema = tmp_path / "schema.sql"
    schema.write_text(D1_EXPORT, encoding="utf-8")

    result = lint(*pending(migrations), baseline=schema)

    assert result.code == 1
    assert located(result) == [
        ("foreign-keys-pragma-ineffective", "error", "0003_swap_members.sql", 3),
        ("rebuild-referenced-parent", "error", "0003_swap_members.sql", 4),
        ("replace-into-referenced-parent", "error", "0004_admin.sql", 1),
    ]
    document = result.json()
    assert document["baseline"] == str(schema)
    assert document["notes"] == ["The baseline's 3 data statements were ignored: only its schema is used."]
    assert "skipped here" not in document["findings"][1]["message"]


def test_baseline_text_summary_names_the_baseline(lint: Lint, write_migrations: Write, tmp_path: Path) -> None:
    migrations = write_migrations(HISTORY)
    schema = tmp_path / "schema.sql"
    schema.write_text(D1_EXPORT, encoding="utf-8")

    result = lint(*pending(migrations), baseline=schema, output="text")

    assert result.out.splitlines()[-1] == f"3 errors and 0 warnings in 3 migration files on the baseline {schema}."


def test_a_baseline_that_already_includes_a_linted_migration_says_so(
    lint: Lint, write_migrations: Write, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text(D1_EXPORT, encoding="utf-8")

    result = lint(write_migrations(HISTORY), baseline=schema)  # 0001 is in the baseline already

    assert located(result)[:3] == [
        ("unexecutable-statement", "warning", "0001_init.sql", 1),
        ("unexecutable-statement", "warning", "0001_init.sql", 5),
        ("unexecutable-statement", "warning", "0001_init.sql", 10),
    ]
    assert "table members already exists" in result.findings()[0]["message"]
    assert f"on the baseline ({schema})" in result.findings()[0]["message"]
    assert "lint only the ones not yet applied" in result.json()["notes"][1]


def test_a_sqlite_database_file_is_a_baseline_too(lint: Lint, write_migrations: Write, tmp_path: Path) -> None:
    database = tmp_path / "local.sqlite"
    with sqlite3.connect(database) as connection:
        connection.executescript(INIT + "ALTER TABLE members ADD COLUMN locale TEXT CHECK (locale IN ('en', 'fr'));")
        connection.execute("INSERT INTO members VALUES ('m1', 'a@example.test', 'en')")
    connection.close()

    result = lint(*pending(write_migrations(HISTORY)), baseline=database)

    assert [finding[0] for finding in located(result)] == [
        "foreign-keys-pragma-ineffective",
        "rebuild-referenced-parent",
        "replace-into-referenced-parent",
    ]


def test_a_sqlite_dump_with_a_virtual_table_is_a_baseline(lint: Lint, write_migrations: Write, tmp_path: Path) -> None:
    source = sqlite3.connect(":memory:")
    source.executescript(INIT + "CREATE VIRTUAL TABLE page_search USING fts5(body);")
    source.execute("INSERT INTO page_search VALUES ('hello')")
    dump = tmp_path / "dump.sql"
    dump.write_text("\n".join(source.iterdump()), encoding="utf-8")  # BEGIN, writable_schema, shadow tables
    source.close()
    migrations = write_migrations({"0002_search.sql": "DROP TABLE page_search;\nDROP TABLE members;\n"})

    result = lint(migrations, baseline=dump)

    assert located(result) == [
        ("drop-referenced-parent", "error", "0002_search.sql", 2),
        ("drop-without-copy", "warning", "0002_search.sql", 2),
        ("dangling-foreign-key", "error", "0002_search.sql", 2),
    ]


def test_a_baseline_statement_sqlite_refuses_exits_2_with_file_and_line(
    lint: Lint, write_migrations: Write, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE members (id TEXT PRIMARY KEY);\n\nCREATE INDEX idx ON nosuch (x);\n")

    result = lint(write_migrations(HISTORY), baseline=schema)

    assert result.code == 2
    assert result.out == ""
    assert f"{schema}:3: error: SQLite cannot load this baseline statement: no such table: main.nosuch" in result.err


def test_a_baseline_index_written_before_its_table_still_loads(
    lint: Lint, write_migrations: Write, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE INDEX idx_notebooks_member ON notebooks (member_id);\n" + INIT, encoding="utf-8")

    result = lint(write_migrations({"0002.sql": "DELETE FROM members;\n"}), baseline=schema)

    assert located(result) == [("delete-all-from-referenced-parent", "error", "0002.sql", 1)]


def test_a_missing_baseline_exits_2(lint: Lint, write_migrations: Write, tmp_path: Path) -> None:
    result = lint(write_migrations(HISTORY), baseline=tmp_path / "nope.sql")

    assert result.code == 2
    assert "nope.sql: error: cannot read the baseline" in result.err


def test_dropping_a_parent_the_replay_never_created_is_judged_by_its_children(
    lint: Lint, write_migrations: Write
) -> None:
    # `members` was made by hand in production; the migrations only ever created its children.
    children_only = INIT[INIT.index("CREATE TABLE notebooks") :]
    migrations = write_migrations(
        {
            "0001_children.sql": children_only,
            "0002_retire.sql": "PRAGMA foreign_keys=OFF;\nDROP TABLE IF EXISTS members;\nDROP TABLE members;\n",
        }
    )

    result = lint(migrations)

    assert result.code == 1
    assert located(result) == [
        ("foreign-keys-pragma-ineffective", "error", "0002_retire.sql", 1),
        ("drop-referenced-parent", "error", "0002_retire.sql", 2),
        ("unexecutable-statement", "warning", "0002_retire.sql", 3),  # no such table: members
        ("drop-referenced-parent", "error", "0002_retire.sql", 3),
    ]
    assert result.findings()[1]["children"] == CHILDREN


def test_dropping_a_table_the_replay_already_dropped_is_no_second_finding(lint: Lint, write_migrations: Write) -> None:
    migrations = write_migrations(
        {"0001_init.sql": INIT, "0002.sql": "DROP TABLE members;\n", "0003.sql": "DROP TABLE IF EXISTS members;\n"}
    )

    assert located(lint(migrations)) == [
        ("drop-referenced-parent", "error", "0002.sql", 1),
        ("drop-without-copy", "warning", "0002.sql", 1),
        ("dangling-foreign-key", "error", "0002.sql", 1),
    ]


def test_simulate_keeps_going_past_skipped_statements_and_leaves_the_staging_table_empty(
    lint: Lint, write_migrations: Write
) -> None:
    result = lint(write_migrations(HISTORY), simulate=True)

    assert result.code == 1
    _init, prepare, swap, admin = result.json()["simulation"]
    assert [(s["line"], s["message"]) for s in prepare["skipped"]] == [(2, "no such column: locale")]
    # Empty until 0003 copies into it, as in production: seeded rows would collide with the copy.
    [staging] = prepare["staging"]
    assert (staging["table"], Path(staging["filled_at"]).name) == ("members_new", "0003_swap_members.sql:1")
    assert [(s["line"], s["message"]) for s in swap["skipped"]] == [(1, "no such column: locale")]
    assert swap["error"] is None
    lost = {loss["table"]: (loss["before"], loss["after"]) for loss in swap["lost_rows"]}
    # members too: its copy was skipped here, for want of the hand-added column.
    assert lost == {"members": (3, 0), "notebooks": (3, 0), "pages": (3, 0)}
    assert (admin["skipped"], admin["error"], admin["lost_rows"]) == ([], None, [])


def test_simulate_on_the_baseline_copies_the_parent_and_still_loses_its_children(
    lint: Lint, write_migrations: Write, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text(D1_EXPORT, encoding="utf-8")

    result = lint(*pending(write_migrations(HISTORY)), baseline=schema, simulate=True, output="text")

    assert result.code == 1
    simulation = result.out[result.out.index("Simulation (") : result.out.index("\n\nnote: ")]
    assert [line.strip() for line in simulation.splitlines()[1:]] == [
        f"{schema}: baseline loaded",
        "then seeded: d1_migrations (3), members (3), notebooks (3), pages (3)",
        f"{tmp_path}/migrations/0002_prepare.sql: no rows lost",
        f"left empty for a later copy into it: members_new (copy at {tmp_path}/migrations/0003_swap_members.sql:1)",
        f"{tmp_path}/migrations/0003_swap_members.sql: ROWS LOST: notebooks 3 -> 0, pages 3 -> 0",
        "dropped: members_new (0 rows)",  # renamed to members, which kept its 3 rows
        "then seeded: notebooks (3), pages (3)",
        f"{tmp_path}/migrations/0004_admin.sql: no rows lost",
    ]
    assert result.out.splitlines()[-1].endswith("Simulation: rows lost in 1 migration file.")
