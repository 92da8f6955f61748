"""Rule ids, severities, messages and the safe pattern each finding recommends."""

# The SQL in this module is advice shown to people, never executed.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass, replace

from .model import ChildEffect, Finding

DROP_REFERENCED_PARENT = "drop-referenced-parent"
REBUILD_REFERENCED_PARENT = "rebuild-referenced-parent"
FOREIGN_KEYS_PRAGMA_INEFFECTIVE = "foreign-keys-pragma-ineffective"
REPLACE_INTO_REFERENCED_PARENT = "replace-into-referenced-parent"
DELETE_ALL_FROM_REFERENCED_PARENT = "delete-all-from-referenced-parent"
DROP_WITHOUT_COPY = "drop-without-copy"
TRANSACTION_STATEMENT = "transaction-statement"
DANGLING_FOREIGN_KEY = "dangling-foreign-key"
UNEXECUTABLE_STATEMENT = "unexecutable-statement"

# Findings whose statement deletes rows of a parent and so fires its ON DELETE actions.
CASCADING_RULES = frozenset(
    {
        DROP_REFERENCED_PARENT,
        REBUILD_REFERENCED_PARENT,
        REPLACE_INTO_REFERENCED_PARENT,
        DELETE_ALL_FROM_REFERENCED_PARENT,
    }
)

_NO_PRAGMA_HELPS = (
    "PRAGMA foreign_keys=OFF does not help inside a D1 migration, and defer_foreign_keys does not stop cascades."
)


@dataclass(frozen=True)
class Site:
    """Where a statement is: file, start line, and the statement shortened for display."""

    file: str
    line: int
    statement: str


def _names(children: tuple[ChildEffect, ...]) -> str:
    return ", ".join(dict.fromkeys(child.table for child in children))


def _in_place_alternative(table: str, children: tuple[ChildEffect, ...]) -> str:
    return (
        f"Change {table} in place: ALTER TABLE {table} ADD COLUMN ... (or RENAME COLUMN / DROP COLUMN). "
        f"If its shape must change beyond that, create the new table under a new name for new data and "
        f"migrate readers to it; re-point or rebuild the children ({_names(children)}) before {table} is "
        f"ever dropped. Never drop a parent of ON DELETE CASCADE children. {_NO_PRAGMA_HELPS}"
    )


def drop_referenced_parent(site: Site, table: str, children: tuple[ChildEffect, ...]) -> Finding:
    return Finding(
        rule=DROP_REFERENCED_PARENT,
        severity="error",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=table,
        children=children,
        message=(
            f"DROP TABLE {table}: with foreign keys on (always, on D1) SQLite first deletes every row of "
            f"{table}, and the ON DELETE actions then wipe or change every row of {_names(children)}."
        ),
        safe_pattern=_in_place_alternative(table, children),
    )


def rebuild_referenced_parent(
    site: Site, table: str, original: str, children: tuple[ChildEffect, ...], steps: list[str]
) -> Finding:
    """`table` is the dropped table; `original` the name it had before a rename-first rebuild."""
    return Finding(
        rule=REBUILD_REFERENCED_PARENT,
        severity="error",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=table,
        children=children,
        message=(
            f"Table rebuild of {original} (create, copy, drop, rename: {'; '.join(steps)}). Copying keeps "
            f"the rows of {table}, but DROP TABLE {table} deletes them first, and the ON DELETE actions "
            f"then wipe or change every row of {_names(children)}."
        ),
        safe_pattern=_in_place_alternative(original, children),
    )


