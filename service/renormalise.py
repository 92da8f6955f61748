"""`python -m service renormalise`: bring rows an earlier version stored up to the current rules.

Rows recovered before a rule changed (piece ids, the stored text's number spelling, `deleted_at`'s form,
repertoire keys) keep the old form: their piece ids no longer link to the app's repertoire. The raw
records the service kept are the truth, so each stored row is normalised again from the raw record that
produced it, with the same `normalise` every upload uses, and rewritten when the result differs:

- a row whose document changed is updated in place: new data and checksum, version + 1 and a fresh `seq`
  (so devices' live sync sees it), its `logbook_entries` copy and merge state (content key) with it; the
  text it held is archived (`recovery_archive`, reason `renormalised`), nothing is lost;
- a `deleted_at` in an older form is rewritten as ISO-Z with milliseconds, from the kept deletion time;
- a repertoire item whose key (its normalised scoreId) changed moves: the new key gets the document
  through the merge rules (a newer version there wins; the loser is archived), the old row is
  soft-deleted (or, when it was already deleted, its deletion moves with it) and its merge state records
  the new key in `duplicate_of`, so a second run knows it moved;
- an entry kept as a content duplicate of another whose content no longer matches under the new rules
  becomes an entry of its own, through the merge rules.

Rows without a raw record (written by the app itself) are reported, never touched. Nothing is deleted or
dropped. Each user is one transaction; a dry run does everything and rolls it back. A second run
changes nothing, because it starts from the raw records, not from what the first run wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from service import changefeed, jsontext
from service.config import DEFAULT_DB_PATH
from service.domain.checksum import js_stringify
from service.domain.merge import (
    ArchivedVersion,
    EntityKey,
    MergePlan,
    StateWrite,
    StoredEntity,
    SyncWrite,
    content_probes,
    plan_merge,
)
from service.domain.normalise import normalise
from service.domain.outcomes import ArchiveReason
from service.domain.records import ENTITY_TYPES, LOGBOOK_ENTRY, Normalised, Tombstone
from service.domain.times import ms_to_iso_z, to_epoch_ms
from service.store import add_database_url_argument, database_url_from_env, open_storage
from service.store.interface import Storage, WriteUnit
from service.store.rows import EntityStateRow, StoredSyncRow
from service.store.sqlite.dbfile import DatabaseFileError, check_database_file

ARCHIVE_REASON = ArchiveReason.RENORMALISED


class TypeCounts(msgspec.Struct):
    """What a run found and did for one entity type (a dry run: what it would do)."""

    examined: int = 0  # stored rows looked at
    changed: int = 0  # rows whose document (data text, checksum) is rewritten
    deleted_at_fixed: int = 0  # rows whose deleted_at is rewritten as ISO-Z with milliseconds
    moved: int = 0  # repertoire items whose key changed (moved to the new key)
    split: int = 0  # content duplicates that are entries of their own under the new rules
    refused: int = 0  # rows whose raw record the current rules refuse (left as they are)
    without_raw: int = 0  # rows with no kept raw record (written by the app itself; left as they are)


class RenormaliseReport(msgspec.Struct):
    database: str
    dry_run: bool
    users: int = 0
    rows_written: int = 0  # sync_data rows written (updated, moved to, soft-deleted)
    raw_checksums_updated: int = 0
    by_entity_type: dict[str, TypeCounts] = msgspec.field(default_factory=dict)

    def counts(self, entity_type: str) -> TypeCounts:
        return self.by_entity_type.setdefault(entity_type, TypeCounts())

    @property
    def changes(self) -> int:
        return self.rows_written + self.raw_checksums_updated


class _Raw(msgspec.Struct):
    row_id: int
    text: str
    checksum: str


class _Work:
    """The writes of one user's run, grouped by the device each row came from (rows keep it)."""

    def __init__(self) -> None:
        self.by_device: dict[str | None, MergePlan] = defaultdict(lambda: MergePlan([], [], [], [], []))
        self.moved_to: list[tuple[str, str, str]] = []  # (entity_type, old id, new id)
        self.raw_checksums: dict[int, str] = {}

    def add(self, device: str | None, plan: MergePlan) -> None:
        target = self.by_device[device]
        target.sync_writes += plan.sync_writes
        target.state_writes += plan.state_writes
        target.archived += plan.archived


