"""The lint pass: run the migrations against a scratch database (empty, or holding the baseline schema)
and check each statement.

Before each statement the catalog (sqlite_master and PRAGMA foreign_key_list) says which tables are
parents of ON DELETE CASCADE / SET NULL / SET DEFAULT children at that moment, so the rules see exactly
what SQLite would do, including how ALTER TABLE ... RENAME re-points the children. A statement SQLite
cannot execute (a drifted production schema, no baseline) is reported, skipped and still judged from
its text against that catalog, so nothing after it goes unchecked.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

from . import rules, sql_text
from .baseline import Baseline, apply_baseline
from .catalog import Catalog, CatalogReader
from .model import Finding, MigrationFile, Statement
from .rules import Site


@dataclass(frozen=True)
class Copy:
    """Rows of some table were copied into `target` by the statement at file:line."""

    target: str
    file: str
    line: int
    executed: bool = True  # False: SQLite could not run it here (skipped), so it counts by its text


@dataclass(frozen=True)
class Rename:
    old_name: str
    file: str
    line: int


def open_scratch_database() -> sqlite3.Connection:
    # Autocommit: the migration's statements decide nothing about transactions here.
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@dataclass(frozen=True)
class LintResult:
    findings: list[Finding]
    # What the reader must know to trust the findings: statements skipped, baseline data ignored.
    notes: list[str]


def lint_migrations(migrations: list[MigrationFile], baseline: Baseline | None = None) -> LintResult:
    """Lint the files in order; raises MigrationInputError only for a baseline SQLite cannot load."""
    linter = Linter(baseline)
    try:
        for migration in migrations:
            linter.lint_file(migration)
    finally:
        linter.close()
    return LintResult(linter.findings, linter.notes())


class Linter:
    def __init__(self, baseline: Baseline | None = None) -> None:
        self._connection = open_scratch_database()
        self._baseline = baseline
        try:
            self._ignored_baseline_data = (
                apply_baseline(self._connection, baseline).ignored_data_statements if baseline else 0
            )
        except BaseException:
            self._connection.close()
            raise
        self._catalog = CatalogReader(self._connection)
        # Copies of each table's rows so far, keyed by the (lower-case) name of the copied table.
        self._copies: dict[str, list[Copy]] = {}
        # How a table got its current name, for explaining rename-first rebuilds.
        self._renamed_from: dict[str, Rename] = {}
        # Parents dropped in the current file while children still referenced them: name -> the DROP.
        self._dropped_with_children: dict[str, tuple[Site, str]] = {}
        # Every table the replay has dropped: dropping such a name again is a no-op, not an unknown table.
        self._dropped_ever: set[str] = set()
        # Statements skipped because the schema lacked what they need (not syntax errors), where they are.
        self._skipped_for_schema: list[Site] = []
        self.findings: list[Finding] = []

    def close(self) -> None:
        self._connection.close()

    def notes(self) -> list[str]:
        notes = []
        if self._ignored_baseline_data:
            notes.append(rules.baseline_data_note(self._ignored_baseline_data))
        if self._skipped_for_schema:
            baseline = self._baseline.name if self._baseline else None
            notes.append(rules.skipped_statements_note(self._skipped_for_schema, baseline))
        return notes

    def lint_file(self, migration: MigrationFile) -> None:
        file_findings: list[Finding] = []
        self._dropped_with_children = {}
        for index, statement in enumerate(migration.statements):
            before = self._catalog.current()
            failure = self._execute(statement)
            after = self._catalog.current()
            file_findings += self._check(migration, index, before, after, failure)
        file_findings += self._dangling_references()
        file_findings.sort(key=lambda finding: finding.line)
        self.findings += rules.settle_pragma_findings(file_findings)

    def _dangling_references(self) -> list[Finding]:
        """Children left pointing at a table that this file dropped and did not bring back."""
        catalog = self._catalog.current()
        findings = []
        for site, parent in self._dropped_with_children.values():
            children = catalog.all_referencing(parent)
            if children and not catalog.has(parent):
                findings.append(rules.dangling_foreign_key(site, parent, children))
        return findings

    def _execute(self, statement: Statement) -> str | None:
        """Run the statement; SQLite's message when it cannot, else None."""
        if sql_text.is_transaction_control(statement) or sql_text.is_foreign_keys_pragma(statement):
            # D1 rejects the former and ignores the latter inside the migration's transaction.
            return None
        try:
            self._connection.execute(statement.sql).fetchall()
        except sqlite3.IntegrityError as error:
            if not sql_text.changes_data(statement):
                return str(error)
            # A data change that needs production rows the empty scratch database lacks: its schema
            # effect is nil, and it is no sign of drift.
        except sqlite3.Error as error:
            return str(error)
        return None

    def _check(
        self, migration: MigrationFile, index: int, before: Catalog, after: Catalog, failure: str | None
    ) -> list[Finding]:
        statement = migration.statements[index]
        site = Site(migration.name, statement.line, sql_text.shorten(statement.code))
        findings: list[Finding] = []
        if failure is not None:
            syntax = sql_text.is_syntax_error(failure)
            if not syntax:
                self._skipped_for_schema.append(site)
            baseline = self._baseline.name if self._baseline else None
            findings.append(rules.unexecutable_statement(site, failure, syntax=syntax, baseline=baseline))
        if sql_text.is_transaction_control(statement):
            findings.append(rules.transaction_statement(site))
        setting = sql_text.foreign_key_pragma(statement)
        if setting:
            findings.append(rules.foreign_keys_pragma_ineffective(site, setting))
        findings += self._check_replace(statement, site, before)
        findings += self._check_delete_all(statement, site, before)
        # Judged from the text whether or not the statement ran: a copy that failed here for want of a
        # drifted column still shows the rebuild's intent.
        self._record_copy(statement, site, before, executed=failure is None)
        if sql_text.is_drop_table(statement):
            findings += self._check_drop(migration, index, site, before, after, failure)
        self._record_rename(statement, site, before, after)
        return findings

    def _check_replace(self, statement: Statement, site: Site, before: Catalog) -> list[Finding]:
        target = sql_text.replace_target(statement)
        if target is None:
            return []
        # A table the replayed schema lacks is still judged by the children that reference its name.
        table = before.get(target)
        children = before.effects_of_deleting_rows(target)
        if not children:
            return []
        key = table.primary_key if table else ()
        return [rules.replace_into_referenced_parent(site, table.name if table else target, children, key)]

    def _check_delete_all(self, statement: Statement, site: Site, before: Catalog) -> list[Finding]:
        target = sql_text.delete_without_where_target(statement)
        if target is None:
            return []
        table = before.get(target)
        children = before.effects_of_deleting_rows(target)
        if not children:
            return []
        return [rules.delete_all_from_referenced_parent(site, table.name if table else target, children)]

    def _check_drop(
        self,
        migration: MigrationFile,
        index: int,
        site: Site,
        before: Catalog,
        after: Catalog,
        failure: str | None,
    ) -> list[Finding]:
        findings: list[Finding] = []
        for table in before.tables.values():
            if after.has(table.name):
                continue
            findings += self._judge_drop(migration, index, site, table.name, before, holds_rows=table.holds_rows)
            if after.all_referencing(table.name):
                self._dropped_with_children[table.name.lower()] = (site, table.name)
            self._forget_dropped(table.name)
            self._dropped_ever.add(table.name.lower())
        target = sql_text.drop_table_target(migration.statements[index])
        existing = before.get(target) if target else None
        if target and existing is None and target.lower() not in self._dropped_ever:
            # Not in the replayed schema (created outside the migrations, or by a skipped statement), yet
            # children reference it by name: on a database that has it, the drop cascades.
            findings += self._judge_drop(migration, index, site, target, before, holds_rows=False)
        elif failure is not None and existing is not None and after.has(existing.name):
            # The drop itself failed here; on production it may not.
            findings += self._judge_drop(migration, index, site, existing.name, before, holds_rows=existing.holds_rows)
        return findings

    def _judge_drop(
        self, migration: MigrationFile, index: int, site: Site, table: str, before: Catalog, *, holds_rows: bool
    ) -> list[Finding]:
        children = before.effects_of_deleting_rows(table)
        copies = self._copies.get(table.lower(), [])
        if children and copies:
            renamed = self._renamed_from.get(table.lower())
            original = renamed.old_name if renamed else table
            steps = self._rebuild_steps(migration, index, table, copies[-1])
            return [rules.rebuild_referenced_parent(site, table, original, children, steps)]
        findings = []
        if children:
            findings.append(rules.drop_referenced_parent(site, table, children))
        if not copies and holds_rows:
            findings.append(rules.drop_without_copy(site, table))
        return findings

    def _forget_dropped(self, table: str) -> None:
        """A dropped table's rows are gone: forget copies of them, every copy *into* it, and its name."""
        self._copies.pop(table.lower(), None)
        for source, kept in self._copies.items():
            self._copies[source] = [copy for copy in kept if copy.target.lower() != table.lower()]
        self._renamed_from.pop(table.lower(), None)

    def _rebuild_steps(self, migration: MigrationFile, index: int, table: str, copy: Copy) -> list[str]:
        """Describe the rebuild around the DROP at statement `index` for the finding's message."""
        steps = []
        renamed = self._renamed_from.get(table.lower())
        if renamed:
            where = _location(renamed.file, renamed.line, migration)
            steps.append(f"{renamed.old_name} renamed to {table} at {where}, which made its children reference {table}")
        skipped = "" if copy.executed else " (skipped here: SQLite could not execute it)"
        steps.append(f"rows copied into {copy.target} at {_location(copy.file, copy.line, migration)}{skipped}")
        steps.append(f"{table} dropped at line {migration.statements[index].line}")
        for later in migration.statements[index + 1 :]:
            rename = sql_text.table_rename(later)
            if rename and (rename[0].lower(), rename[1].lower()) == (copy.target.lower(), table.lower()):
                steps.append(f"{rename[0]} renamed to {rename[1]} at line {later.line}")
                break
        return steps

    def _record_copy(self, statement: Statement, site: Site, before: Catalog, *, executed: bool) -> None:
        copy = sql_text.copy_of(statement)
        if copy is None:
            return
        target, sources = copy
        for source in sources:
            # Known tables, and parents known only from their children's foreign keys (CTE names are neither).
            if before.has(source) or before.all_referencing(source):
                self._copies.setdefault(source.lower(), []).append(Copy(target, site.file, site.line, executed))

    def _record_rename(self, statement: Statement, site: Site, before: Catalog, after: Catalog) -> None:
        rename = sql_text.table_rename(statement)
        if rename is None:
            return
        old, new = rename
        if not (before.has(old) and after.has(new) and not after.has(old)):
            return
        # The rows (and their copies) now live under the new name.
        copies = self._copies.pop(old.lower(), [])
        if copies:
            self._copies[new.lower()] = copies
        for source, kept in self._copies.items():
            self._copies[source] = [
                replace(copy, target=new) if copy.target.lower() == old.lower() else copy for copy in kept
            ]
        self._renamed_from.pop(old.lower(), None)
        if before.referencing(old):
            # Since SQLite 3.26 the rename re-pointed these children at the new name; worth telling
            # when that new name is dropped later.
            self._renamed_from[new.lower()] = Rename(old, site.file, site.line)


def _location(file: str, line: int, current: MigrationFile) -> str:
    return f"line {line}" if file == current.name else f"{file}:{line}"