def foreign_keys_pragma_ineffective(site: Site, setting: str) -> Finding:
    """Provisionally a warning; `settle_pragma_findings` raises it to an error when it guards a cascade."""
    what_it_does = (
        "only postpones foreign key checks to COMMIT; ON DELETE CASCADE / SET NULL still run at once"
        if setting.startswith("defer")
        else "is ignored inside a transaction, and D1 runs every migration file in one"
    )
    return Finding(
        rule=FOREIGN_KEYS_PRAGMA_INEFFECTIVE,
        severity="warning",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table="",
        children=(),
        message=f"PRAGMA {setting} does not prevent cascades in a D1 migration: it {what_it_does}.",
        safe_pattern=(
            "Remove the PRAGMA and the need for it: do not DROP, rebuild, REPLACE INTO or DELETE FROM a "
            "table that ON DELETE CASCADE / SET NULL children reference; use ALTER TABLE ... ADD COLUMN "
            "and INSERT ... ON CONFLICT(...) DO UPDATE instead."
        ),
    )


def replace_into_referenced_parent(
    site: Site, table: str, children: tuple[ChildEffect, ...], key_columns: tuple[str, ...]
) -> Finding:
    conflict_target = ", ".join(key_columns) or "<unique key>"
    return Finding(
        rule=REPLACE_INTO_REFERENCED_PARENT,
        severity="error",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=table,
        children=children,
        message=(
            f"REPLACE on {table} deletes the existing row before writing the new one whenever a key "
            f"conflicts, and the ON DELETE actions then wipe or change that row's children in "
            f"{_names(children)}."
        ),
        safe_pattern=(
            f"Update in place with an UPSERT: INSERT INTO {table} (...) VALUES (...) "
            f"ON CONFLICT({conflict_target}) DO UPDATE SET col = excluded.col. Never use REPLACE INTO, "
            f"INSERT OR REPLACE or UPDATE OR REPLACE on a parent of ON DELETE CASCADE children."
        ),
    )


def delete_all_from_referenced_parent(site: Site, table: str, children: tuple[ChildEffect, ...]) -> Finding:
    return Finding(
        rule=DELETE_ALL_FROM_REFERENCED_PARENT,
        severity="error",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=table,
        children=children,
        message=(
            f"DELETE FROM {table} without WHERE deletes every row, and the ON DELETE actions then wipe or "
            f"change every row of {_names(children)}."
        ),
        safe_pattern=(
            f"Name the rows that go: DELETE FROM {table} WHERE ..., after checking what "
            f"{_names(children)} lose with them. To retire child data, delete from the child tables "
            f"explicitly, never through a cascade."
        ),
    )


def drop_without_copy(site: Site, table: str) -> Finding:
    return Finding(
        rule=DROP_WITHOUT_COPY,
        severity="warning",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=table,
        children=(),
        message=(
            f"DROP TABLE {table} discards its rows, and no earlier statement in these migrations copied "
            f"them into another table (INSERT INTO ... SELECT ... FROM {table}, or CREATE TABLE ... AS "
            f"SELECT ... FROM {table})."
        ),
        safe_pattern=(
            f"Keep the data: copy it first (CREATE TABLE {table}_archive AS SELECT * FROM {table}, or "
            f"INSERT INTO <new table> SELECT ... FROM {table}), or leave {table} in place and stop using "
            f"it; drop it in a later migration, after a verified export (wrangler d1 export)."
        ),
    )


def transaction_statement(site: Site) -> Finding:
    keyword = site.statement.split()[0].upper()
    return Finding(
        rule=TRANSACTION_STATEMENT,
        severity="warning",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table="",
        children=(),
        message=(
            f"{keyword} in a migration: D1 already runs each migration file in its own transaction and "
            f"rejects explicit transaction statements (the linter skips it)."
        ),
        safe_pattern="Remove BEGIN / COMMIT / END / ROLLBACK / SAVEPOINT / RELEASE: the file is atomic.",
    )


def dangling_foreign_key(site: Site, parent: str, children: tuple[str, ...]) -> Finding:
    names = ", ".join(children)
    return Finding(
        rule=DANGLING_FOREIGN_KEY,
        severity="error",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table=parent,
        children=(),
        message=(
            f"After this file {names} still reference {parent}, which it dropped and did not recreate: "
            f"every insert, update or delete on them fails with 'no such table: main.{parent}'. (Renaming "
            f"a parent away re-points its children at the new name, SQLite 3.26+.)"
        ),
        safe_pattern=(
            f"Do not rename or drop a table that other tables reference; change it in place with ALTER TABLE "
            f"... ADD COLUMN / RENAME COLUMN / DROP COLUMN, or rebuild {names} to reference the new table."
        ),
    )