async def renormalise(
    db: Storage, *, user_id: str | None = None, dry_run: bool = False, now_ms: int | None = None
) -> RenormaliseReport:
    """Re-normalise every stored row of every user (or of `user_id`) from its kept raw record."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    report = RenormaliseReport(db.location, dry_run, by_entity_type={t: TypeCounts() for t in ENTITY_TYPES})
    users = await db.read(lambda unit: unit.users_with_stored_rows(user_id))
    run_id = f"ren_{uuid.uuid4().hex}"
    for user in users:

        def work(unit: WriteUnit, user: str = user) -> int:
            unit.lock_user(user)
            _renormalise_user(unit, user, now_ms, run_id, report)
            return unit.current_seq()

        seq = await db.write(work, commit=not dry_run)
        if not dry_run:
            changefeed.announce(db, [(user, seq)])  # rewritten rows have a new seq: live sockets get them
        report.users += 1
    return report


def _renormalise_user(unit: WriteUnit, user_id: str, now_ms: int, run_id: str, report: RenormaliseReport) -> None:
    stored = unit.stored_rows(user_id)
    states = unit.entity_states(user_id)
    raws: dict[tuple[str, str], list[_Raw]] = defaultdict(list)
    for r in unit.kept_raw_records(user_id):
        raws[(r.entity_type, r.entity_id)].append(_Raw(r.id, r.raw, r.checksum))
    cache: dict[int, Any] = {}

    def again(entity_type: str, raw: _Raw) -> Any:
        if raw.row_id not in cache:
            try:
                value = jsontext.decode(raw.text)
            except (msgspec.DecodeError, RecursionError):
                value = None
            cache[raw.row_id] = normalise(entity_type, value, user_id, now_ms=now_ms)
        return cache[raw.row_id]

    work = _Work()
    moves: dict[str | None, list[tuple[StoredSyncRow, Normalised, EntityStateRow | None]]] = defaultdict(list)
    rows_with_data = {(r.entity_type, r.entity_id) for r in stored}
    for row in stored:
        key = (row.entity_type, row.entity_id)
        counts = report.counts(key[0])
        counts.examined += 1
        state = states.get(key)
        sources = [raw for raw in raws.get(key, []) if raw.checksum == row.checksum]
        result = again(key[0], sources[0]) if sources else None
        if isinstance(result, Normalised) and result.entity_id != key[1]:
            if state is None or state.duplicate_of != result.entity_id:  # not moved by an earlier run
                counts.moved += 1
                moves[row.device_id].append((row, result, state))
            continue
        if result is not None and not isinstance(result, Normalised):
            counts.refused += 1
            result = None
        elif result is None:
            counts.without_raw += 1
        _update(row, result, state, work, counts)
        if isinstance(result, Normalised):
            for raw in sources:
                fresh = again(key[0], raw)
                if isinstance(fresh, Normalised) and fresh.checksum != raw.checksum:
                    work.raw_checksums[raw.row_id] = fresh.checksum
    _apply(unit, user_id, run_id, work, report)
    # Moves and splits go through the merge rules against the rows as they are now, one device at a time.
    for device, moving in moves.items():
        _apply(unit, user_id, run_id, _move(unit, user_id, device, moving, now_ms), report)
    splits: dict[str | None, list[tuple[EntityStateRow, Normalised]]] = defaultdict(list)
    for key, state in states.items():
        if key[0] != LOGBOOK_ENTRY or state.duplicate_of is None or key in rows_with_data or not raws.get(key):
            continue
        result = again(key[0], raws[key][-1])
        if isinstance(result, Normalised) and _no_longer_duplicate(unit, user_id, state, result):
            splits[unit.last_device_of(user_id, key)].append((state, result))
    for device, splitting in splits.items():
        _apply(unit, user_id, run_id, _split(unit, user_id, device, splitting, report.counts(LOGBOOK_ENTRY)), report)


def _update(
    row: StoredSyncRow, result: Normalised | None, state: EntityStateRow | None, work: _Work, counts: TypeCounts
) -> None:
    """Rewrite a row in place when its document or its deleted_at's form changed."""
    deleted = row.deleted_at is not None
    deleted_ms = None
    if deleted:
        deleted_ms = state.deleted_ms if state is not None and state.deleted_ms is not None else None
        if deleted_ms is None and result is not None:
            deleted_ms = to_epoch_ms(row.deleted_at)  # deleted by the service before it kept the time
    fix_deleted_at = deleted_ms is not None and row.deleted_at != ms_to_iso_z(deleted_ms)
    # Key order is free: a text that holds the same document, spelled as JSON.stringify spells it, stays.
    changed = result is not None and (result.checksum != row.checksum or not _spelled_as_the_app(row.data))
    if not (changed or fix_deleted_at):
        return
    counts.changed += changed
    counts.deleted_at_fixed += fix_deleted_at
    if result is not None and changed:
        data, checksum = result.text, result.checksum
    else:
        data, checksum = row.data, row.checksum
    write = SyncWrite(
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        row_id=row.id,
        data=data,
        checksum=checksum,
        version=int(row.version or 1) + 1,
        deleted_ms=deleted_ms if deleted else None,
        logbook_row=result.logbook_row if result is not None else None,
    )
    plan = MergePlan([], [write], [], [], [])
    if changed and result is not None:
        updated_ms = state.updated_ms if state is not None else result.updated_ms
        plan.archived.append(ArchivedVersion(
            row.entity_type, row.entity_id, row.data, row.checksum, updated_ms, ARCHIVE_REASON
        ))
        plan.state_writes.append(
            StateWrite(
                row.entity_type,
                row.entity_id,
                updated_ms,
                state.deleted_ms if state is not None else deleted_ms,
                result.content_key,
                state.duplicate_of if state is not None else None,
            )
        )
    work.add(row.device_id, plan)


