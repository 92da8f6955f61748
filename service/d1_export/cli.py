"""Command line: `python -m service export-d1 [--db PATH] --out DIR [--since TIME | --upload ID]`
(or `python -m service.d1_export ...`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.config import DEFAULT_DB_PATH

from .exporter import ExportResult, Limits, export_rows, write_reports
from .files import MANIFEST_NAME, OVERSIZE_NAME, OutputError, prepare_out_dir
from .source import Selection, SourceError, SourceFile, describe_file, open_source, parse_since
from .statements import D1_MAX_STATEMENT_BYTES, LOGBOOK_ENTRIES, SYNC_DATA

EXIT_OK = 0
EXIT_ROWS_LEFT_OUT = 1  # exported, but some rows could not be written as SQL D1 accepts (see oversize.json)
EXIT_BAD_INPUT = 2  # nothing exported: database, filter or output directory unusable

DEFAULT_MAX_STATEMENT_BYTES = 99_000  # under D1's 100,000, with room for how a tool may count
MIN_MAX_STATEMENT_BYTES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help=f"the recovered app database, read only (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the numbered .sql files, manifest.json and oversize.json")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--since", type=parse_since, metavar="TIME",
                       help="only sync_data rows changed at or after TIME (ISO 8601, or 'YYYY-MM-DD HH:MM:SS' UTC),"
                       " and their logbook_entries rows")
    which.add_argument("--upload", metavar="ID", help="only the rows whose records came with this upload")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR, replacing the files of an earlier export there")
    parser.add_argument("--max-statement-bytes", type=_statement_limit, default=DEFAULT_MAX_STATEMENT_BYTES,
                        metavar="N", help=f"longest statement written (default {DEFAULT_MAX_STATEMENT_BYTES};"
                        f" D1 refuses over {D1_MAX_STATEMENT_BYTES})")
    parser.add_argument("--max-file-statements", type=_positive, default=1000, metavar="N",
                        help="statements per file (default 1000; a row's statements are never split across files)")
    parser.add_argument("--max-file-bytes", type=_positive, default=5_000_000, metavar="N",
                        help="bytes per file (default 5000000)")


def run(args: argparse.Namespace) -> int:
    """Export; 0 done, 1 done but rows left out (listed in oversize.json), 2 nothing exported."""
    selection = Selection(since=args.since, upload_id=args.upload)
    limits = Limits(args.max_statement_bytes, args.max_file_statements, args.max_file_bytes)
    url = os.environ.get("RESYNC_DATABASE_URL", "")
    if args.db is None and url.startswith(("postgresql://", "postgres://")):
        return _run_from_postgres(args, url, selection, limits)
    args.db = Path(args.db or os.environ.get("RESYNC_DB", DEFAULT_DB_PATH))
    try:
        with open_source(args.db) as source:
            # Hashed inside the read transaction: without a WAL, no writer can change the file meanwhile.
            source_file = describe_file(args.db)
            if selection.upload_id is not None:
                source.check_upload(selection.upload_id)
            prepare_out_dir(args.out, force=args.force)
            result = export_rows(source, selection, args.out, limits)
        write_reports(result, source_file, selection, limits)
    except (SourceError, OutputError) as error:
        print(f"export-d1: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary(result, source_file))
    return EXIT_ROWS_LEFT_OUT if result.skipped else EXIT_OK


def _run_from_postgres(args: argparse.Namespace, url: str, selection: Selection, limits: Limits) -> int:
    """The same export from a PostgreSQL database (RESYNC_DATABASE_URL), in one read-only snapshot."""
    from service.store.postgres.d1_source import open_pg_source

    try:
        with open_pg_source(url) as (source, source_file):
            if selection.upload_id is not None:
                source.check_upload(selection.upload_id)
            prepare_out_dir(args.out, force=args.force)
            result = export_rows(source, selection, args.out, limits)
        write_reports(result, source_file, selection, limits)
    except (SourceError, OutputError) as error:
        print(f"export-d1: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary(result, source_file))
    return EXIT_ROWS_LEFT_OUT if result.skipped else EXIT_OK


def summary(result: ExportResult, source_file: SourceFile) -> str:
    rows = result.rows
    lines = [
        f"export-d1: {rows[SYNC_DATA.name]} sync_data rows, {rows[LOGBOOK_ENTRIES.name]} logbook_entries rows,"
        f" sync_sequence at least {result.sequence_value}",
        f"  {len(result.files)} files, {result.statements} statements (longest {result.max_statement_bytes} bytes)"
        f" in {result.out_dir}; manifest {result.out_dir / MANIFEST_NAME}",
        f"  source sha256 {source_file.sha256}",
    ]
    if source_file.wal_pending:
        lines.append("  note: the database has a non-empty -wal file: its commits were exported, but the sha256"
                     " covers the main file only (stop the service or checkpoint for a reproducible hash)")
    if result.split:
        lines.append(f"  {len(result.split)} rows too long for one statement were split into appended pieces"
                     f" (complete; see {OVERSIZE_NAME})")
    if result.skipped:
        lines.append(f"  WARNING: {len(result.skipped)} rows could not be written and are NOT in the files:"
                     f" see {result.out_dir / OVERSIZE_NAME}")
    lines.append(f"  apply in name order: for f in {result.out_dir}/[0-9]*.sql; do"
                 ' wrangler d1 execute <DATABASE> --remote --file "$f" || break; done')
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _statement_limit(text: str) -> int:
    value = _integer(text)
    if not MIN_MAX_STATEMENT_BYTES <= value < D1_MAX_STATEMENT_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text} is outside {MIN_MAX_STATEMENT_BYTES}..{D1_MAX_STATEMENT_BYTES - 1} (under D1's statement limit)"
        )
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from error
