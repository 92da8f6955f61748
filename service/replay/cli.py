"""`python -m service replay [--db PATH] [--user ID | --email ADDR] [--device ID] [--dry-run] [--json] [--shard I/N]
[--batch-size N] PATH...`: replay exported device data through the same pipeline as the HTTP uploads.

Exit status: 0 when every record was processed (quarantined records and bad lines are reported, not
errors); 2 when an input cannot be read; 1 when the replay stopped (database error, a concurrent run);
130 when interrupted. Run the same command again to continue where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from service import changefeed
from service.config import DEFAULT_DB_PATH
from service.replay.inputs import MAX_DOCUMENT_BYTES, InputFile, survey
from service.replay.model import is_device_id
from service.replay.owners import OwnerOption
from service.replay.progress import ProgressReporter, progress_for
from service.replay.report import print_rich, render_json, render_text
from service.replay.runner import DEFAULT_BATCH_SIZE, Replayer, ReplayOptions
from service.replay.shards import Shard
from service.replay.summary import ReplaySummary
from service.store import (
    DATABASE_URL_ENV,
    add_database_url_argument,
    database_url_from_env,
    is_postgres_url,
    open_storage,
)
from service.store.sqlite.dbfile import INIT_FLAG, DatabaseFileError, check_database_file
from service.workers import close_shared_pool

EXIT_UNREADABLE = 2
EXIT_STOPPED = 1
EXIT_INTERRUPTED = 130


EPILOG = (
    "Exit status: 0 when every record was processed (quarantined records and bad lines are reported, not "
    "errors), 2 when an input cannot be read, 1 when the replay stopped, 130 when interrupted. Run the same "
    "command again to continue where it stopped: a file is known by its SHA-256 (and the owner option), so a "
    "finished file, even renamed, is not replayed twice."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = parser.epilog or EPILOG
    parser.add_argument(
        "paths", metavar="PATH", nargs="+", type=Path,
        help="files to replay: full data exports (1.0, 2.0), practice reports, localStorage dumps, NDJSON "
        "batch files (.ndjson, .jsonl), SQL dumps (.sql); or directories, .zip or .tar.gz archives of them",
    )
    parser.add_argument("--db", metavar="PATH", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    add_database_url_argument(parser)
    parser.add_argument(INIT_FLAG, action="store_true",
                        help="add the app's tables to a SQLite file that holds other tables but not the app's "
                        "(refused without it)")
    owner = parser.add_mutually_exclusive_group()
    owner.add_argument(
        "--user", metavar="ID", type=_non_empty,
        help="the user the data belongs to; data naming someone else is quarantined as a mismatch",
    )
    owner.add_argument("--email", metavar="ADDR", type=_non_empty, help="the same, by the user's email")
    parser.add_argument("--device", metavar="ID", type=_device_id,
                        help="the device the data came from, when the file or line names none")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="process everything and report, commit nothing: the whole run is one transaction, rolled back at "
        "the end, so its counts are the real run's (it holds the database's write lock meanwhile)",
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser.add_argument("--batch-size", metavar="N", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"records per transaction and checkpoint (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument(
        "--shard", metavar="I/N", type=_shard,
        help="replay only the records of the users in shard I of N (by a stable hash of the resolved owner; "
        "records naming no owner and unreadable lines go to shard 1): run N processes, 1/N to N/N, on the same "
        "inputs to share them by user; each resumes on its own",
    )
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="follow symbolic links inside directories (by default they are skipped and listed: "
                        "a link can lead out of the tree)")
    parser.add_argument("--max-document-mb", metavar="MB", type=_positive_int,
                        default=MAX_DOCUMENT_BYTES // (1024 * 1024),
                        help="largest JSON document (a full export, report or localStorage dump) read, in MB; "
                        f"a document is parsed whole, so larger ones are refused unread (default "
                        f"{MAX_DOCUMENT_BYTES // (1024 * 1024)}); NDJSON and SQL dumps are streamed, any size")


def run(args: argparse.Namespace) -> int:
    db_path = args.db or os.environ.get("RESYNC_DB", DEFAULT_DB_PATH)
    if getattr(args, "database_url", None):
        os.environ[DATABASE_URL_ENV] = args.database_url  # as `python -m service` passes it on
    url = database_url_from_env()
    if url is not None and is_postgres_url(url):
        from service.store.postgres.engine import redact

        db_path = redact(url)  # the summary names the server, never its password
    try:
        if not is_postgres_url(url):  # a PostgreSQL server is checked when it is opened
            check_database_file(db_path, must_exist=True, init_app_schema=args.init_app_schema)
    except DatabaseFileError as error:
        hint = "" if Path(db_path).exists() else " (give --db or set RESYNC_DB)"
        print(f"error: {error}{hint}", file=sys.stderr)
        return EXIT_UNREADABLE
    options = ReplayOptions(OwnerOption(args.user, args.email), args.device, args.dry_run, args.batch_size,
                            args.follow_symlinks, args.max_document_mb * 1024 * 1024, args.shard)
    summary = ReplaySummary(db_path, args.dry_run, shard=args.shard)
    progress = progress_for(sys.stderr)
    with _sigterm_as_ctrl_c():
        stopped = _run(db_path, args, options, summary, progress)
    progress.close()
    if stopped == EXIT_INTERRUPTED:
        summary.interrupted = True  # what was done before it stopped, for the operator or the script
    elif stopped is not None:
        return stopped
    _print_summary(summary, as_json=args.json)
    return summary.exit_code


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """`kill`, `docker stop` or a systemd stop sends SIGTERM: stop as on Ctrl-C, where the batch being
    written commits or rolls back whole with its checkpoint, and say so, instead of dying silently.
    (Only the main thread may set signal handlers; elsewhere, as when a test runs the command, no change.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)  # whoever handles Ctrl-C now (asyncio's runner, or the default) acts
    else:
        # Ctrl-C is ignored, as for a job started in the background by a script: stop all the same.
        raise KeyboardInterrupt