def _spelled_as_the_app(text: str) -> bool:
    try:
        return js_stringify(jsontext.decode(text)) == text
    except (msgspec.DecodeError, RecursionError, TypeError):
        return False


def _move(
    unit: WriteUnit,
    user_id: str,
    device: str | None,
    moving: list[tuple[StoredSyncRow, Normalised, EntityStateRow | None]],
    now_ms: int,
) -> _Work:
    """Repertoire items whose key is now `result.entity_id`: each document goes there by the merge rules;
    the old key is soft-deleted (or, already deleted, hands its deletion on) and records where it went."""
    records: list[Normalised | Tombstone] = []
    work = _Work()
    for row, result, state in moving:
        entity_type, old_id, new_id = result.entity_type, row.entity_id, result.entity_id
        records.append(result)
        if row.deleted_at is None:
            records.append(Tombstone(entity_type, old_id, ms_to_iso_z(now_ms), now_ms))
        else:
            kept = state.deleted_ms if state is not None else None
            deleted_ms = kept if kept is not None else to_epoch_ms(row.deleted_at) or now_ms
            records.append(Tombstone(entity_type, new_id, ms_to_iso_z(deleted_ms), deleted_ms))
        work.moved_to.append((entity_type, old_id, new_id))
    keys = {(r.entity_type, r.entity_id) for r in records}
    work.add(device, plan_merge(records, unit.load_state(user_id, keys), {}))
    return work


def _no_longer_duplicate(unit: WriteUnit, user_id: str, state: EntityStateRow, result: Normalised) -> bool:
    """A content duplicate whose content no longer matches the entry it pointed at."""
    assert state.duplicate_of is not None
    return unit.content_key_of(user_id, (LOGBOOK_ENTRY, state.duplicate_of)) != result.content_key


def _split(
    unit: WriteUnit, user_id: str, device: str | None, splitting: list[tuple[EntityStateRow, Normalised]],
    counts: TypeCounts
) -> _Work:
    """Content duplicates that no longer match go through the merge rules again: an entry of their own,
    or a content duplicate of another entry that has their content now."""
    stored: dict[EntityKey, StoredEntity] = {
        (LOGBOOK_ENTRY, state.entity_id): StoredEntity(
            updated_ms=state.updated_ms, deleted_ms=state.deleted_ms, content_key=state.content_key,
            duplicate_of=state.duplicate_of, has_state=True,
        )
        for state, _ in splitting
    }  # fmt: skip
    results = [result for _, result in splitting]
    plan = plan_merge(results, stored, unit.load_live_content(user_id, content_probes(results)))
    counts.split += len(splitting)
    work = _Work()
    work.add(device, plan)
    return work


def _apply(unit: WriteUnit, user_id: str, run_id: str, work: _Work, report: RenormaliseReport) -> None:
    for device, plan in work.by_device.items():
        if plan.sync_writes or plan.state_writes or plan.archived:
            unit.apply_plan(plan, user_id=user_id, device_id=device, upload_id=run_id)
            report.rows_written += len(plan.sync_writes)
    if work.moved_to:
        unit.record_moves(user_id, work.moved_to)
    if work.raw_checksums:
        unit.update_raw_checksums(work.raw_checksums)
        report.raw_checksums_updated += len(work.raw_checksums)


# --- the command ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    add_database_url_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--user", help="only this user id")


def run(args: argparse.Namespace) -> int:
    db_path = args.db or os.environ.get("RESYNC_DB", DEFAULT_DB_PATH)
    try:
        check_database_file(db_path, must_exist=True)  # one line for a wrong --db, as every command says it
    except DatabaseFileError as error:
        hint = "" if Path(db_path).exists() else " (give --db or set RESYNC_DB)"
        print(f"error: {error}{hint}", file=sys.stderr)
        return 2

    async def main() -> RenormaliseReport:
        db = await open_storage(db_path, url=database_url_from_env())
        try:
            async with changefeed.publishing(db):
                return await renormalise(db, user_id=args.user, dry_run=args.dry_run)
        finally:
            await db.close()

    report = asyncio.run(main())
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _print(report)
    return 0


def _print(report: RenormaliseReport) -> None:
    verb = "would change" if report.dry_run else "changed"
    print(f"renormalise {report.database}{' (dry run: nothing written)' if report.dry_run else ''}")
    print(f"  users: {report.users}; rows {verb}: {report.rows_written}; raw checksums {verb}: "
          f"{report.raw_checksums_updated}")
    for entity_type, c in report.by_entity_type.items():
        if c.examined or c.split:
            print(f"  {entity_type}: {c.examined} examined, {c.changed} documents, {c.deleted_at_fixed} deleted_at,"
                  f" {c.moved} moved, {c.split} split, {c.refused} refused now, {c.without_raw} without raw record")