def unexecutable_statement(site: Site, error: str, *, syntax: bool, baseline: str | None) -> Finding:
    """A statement SQLite could not execute on the schema replayed so far: skipped, the lint goes on."""
    if syntax:
        cause = f"SQLite cannot parse this statement: {error}. D1 rejects it on any schema."
        advice = "Fix the statement; the lint skipped it."
    elif baseline:
        cause = (
            f"SQLite cannot execute this statement on the baseline ({baseline}) plus the migrations before it: {error}."
        )
        advice = (
            "If the baseline already includes this migration, lint only the migrations not yet applied; "
            "otherwise the statement fails on D1 too."
        )
    else:
        cause = (
            f"SQLite cannot execute this statement on the schema the migrations build from an empty "
            f"database: {error}. Production's schema has likely drifted from the migrations (a column or "
            f"table added outside them)."
        )
        advice = (
            "Lint on the live schema: wrangler d1 export <DB> --remote --no-data --output schema.sql, then "
            "lint-migrations --baseline schema.sql."
        )
    return Finding(
        rule=UNEXECUTABLE_STATEMENT,
        severity="warning",
        file=site.file,
        line=site.line,
        statement=site.statement,
        table="",
        children=(),
        message=(
            f"{cause} Skipped: its schema changes are missing from what follows; its text was still judged "
            f"(REPLACE, DELETE, DROP, copies) against the tables known so far."
        ),
        safe_pattern=advice,
    )


def baseline_data_note(ignored: int) -> str:
    return f"The baseline's {ignored} data statements were ignored: only its schema is used."


def skipped_statements_note(skipped: list[Site], baseline: str | None) -> str:
    """Why findings may be missing: statements skipped for want of (the right) live schema."""
    first = f"{skipped[0].file}:{skipped[0].line}"
    where = f"{len(skipped)} statements (the first at {first})" if len(skipped) > 1 else f"1 statement ({first})"
    if baseline is None:
        return (
            f"No baseline was given, and {where} could not be executed on the schema the migrations build "
            f"from an empty database: production's schema has likely drifted from them. The rest was still "
            f"applied and judged, but tables and columns added outside the migrations are unknown to the "
            f"lint. Pass the live schema with --baseline schema.sql (wrangler d1 export <DB> --remote "
            f"--no-data --output schema.sql)."
        )
    return (
        f"{where} could not be executed on the baseline plus the migrations before it; skipped, the rest "
        f"was applied and judged. If the baseline already includes some of these migrations, lint only the "
        f"ones not yet applied."
    )


def settle_pragma_findings(file_findings: list[Finding]) -> list[Finding]:
    """Make each foreign-keys pragma finding an error when a cascading statement follows it in its file.

    Such a pragma is there to make the drop/rebuild/replace safe, and it does not: the cascade runs anyway.
    """
    settled = []
    for finding in file_findings:
        if finding.rule == FOREIGN_KEYS_PRAGMA_INEFFECTIVE:
            guarded = [f for f in file_findings if f.rule in CASCADING_RULES and f.line > finding.line]
            if guarded:
                finding = _guarding(finding, guarded)
        settled.append(finding)
    return settled


def _guarding(pragma: Finding, guarded: list[Finding]) -> Finding:
    children = tuple(dict.fromkeys(child for f in guarded for child in f.children))
    lines = ", ".join(f"line {f.line} ({f.rule}, {f.table})" for f in guarded)
    return replace(
        pragma,
        severity="error",
        table=guarded[0].table,
        children=children,
        message=(
            f"{pragma.message} It is relied on to protect {lines}, which still wipes or changes {_names(children)}."
        ),
    )
