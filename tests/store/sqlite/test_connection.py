"""`SyncConnection.insert_rows`: many rows to an INSERT, with what `executemany` of the same rows gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.store.sqlite import guard
from service.store.sqlite.connection import ROWS_PER_STATEMENT, SyncConnection, _open

UPSERT = """INSERT INTO t (k, v) VALUES (?, ?)
ON CONFLICT (k) DO UPDATE SET v = t.v || '+' || excluded.v"""
IF_ABSENT = "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT DO NOTHING"


def _connection(path: Path, *, parameter_limit: int | None = None) -> SyncConnection:
    conn = _open(str(path), read_only=False)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    if parameter_limit is not None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, parameter_limit)
    return SyncConnection(conn)


def _rows(conn: SyncConnection) -> list[tuple[int, str]]:
    return [(r["k"], r["v"]) for r in conn.fetchall("SELECT k, v FROM t ORDER BY k")]


@pytest.mark.parametrize("count", [0, 1, 2, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, ROWS_PER_STATEMENT + 1, 1000])
def test_every_row_goes_in_whatever_the_count(tmp_path: Path, count: int) -> None:
    conn = _connection(tmp_path / "a.db")
    rows = [(k, f"v{k}") for k in range(count)]
    assert conn.insert_rows(IF_ABSENT, rows) == count
    assert _rows(conn) == rows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.text(max_size=3)), max_size=400))
def test_same_rows_and_count_as_executemany(tmp_path_factory: pytest.TempPathFactory,
                                            rows: list[tuple[int, str]]) -> None:
    """Rows that conflict with each other, within one statement or across, end as executemany leaves
    them, in the same order, and the count of rows changed is the same."""
    for sql in (UPSERT, IF_ABSENT):
        folder = tmp_path_factory.mktemp("db")
        one_by_one, many = _connection(folder / "one.db"), _connection(folder / "many.db")
        assert many.insert_rows(sql, rows) == one_by_one.executemany(sql, rows)
        assert _rows(many) == _rows(one_by_one)


def test_a_statement_without_one_row_of_parameters_is_refused(tmp_path: Path) -> None:
    conn = _connection(tmp_path / "a.db")
    with pytest.raises(ValueError, match="exactly one VALUES row"):
        conn.insert_rows("INSERT INTO t (k, v) SELECT ?, ?", [(1, "a")])
    with pytest.raises(ValueError, match="exactly one VALUES row"):
        conn.insert_rows("INSERT INTO t (k, v) VALUES (?1, ?2)", [(1, "a")])


def test_replace_is_refused_before_any_row_is_written(tmp_path: Path) -> None:
    conn = _connection(tmp_path / "a.db")
    with pytest.raises(guard.GuardViolation):
        conn.insert_rows("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", [(1, "a")])
    assert _rows(conn) == []


def test_a_failing_row_leaves_the_statement_it_was_in_unwritten(tmp_path: Path) -> None:
    """A constraint failure aborts the statement it is in: none of its rows stay, as with one statement
    per row the failing one and those after it would not (callers run in a transaction and roll back)."""
    conn = _connection(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.insert_rows("INSERT INTO t (k, v) VALUES (?, ?)", [(1, "a"), (2, None)])
    assert _rows(conn) == []


def test_a_lower_limit_of_parameters_gets_smaller_statements(tmp_path: Path) -> None:
    """SQLite before 3.32 allows 999 parameters a statement; a build like that still takes every row."""
    sync = _connection(tmp_path / "a.db", parameter_limit=50)  # 25 rows of two
    rows = [(k, f"v{k}") for k in range(300)]
    assert sync.insert_rows(IF_ABSENT, rows) == 300
    assert _rows(sync) == rows


class _BusyAtFirst(sqlite3.Connection):
    """Answers SQLITE_BUSY to the first two journal-mode switches, as SQLite does while another process
    switches the same fresh file."""

    refused = 0

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "PRAGMA journal_mode = WAL" and _BusyAtFirst.refused < 2:
            _BusyAtFirst.refused += 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = 5  # type: ignore[attr-defined]
            raise error
        return super().execute(sql, *args)  # type: ignore[arg-type]


def test_a_file_another_process_is_switching_to_wal_is_opened_once_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=_BusyAtFirst, **k))
    conn = _open(str(tmp_path / "a.db"), read_only=False)
    try:
        assert _BusyAtFirst.refused == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
