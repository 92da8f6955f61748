"""Splitting migration files into statements and recognising the statement shapes the rules care about.

Only the *kind* of statement is read from the text here; what tables exist and who references whom is
always taken from SQLite's own catalog (see catalog.py).
"""

from __future__ import annotations

import re
import sqlite3

from .model import Statement

# One identifier as SQLite accepts it: "quoted", [bracketed], `backticked` or bare.
_IDENT = r'(?:"(?:[^"]|"")+"|\[[^\]]+\]|`(?:[^`]|``)+`|[\w$]+)'
# An optionally schema-qualified name (main.users).
_NAME = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}"

# Literals and comments, in one alternation so a quote inside a comment (or `--` inside a string)
# is read the way SQLite reads it.
_LITERAL_OR_COMMENT = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)""",
    re.S,
)
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)

_DROP_TABLE = re.compile(r"^DROP\s+TABLE\b", re.I)
_DROP_TABLE_TARGET = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME})", re.I)
_SCHEMA_TABLE_INSERT = re.compile(r"""^INSERT\s+INTO\s+["`\[]?sqlite_(?:master|schema)["`\]]?""", re.I)
_DDL = re.compile(r"^(?:CREATE|ALTER|DROP)\b", re.I)
_PRAGMA = re.compile(r"^PRAGMA\b", re.I)
# SQLite's messages for text it cannot parse at all, whatever the schema.
_SYNTAX_ERRORS = ("syntax error", "incomplete input", "unrecognized token")
_RENAME_TABLE = re.compile(rf"^ALTER\s+TABLE\s+({_NAME})\s+RENAME\s+TO\s+({_NAME})", re.I)
_CREATE = re.compile(r"^CREATE\b", re.I)
_CREATE_TABLE_AS = re.compile(
    rf"^CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})\s+AS\b", re.I
)
_REPLACE_INTO = re.compile(rf"\b(?:INSERT\s+OR\s+REPLACE|REPLACE)\s+INTO\s+({_NAME})", re.I)
_UPDATE_OR_REPLACE = re.compile(rf"\bUPDATE\s+OR\s+REPLACE\s+({_NAME})", re.I)
_INSERT_INTO = re.compile(rf"\b(?:INSERT(?:\s+OR\s+\w+)?|REPLACE)\s+INTO\s+({_NAME})", re.I)
_DELETE_FROM = re.compile(rf"\bDELETE\s+FROM\s+({_NAME})(.*)$", re.I | re.S)
_WHERE = re.compile(r"\bWHERE\b", re.I)
_SOURCE_TABLE = re.compile(rf"\b(?:FROM|JOIN)\s+({_NAME})", re.I)
_FOREIGN_KEY_PRAGMA = re.compile(
    r"""^PRAGMA\s+(?:\w+\s*\.\s*)?(foreign_keys|defer_foreign_keys)\b\s*(?:(?:=\s*|\(\s*)['"]?(\w+))?""",
    re.I,
)
_TRANSACTION_CONTROL = re.compile(r"^(?:BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)

_DATA_CHANGE = re.compile(r"^(?:INSERT|REPLACE|UPDATE|DELETE|WITH)\b", re.I)

_OFF_VALUES = frozenset({"off", "0", "false", "no"})
_ON_VALUES = frozenset({"on", "1", "true", "yes"})


def split_statements(text: str) -> list[Statement]:
    """Split a file into statements the way SQLite's own shell does, keeping each start line.

    A `;` ends a statement only when `sqlite3.complete_statement` agrees, so semicolons inside strings,
    comments and trigger bodies (BEGIN ... END) stay inside their statement.
    """
    statements: list[Statement] = []
    start = 0
    for semicolon in re.finditer(";", text):
        end = semicolon.end()
        if sqlite3.complete_statement(text[start:end]):
            _append_statement(statements, text, start, end)
            start = end
    # Whatever follows the last complete statement: a final statement without `;`, or just comments.
    _append_statement(statements, text, start, len(text))
    return statements


def _append_statement(statements: list[Statement], text: str, start: int, end: int) -> None:
    chunk = text[start:end]
    noise = _LEADING_NOISE.match(chunk)
    sql_start = noise.end() if noise else 0
    sql = chunk[sql_start:].strip()
    code = _collapse(strip_comments(sql)).rstrip(";").strip()
    if not code:
        return
    line = text.count("\n", 0, start + sql_start) + 1
    masked = _collapse(strip_comments(sql, mask_strings=True)).rstrip(";").strip()
    statements.append(Statement(line=line, sql=sql, code=code, masked=masked))


def strip_comments(sql: str, *, mask_strings: bool = False) -> str:
    """Remove comments; with mask_strings, also empty every '...' literal."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith(("--", "/*")):
            return " "
        if mask_strings and token.startswith("'"):
            return "''"
        return token

    return _LITERAL_OR_COMMENT.sub(replace, sql)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def unquote_name(raw: str) -> str:
    """`main."Users"` -> `Users`: the table part of a possibly qualified, possibly quoted name."""
    last: str = re.findall(_IDENT, raw)[-1]
    if last[0] in '"`':
        return last[1:-1].replace(last[0] * 2, last[0])
    if last[0] == "[":
        return last[1:-1]
    return last


def shorten(code: str, limit: int = 120) -> str:
    return code if len(code) <= limit else code[: limit - 3] + "..."


def is_drop_table(statement: Statement) -> bool:
    return bool(_DROP_TABLE.match(statement.masked))


def drop_table_target(statement: Statement) -> str | None:
    """The table named by DROP TABLE [IF EXISTS] name, else None."""
    match = _DROP_TABLE_TARGET.match(statement.masked)
    return unquote_name(match.group(1)) if match else None


def table_rename(statement: Statement) -> tuple[str, str] | None:
    """(old, new) of `ALTER TABLE old RENAME TO new`, else None."""
    match = _RENAME_TABLE.match(statement.masked)
    return (unquote_name(match.group(1)), unquote_name(match.group(2))) if match else None


def _runs_now(statement: Statement) -> bool:
    # DML inside CREATE TRIGGER runs when the trigger fires later, not during the migration.
    return not _CREATE.match(statement.masked)


def replace_target(statement: Statement) -> str | None:
    """The table of REPLACE INTO / INSERT OR REPLACE INTO / UPDATE OR REPLACE, else None."""
    if not _runs_now(statement):
        return None
    match = _REPLACE_INTO.search(statement.masked) or _UPDATE_OR_REPLACE.search(statement.masked)
    return unquote_name(match.group(1)) if match else None


def delete_without_where_target(statement: Statement) -> str | None:
    """The table of a DELETE FROM that has no WHERE clause, else None."""
    if not _runs_now(statement):
        return None
    match = _DELETE_FROM.search(statement.masked)
    if match is None or _WHERE.search(match.group(2)):
        return None
    return unquote_name(match.group(1))


def copy_of(statement: Statement) -> tuple[str, tuple[str, ...]] | None:
    """(target, source tables) of INSERT INTO t SELECT ... FROM s / CREATE TABLE t AS SELECT ... FROM s."""
    match = _CREATE_TABLE_AS.match(statement.masked)
    if match is None and _runs_now(statement):
        match = _INSERT_INTO.search(statement.masked)
    if match is None:
        return None
    target = unquote_name(match.group(1))
    sources = tuple(
        dict.fromkeys(
            source
            for source in (unquote_name(raw) for raw in _SOURCE_TABLE.findall(statement.masked))
            if source.lower() != target.lower()
        )
    )
    return (target, sources) if sources else None


def foreign_key_pragma(statement: Statement) -> str | None:
    """'foreign_keys=OFF' or 'defer_foreign_keys=ON' when the statement sets one, else None."""
    match = _FOREIGN_KEY_PRAGMA.match(statement.code)
    if match is None or match.group(2) is None:
        return None
    pragma, value = match.group(1).lower(), match.group(2).lower()
    if pragma == "foreign_keys" and value in _OFF_VALUES:
        return "foreign_keys=OFF"
    if pragma == "defer_foreign_keys" and value in _ON_VALUES:
        return "defer_foreign_keys=ON"
    return None


def is_foreign_keys_pragma(statement: Statement) -> bool:
    """Any PRAGMA foreign_keys (read or write); not defer_foreign_keys."""
    match = _FOREIGN_KEY_PRAGMA.match(statement.code)
    return match is not None and match.group(1).lower() == "foreign_keys"


def changes_data(statement: Statement) -> bool:
    return bool(_DATA_CHANGE.match(statement.masked))


def is_transaction_control(statement: Statement) -> bool:
    return bool(_TRANSACTION_CONTROL.match(statement.masked))


def is_schema_table_insert(statement: Statement) -> bool:
    """`INSERT INTO sqlite_schema ...`: how sqlite3's .dump writes virtual tables (after writable_schema=ON)."""
    return bool(_SCHEMA_TABLE_INSERT.match(statement.masked))


def retarget_schema_table_insert(statement: Statement, table: str) -> str:
    """The same INSERT, into `table` instead of sqlite_schema / sqlite_master."""
    return _SCHEMA_TABLE_INSERT.sub(f"INSERT INTO {table}", statement.sql, count=1)


def is_ddl(statement: Statement) -> bool:
    return bool(_DDL.match(statement.masked))


def is_pragma(statement: Statement) -> bool:
    return bool(_PRAGMA.match(statement.masked))


def is_syntax_error(message: str) -> bool:
    return any(text in message for text in _SYNTAX_ERRORS)