def _run(
    db_path: str, args: argparse.Namespace, options: ReplayOptions, summary: ReplaySummary,
    progress: ProgressReporter,
) -> int | None:
    """The replay itself; the exit code when it stopped early, None when there is a summary to print."""
    try:
        found = survey(args.paths, on_bytes=_survey_progress(progress), follow_symlinks=options.follow_symlinks,
                       max_document_bytes=options.max_document_bytes)
        progress.finish()
        summary.skipped, summary.problems = found.skipped, found.problems
        summary.problems += [f"{f.location}: not a format the replay reads" for f in found.files
                             if f.format is None and f.refused is None]
        if summary.problems:
            for problem in summary.problems:
                progress.message(f"error: {problem}")
            progress.message("nothing was replayed")
        else:
            try:
                asyncio.run(_replay(db_path, options, args.paths, found.files, progress, summary,
                                    announce_skips=args.json))
            finally:
                close_shared_pool()
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: every batch committed so far is kept; run the same command again to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except sqlite3.Error as error:
        progress.close()
        print(f"error: the database refused the replay: {error}; every batch committed so far is kept, "
              "run the same command again to continue", file=sys.stderr)
        return EXIT_STOPPED
    return None


async def _replay(
    db_path: str,
    options: ReplayOptions,
    paths: list[Path],
    files: list[InputFile],
    progress: ProgressReporter,
    summary: ReplaySummary,
    *,
    announce_skips: bool,
) -> None:
    db = await open_storage(db_path, url=database_url_from_env())
    try:
        async with changefeed.publishing(db):  # on PostgreSQL, the replicas' sockets hear the replay
            await Replayer(db, options, progress, summary, announce_skips=announce_skips).replay(paths, files)
    finally:
        await db.close()


def _print_summary(summary: ReplaySummary, *, as_json: bool) -> None:
    if as_json:
        print(render_json(summary))
    elif sys.stdout.isatty():
        print_rich(summary, Console())
    else:
        print(render_text(summary))


def _survey_progress(progress: ProgressReporter) -> Callable[[str, int], None]:
    current: list[str] = []

    def on_bytes(location: str, done: int) -> None:
        if current != [location]:
            current[:] = [location]
            progress.start(f"checking {location}", None)
        progress.update(done)

    return on_bytes


def _non_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def _device_id(value: str) -> str:
    if not is_device_id(value):
        raise argparse.ArgumentTypeError("must be 1 to 64 characters of A-Z, a-z, 0-9, _ or -")
    return value


def _shard(value: str) -> Shard:
    try:
        return Shard.parse(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service replay",
                                     description="Replay exported device data through the recovery pipeline.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
