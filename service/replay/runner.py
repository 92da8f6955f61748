"""The replay itself: every surveyed file, batch by batch, through the pipeline, checkpointed.

For each file: skip it if its checkpoint says it is finished; otherwise skip the units done before,
cut the rest into batches, turn each batch into uploads (one per owner and device) and ingest them in
one transaction together with the checkpoint that covers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import assert_never

import msgspec

from service.replay.batching import Batch, cut_batches, cut_shard_batches, skip_units
from service.replay.checkpoints import CheckpointMoved, checkpoint_writer, load_checkpoint, replay_key
from service.replay.documents import parse_export
from service.replay.grouping import PlannedUpload, plan_uploads
from service.replay.inputs import (
    MAX_DOCUMENT_BYTES,
    READ_ERRORS,
    FileFormat,
    InputFile,
    MeteredReader,
    Opened,
    Skipped,
    Unreadable,
    document_too_large,
    walk,
)
from service.replay.model import BadLine, Item, RecordGroup, UnreadableInput
from service.replay.ndjson import read_items
from service.replay.owners import OwnerOption, OwnerResolver
from service.replay.progress import ProgressReporter
from service.replay.shards import Shard, ShardFilter
from service.replay.sqldump import open_dump
from service.replay.summary import (
    ALREADY_REPLAYED,
    DUPLICATE_INPUT,
    NOTHING_TO_REPLAY,
    RESUMED,
    STOPPED,
    UNREADABLE,
    FileReport,
    FileStatus,
    ReplaySummary,
)
from service.store.interface import Storage, WriteTransaction, WriteUnit
from service.usecases.ingest import StagedBatch, apply_staged, commit_batch, ingest_batch, stage_batch

DEFAULT_BATCH_SIZE = 1000
_BAD_LINES_SHOWN_PER_FILE = 20


class ReplayOptions(msgspec.Struct, frozen=True):
    owner: OwnerOption = OwnerOption()
    device_id: str | None = None  # for records whose file or line names no device
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    follow_symlinks: bool = False  # in directories
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    shard: Shard | None = None  # --shard i/n: only the items of owners in this shard


class _Source(msgspec.Struct):
    """A file's items, and how to show progress through it: `position(units done)` out of `total`."""

    items: Iterable[Item]
    total: int
    position: Callable[[int], int]


class _StagedUploads(msgspec.Struct):
    planned: list[PlannedUpload]
    batch: StagedBatch


