"""The lint pass: run the migrations against an empty scratch database and check each statement.

Before each statement the catalog (sqlite_master and PRAGMA foreign_key_list) says which tables are
parents of ON DELETE CASCADE / SET NULL / SET DEFAULT children at that moment, so the rules see exactly
what SQLite would do, including how ALTER TABLE ... RENAME re-points the children.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import NoReturn

from . import rules, sql_text
from .catalog import Catalog, CatalogReader, Table
from .model import Finding, MigrationFile, MigrationInputError, Statement
from .rules import Site


@dataclass(frozen=True)
class Copy:
    """Rows of some table were copied into `target` by the statement at file:line."""

    target: str
    file: str
    line: int


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
    # Set when SQLite could not execute a statement; `findings` then covers what came before it.
    error: MigrationInputError | None


def lint_migrations(migrations: list[MigrationFile]) -> LintResult:
    linter = Linter()
    try:
        for migration in migrations:
            linter.lint_file(migration)
    except MigrationInputError as error:
        return LintResult(linter.findings, error)
    finally:
        linter.close()
    return LintResult(linter.findings, None)


class Linter:
    def __init__(self) -> None:
        self._connection = open_scratch_database()
        self._catalog = CatalogReader(self._connection)
        # Copies of each table's rows so far, keyed by the (lower-case) name of the copied table.
        self._copies: dict[str, list[Copy]] = {}
        # How a table got its current name, for explaining rename-first rebuilds.
        self._renamed_from: dict[str, Rename] = {}
        # Parents dropped in the current file while children still referenced them: name -> the DROP.
        self._dropped_with_children: dict[str, tuple[Site, str]] = {}
        self.findings: list[Finding] = []

    def close(self) -> None:
        self._connection.close()

    def lint_file(self, migration: MigrationFile) -> None:
        file_findings: list[Finding] = []
        self._dropped_with_children = {}
        try:
            for index, statement in enumerate(migration.statements):
                before = self._catalog.current()
                self._execute(migration, statement)
                after = self._catalog.current()
                file_findings += self._check(migration, index, before, after)
            file_findings += self._dangling_references()
        finally:
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

    def _execute(self, migration: MigrationFile, statement: Statement) -> None:
        if sql_text.is_transaction_control(statement) or sql_text.is_foreign_keys_pragma(statement):
            # D1 rejects the former and ignores the latter inside the migration's transaction.
            return
        try:
            self._connection.execute(statement.sql).fetchall()
        except sqlite3.IntegrityError as error:
            if not sql_text.changes_data(statement):
                raise_input_error(migration, statement, str(error))
            # A data change that needs production rows the empty scratch database lacks: its schema
            # effect is nil, so the lint carries on.
        except sqlite3.Error as error:
            raise_input_error(migration, statement, str(error))

    def _check(self, migration: MigrationFile, index: int, before: Catalog, after: Catalog) -> list[Finding]:
        statement = migration.statements[index]
        site = Site(migration.name, statement.line, sql_text.shorten(statement.code))
        findings: list[Finding] = []
        if sql_text.is_transaction_control(statement):
            findings.append(rules.transaction_statement(site))
        setting = sql_text.foreign_key_pragma(statement)
        if setting:
            findings.append(rules.foreign_keys_pragma_ineffective(site, setting))
        findings += self._check_replace(statement, site, before)
        findings += self._check_delete_all(statement, site, before)
        self._record_copy(statement, site, before)
        if sql_text.is_drop_table(statement):
            findings += self._check_drop(migration, index, site, before, after)
        self._record_rename(statement, site, before, after)
        return findings

    def _check_replace(self, statement: Statement, site: Site, before: Catalog) -> list[Finding]:
        target = sql_text.replace_target(statement)
        table = before.get(target) if target else None
        if table is None:
            return []
        children = before.effects_of_deleting_rows(table.name)
        if not children:
            return []
        return [rules.replace_into_referenced_parent(site, table.name, children, table.primary_key)]

    def _check_delete_all(self, statement: Statement, site: Site, before: Catalog) -> list[Finding]:
        target = sql_text.delete_without_where_target(statement)
        table = before.get(target) if target else None
        if table is None:
            return []
        children = before.effects_of_deleting_rows(table.name)
        if not children:
            return []
        return [rules.delete_all_from_referenced_parent(site, table.name, children)]

    def _check_drop(
        self, migration: MigrationFile, index: int, site: Site, before: Catalog, after: Catalog
    ) -> list[Finding]:
        findings: list[Finding] = []
        for table in before.tables.values():
            if after.has(table.name):
                continue
            findings += self._judge_drop(migration, index, site, table, before)
            if after.all_referencing(table.name):
                self._dropped_with_children[table.name.lower()] = (site, table.name)
            self._forget_dropped(table.name)
        return findings

    def _judge_drop(
        self, migration: MigrationFile, index: int, site: Site, table: Table, before: Catalog
    ) -> list[Finding]:
        children = before.effects_of_deleting_rows(table.name)
        copies = self._copies.get(table.name.lower(), [])
        if children and copies:
            renamed = self._renamed_from.get(table.name.lower())
            original = renamed.old_name if renamed else table.name
            steps = self._rebuild_steps(migration, index, table.name, copies[-1])
            return [rules.rebuild_referenced_parent(site, table.name, original, children, steps)]
        findings = []
        if children:
            findings.append(rules.drop_referenced_parent(site, table.name, children))
        if not copies and table.holds_rows:
            findings.append(rules.drop_without_copy(site, table.name))
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
        steps.append(f"rows copied into {copy.target} at {_location(copy.file, copy.line, migration)}")
        steps.append(f"{table} dropped at line {migration.statements[index].line}")
        for later in migration.statements[index + 1 :]:
            rename = sql_text.table_rename(later)
            if rename and (rename[0].lower(), rename[1].lower()) == (copy.target.lower(), table.lower()):
                steps.append(f"{rename[0]} renamed to {rename[1]} at line {later.line}")
                break
        return steps

    def _record_copy(self, statement: Statement, site: Site, before: Catalog) -> None:
        copy = sql_text.copy_of(statement)
        if copy is None:
            return
        target, sources = copy
        for source in sources:
            if before.has(source):
                self._copies.setdefault(source.lower(), []).append(Copy(target, site.file, site.line))

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
                Copy(new, copy.file, copy.line) if copy.target.lower() == old.lower() else copy for copy in kept
            ]
        self._renamed_from.pop(old.lower(), None)
        if before.referencing(old):
            # Since SQLite 3.26 the rename re-pointed these children at the new name; worth telling
            # when that new name is dropped later.
            self._renamed_from[new.lower()] = Rename(old, site.file, site.line)


def _location(file: str, line: int, current: MigrationFile) -> str:
    return f"line {line}" if file == current.name else f"{file}:{line}"


def raise_input_error(migration: MigrationFile, statement: Statement, message: str) -> NoReturn:
    raise MigrationInputError(f"{migration.name}:{statement.line}", f"SQLite cannot execute this statement: {message}")
