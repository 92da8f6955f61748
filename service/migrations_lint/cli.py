"""Command line: `python -m service lint-migrations PATH...` (or `python -m service.migrations_lint`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .baseline import read_baseline
from .linter import lint_migrations
from .model import MigrationFile, MigrationInputError
from .report import EXIT_UNREADABLE, LintReport, render_json, render_text
from .simulation import simulate_migrations
from .sql_text import split_statements


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        type=Path,
        help="a migrations directory (its .sql files run in file-name order, as wrangler applies them) "
        "or single .sql files; several PATHs form one migration sequence, in the order given",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--baseline",
        metavar="SCHEMA",
        type=Path,
        help="the live schema the migrations start from, when production drifted from them: a schema "
        ".sql file, `wrangler d1 export DB --remote --no-data` output, a sqlite3 .dump, or a SQLite "
        "database file (only its schema is used)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="also apply the migrations to a scratch database seeded with synthetic rows and report "
        "which tables lose rows in each file",
    )


def run(args: argparse.Namespace) -> int:
    """Lint (and optionally simulate) the migrations; 0 clean, 1 errors or rows lost, 2 unreadable input."""
    try:
        migrations = load_migrations(args.paths)
        baseline = read_baseline(args.baseline) if args.baseline else None
        lint = lint_migrations(migrations, baseline)
    except MigrationInputError as error:
        _print_error(error)
        return EXIT_UNREADABLE
    simulation = simulate_migrations(migrations, baseline) if args.simulate else None
    report = LintReport(
        [m.name for m in migrations], lint.findings, simulation, baseline.name if baseline else None, lint.notes
    )
    print(render_json(report) if args.format == "json" else render_text(report))
    return report.exit_code()


def _print_error(error: MigrationInputError) -> None:
    print(f"{error.location}: error: {error.message}", file=sys.stderr)


def load_migrations(paths: list[Path]) -> list[MigrationFile]:
    return [MigrationFile(path, tuple(split_statements(_read(path)))) for path in migration_files(paths)]


def migration_files(paths: list[Path]) -> list[Path]:
    """Expand directories to their .sql files sorted by file name; keep explicit files in the given order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted((p for p in path.iterdir() if p.is_file() and p.suffix == ".sql"), key=lambda p: p.name)
            if not found:
                raise MigrationInputError(str(path), "no .sql migration files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise MigrationInputError(str(path), "no such file or directory")
    return list(dict.fromkeys(files))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise MigrationInputError(str(path), f"cannot read: {error}") from error