class Replayer:
    def __init__(
        self, db: Storage, options: ReplayOptions, progress: ProgressReporter, summary: ReplaySummary, *,
        announce_skips: bool = True,
    ) -> None:
        self._announce_skips = announce_skips  # False when the summary printed after says it anyway
        self._db = db
        self._options = options
        self._progress = progress
        self._summary = summary
        self._owners = OwnerResolver(db, options.owner)
        self._seen: dict[str, str] = {}  # replay key -> the file replayed under it in this run
        self._dry_run_transaction: WriteTransaction | None = None

    async def replay(self, paths: list[Path], files: list[InputFile]) -> None:
        """Replay the surveyed `files`, opening `paths` again in the order the survey found them. A dry run
        holds one write transaction for all of them, rolled back at the end: each batch is judged against
        what the batches before it would have written, so its counts are the real run's."""
        if not self._options.dry_run:
            await self._replay_files(paths, files)
            return
        async with self._db.transaction(commit=False) as transaction:
            self._dry_run_transaction = transaction
            try:
                await self._replay_files(paths, files)
            finally:
                self._dry_run_transaction = None

    async def _replay_files(self, paths: list[Path], files: list[InputFile]) -> None:
        with closing(walk(paths, follow_symlinks=self._options.follow_symlinks)) as entries:
            opened = (entry for entry in entries if not isinstance(entry, Skipped))
            for source in files:
                report = FileReport(source)
                self._summary.files.append(report)
                entry = next(opened, None)
                if entry is None or entry.location != source.location:
                    self._fail(report, UNREADABLE, "the input files changed since they were checked")
                    return
                try:
                    await self._replay_file(source, entry, report)
                except asyncio.CancelledError:  # Ctrl-C or SIGTERM: the summary says where it stopped
                    report.status, report.error = STOPPED, "interrupted; the batches committed before are kept"
                    raise
                if report.status == STOPPED:
                    return

    async def _replay_file(self, source: InputFile, entry: Opened | Unreadable, report: FileReport) -> None:
        if isinstance(entry, Unreadable):
            self._fail(report, UNREADABLE, source.refused or entry.reason)
            return
        if source.refused is not None:
            self._fail(report, UNREADABLE, source.refused)
            return
        try:
            await self._replay_stream(source, MeteredReader(entry.stream, source.sha256), report)
        except UnreadableInput as error:
            where = f" (line {error.line})" if error.line is not None else ""
            field = f"{error.field}: " if error.field not in (None, "body") else ""
            self._fail(report, UNREADABLE, f"{field}{error.reason}{where}")
        except READ_ERRORS as error:
            self._fail(report, UNREADABLE, f"cannot read: {error}")
        except CheckpointMoved as error:
            self._fail(report, STOPPED, str(error))
        finally:
            self._progress.finish()

    def _fail(self, report: FileReport, status: FileStatus, error: str) -> None:
        report.status, report.error = status, error
        self._progress.message(f"{report.source.location}: error: {error}")

    async def _replay_stream(self, source: InputFile, reader: MeteredReader, report: FileReport) -> None:
        key = replay_key(source.sha256, self._options.owner, self._options.shard)
        done = await self._units_done_before(key, source, report)
        if done is None:
            return
        with self._open(source, reader, report) as opened:
            self._progress.start(source.location, opened.total)
            batches = 0
            # Two batches in flight: while the writer commits one, the next is read and normalised.
            committing: asyncio.Task[None] | None = None
            try:
                async for batch in self._batches(skip_units(opened.items, done)):
                    staged = await self._stage_batch(source, report, batch)
                    if committing is not None:
                        await asyncio.shield(committing)  # an interrupt does not cut a commit from its count
                    committing = asyncio.create_task(
                        self._commit_batch(key, source, report, batch, staged, done, opened)
                    )
                    done += batch.units
                    batches += 1
            finally:
                if committing is not None:
                    # A batch read before an error in a later one still commits, and an interrupted run
                    # counts the batch whose commit was under way.
                    await asyncio.shield(committing)
        if done == 0:  # the file held no unit (a shard may take none of a file's units: not an error)
            report.status, report.error = NOTHING_TO_REPLAY, "no record in it to replay"
            self._progress.message(f"{source.location}: error: no record in it to replay")
        if batches == 0 and not self._options.dry_run:
            # Nothing (left) to replay: a checkpoint-only transaction records the file as finished.
            await ingest_batch(self._db, [], in_transaction=self._checkpoint(key, source, done, done, finished=True))

    async def _batches(self, items: Iterable[Item]) -> AsyncIterator[Batch]:
        if self._options.shard is None:
            for batch in cut_batches(items, self._options.batch_size):
                yield batch
            return
        async for batch in cut_shard_batches(items, self._options.batch_size,
                                             ShardFilter(self._options.shard, self._owners)):
            yield batch

    async def _units_done_before(self, key: str, source: InputFile, report: FileReport) -> int | None:
        """Where to start in the file, from its checkpoint; None when there is nothing to do."""
        if key in self._seen:
            report.status = DUPLICATE_INPUT
            self._progress.message(f"skipped: {source.location} is the same file as {self._seen[key]}")
            return None
        self._seen[key] = source.location
        checkpoint = await load_checkpoint(self._db, key)
        if checkpoint is not None and checkpoint.finished:
            report.status = ALREADY_REPLAYED
            if self._announce_skips:
                self._progress.message(f"already replayed: {source.location} ({source.sha256})")
            return None
        done = checkpoint.records_done if checkpoint is not None else 0
        if done:
            report.status, report.resumed_from = RESUMED, done
            shard = self._options.shard
            whose = "" if shard is None else f" (counted in the whole file; this is shard {shard})"
            self._progress.message(f"resuming {source.location} after {done:,} records done before{whose}")
        return done

    async def _stage_batch(self, source: InputFile, report: FileReport, batch: Batch) -> _StagedUploads:
        """A batch's uploads (one per owner and device), normalised; nothing is written yet."""
        planned = await plan_uploads(batch.items, self._owners, source, self._options.device_id)
        self._note_bad_lines(source, report, batch.items)
        return _StagedUploads(planned, await stage_batch(self._db, [p.upload for p in planned]))

    async def _commit_batch(
        self, key: str, source: InputFile, report: FileReport, batch: Batch, staged: _StagedUploads, done: int,
        opened: _Source,
    ) -> None:
        """One transaction: the batch's uploads and (unless a dry run) the checkpoint that covers them."""
        if self._dry_run_transaction is not None:
            results = await apply_staged(self._dry_run_transaction, staged.batch)
        else:
            checkpoint = self._checkpoint(key, source, done, done + batch.units, finished=batch.last)
            results = await commit_batch(self._db, staged.batch, in_transaction=checkpoint)
        report.records += batch.taken
        self._summary.add(report, staged.planned, results)
        self._progress.update(opened.position(done + batch.units), report.records)

    @staticmethod
    def _checkpoint(
        key: str, source: InputFile, before: int, after: int, *, finished: bool
    ) -> Callable[[WriteUnit], None]:
        return checkpoint_writer(key, file_name=source.file_name, file_sha256=source.sha256,
                                 done_before=before, done_after=after, finished=finished)

    @contextmanager
    def _open(self, source: InputFile, reader: MeteredReader, report: FileReport) -> Iterator[_Source]:
        match source.format:
            case FileFormat.NDJSON:
                yield _Source(_verified(read_items(reader), reader), source.size, lambda _done: reader.bytes_read)
            case FileFormat.JSON_DOCUMENT:
                data = reader.read(self._options.max_document_bytes + 1)
                if len(data) > self._options.max_document_bytes:
                    raise UnreadableInput(document_too_large(self._options.max_document_bytes))
                document = parse_export(data)
                reader.verify()
                report.kind, report.not_replayed = document.kind, document.not_replayed
                group = RecordGroup(document.claim, document.device_id, document.records, document.deleted)
                yield _Source([group], document.units, lambda done: done)
            case FileFormat.SQL_DUMP:
                self._progress.start(f"loading {source.location}", source.size)
                progress, size = self._progress, source.size
                with open_dump(reader, lambda: progress.update(reader.bytes_read), dump_bytes=size) as rows:
                    reader.verify()
                    report.kind = "SQL dump"
                    yield _Source(rows, rows.count, lambda done: done)
            case None:
                raise UnreadableInput(
                    "not a format the replay reads (full export, practice report, localStorage dump, "
                    "NDJSON batch file, SQL dump)"
                )
            case _:
                assert_never(source.format)

    def _note_bad_lines(self, source: InputFile, report: FileReport, items: list[Item]) -> None:
        for item in items:
            if isinstance(item, BadLine):
                report.bad_line(item.line, item.reason)
                if report.bad_lines_total <= _BAD_LINES_SHOWN_PER_FILE:
                    self._progress.message(f"{source.location}:{item.line}: bad line, kept in quarantine: "
                                           f"{item.reason}")
                elif report.bad_lines_total == _BAD_LINES_SHOWN_PER_FILE + 1:
                    self._progress.message(f"{source.location}: more bad lines; see the summary")


def _verified(items: Iterable[Item], reader: MeteredReader) -> Iterator[Item]:
    """The items, then a check that the file is still the surveyed one. The batcher reads one batch
    ahead, so the check runs before the last batch (the one that marks the file finished) commits."""
    yield from items
    reader.verify()
