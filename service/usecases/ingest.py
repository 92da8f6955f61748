"""The one path every record takes, whatever its source (push, recovery upload, export file, replay).

    Upload -> normalise each record (pure) -> in one write transaction: load the state of the batch's
    keys, plan the merge (pure), apply it, keep the raw records, quarantine what cannot go in, and write
    the ledger row and the user's progress -> Receipt.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import msgspec

from service import changefeed, jsontext, metrics
from service.domain import outcomes as oc
from service.domain import records as rec
from service.domain.merge import EntityKey, MergePlan, Repeat, StoredEntity, content_probes, plan_merge
from service.domain.normalise import KEY_FIELDS, d1_text, entity_id_of
from service.domain.outcomes import Receipt
from service.domain.owners import Owner, UserRecord
from service.domain.records import Normalised, Rejection, Tombstone
from service.domain.sources import Source
from service.domain.times import ms_to_iso_z
from service.store.interface import ReadUnit, Storage, WriteTransaction, WriteUnit
from service.store.rows import KnownRaw, QuarantineRow, RawRecordRow
from service.workers import POOL_THRESHOLD, NormaliseJob, run_job, shared_pool

T = TypeVar("T")

class IncomingRecord(msgspec.Struct, frozen=True):
    """One record as the device sent it: its entity type and its JSON bytes, verbatim."""

    entity_type: str
    raw: bytes
    # The decoded value when the caller already has it (UNSET: decoded here from `raw`).
    value: Any = msgspec.UNSET


class Upload(msgspec.Struct):
    """A batch of one user's records from one source."""

    owner: str  # who the records belong to: the user's id, or the unknown token subject
    user: UserRecord | None  # the user in `users`; None when nobody matches (everything is quarantined)
    device_id: str | None
    source: Source
    records: list[IncomingRecord]
    deleted: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    email: str | None = None
    alias_from: str | None = None  # a token subject that was mapped to `user` by email
    file_name: str | None = None
    payload_sha256: str | None = None
    upload_id: str | None = None  # given by callers that must know it up front (a redrive); else generated
    # Why every record is quarantined when `user` is None (an unknown owner by default; a replay may say
    # the file names another user than the one given, or that a line could not be read).
    quarantine_reason: rec.QuarantineReason = rec.UNKNOWN_USER
    quarantine_detail: str = "no user with this id or email exists"

    @classmethod
    def of_owner(cls, owner: Owner, *, device_id: str | None, source: Source, records: list[IncomingRecord],
                 deleted: dict[str, list[Any]] | None = None, payload_sha256: str | None = None) -> Upload:
        """The upload of `owner`'s records: its user, or (nobody) the quarantine reason and detail it carries."""
        return cls(
            owner=owner.owner, user=owner.user, device_id=device_id, source=source, records=records,
            deleted=dict(deleted) if deleted else {}, email=owner.email, alias_from=owner.alias_from,
            quarantine_reason=owner.problem or rec.UNKNOWN_USER, quarantine_detail=owner.detail,
            payload_sha256=payload_sha256,
        )


class UploadResult(msgspec.Struct, frozen=True):
    upload_id: str
    receipt: Receipt
    sync_token: str


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""


class Idempotency(msgspec.Struct, frozen=True):
    key: str
    request_sha256: str
    route: str  # keys are scoped per route: the same key on another route is another request


class Replayed(msgspec.Struct, frozen=True):
    """The stored answer of an earlier request with the same idempotency key and body."""

    response: bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _deletion_raw(entity_type: str, entity_id: Any) -> bytes:
    return jsontext.encode({"entity_type": entity_type, "id": entity_id, "deleted": True})


Prepared = Normalised | Tombstone | Rejection | Repeat
RepeatKey = tuple[str, str, str]  # (entity_type, entity_id, raw_sha256)


class PreparedUpload(msgspec.Struct):
    """An upload's records fingerprinted, in order (live records, then the deleted lists)."""

    upload: Upload
    # Decoded value per live record when the caller had them all (UNSET: the bytes are not JSON); None
    # when it did not: normalising decodes each record itself (in a worker, for large uploads).
    values: list[Any] | None
    # What the key rules read of each live record (see `key_fields`), or its decoded value.
    key_fields: list[Any]
    raws: list[bytes]
    shas: list[str]
    # Live records whose key occurs once in the upload: (index, entity_type, entity_id).
    single_keys: list[tuple[int, str, str]]
    # Keys the repeat lookup found a raw record of from the upload's device: sent by it before.
    sent_before: set[EntityKey] = msgspec.field(default_factory=set)


# The fields a record's key is read from; the decoder skips all others.
_KeyFields = msgspec.defstruct("_KeyFields", [(name, Any, msgspec.UNSET) for name in KEY_FIELDS])
_key_fields_decoder = msgspec.json.Decoder(_KeyFields)


def key_fields(raw: bytes) -> Any:
    """What `entity_id_of` reads of a record, from its bytes, without building the rest of it (0.6 against
    3.5 us a record): a dict of the key fields it has, None when it is JSON but no object, UNSET when it is
    not JSON (and the whole value when only the lone-surrogate reading takes it)."""
    try:
        fields = _key_fields_decoder.decode(raw)
    except msgspec.ValidationError:
        return None  # JSON, but not an object: no key
    except msgspec.DecodeError:
        try:  # lone surrogate escapes, which msgspec refuses and JSON.parse reads (see jsontext)
            return jsontext.decode(raw)
        except msgspec.DecodeError:
            return msgspec.UNSET
    present = ((name, getattr(fields, name)) for name in KEY_FIELDS)
    return {name: value for name, value in present if value is not msgspec.UNSET}


def prepare_upload(upload: Upload) -> PreparedUpload:
    decoded = all(record.value is not msgspec.UNSET for record in upload.records)
    key_values: list[Any] = []
    raws: list[bytes] = []
    user_id = upload.user.id if upload.user is not None else ""
    keys: list[tuple[int, str, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for index, record in enumerate(upload.records):
        raws.append(record.raw)
        fields = record.value if decoded else key_fields(record.raw)
        key_values.append(fields)
        entity_id = entity_id_of(record.entity_type, fields, user_id) if upload.user is not None else None
        if entity_id is not None:
            keys.append((index, record.entity_type, entity_id))
            seen[(record.entity_type, entity_id)] = seen.get((record.entity_type, entity_id), 0) + 1
    for entity_type, ids in upload.deleted.items():
        raws.extend(_deletion_raw(entity_type, entity_id) for entity_id in ids)
    return PreparedUpload(
        upload=upload,
        values=[record.value for record in upload.records] if decoded else None,
        key_fields=key_values,
        raws=raws,
        shas=[sha256_hex(raw) for raw in raws],
        single_keys=[k for k in keys if seen[(k[1], k[2])] == 1],
    )


def repeat_candidates(prepared: PreparedUpload) -> list[RepeatKey]:
    return [(entity_type, entity_id, prepared.shas[i]) for i, entity_type, entity_id in prepared.single_keys]


def _normalise_job(prepared: PreparedUpload, now_ms: int, known: dict[RepeatKey, KnownRaw]) -> NormaliseJob | None:
    """The pure work of normalising an upload's live records (None when its owner is unknown)."""
    upload = prepared.upload
    if upload.user is None:
        return None
    repeats: dict[int, tuple[str, str]] = {}
    for index, entity_type, entity_id in prepared.single_keys if known else ():
        found = known.get((entity_type, entity_id, prepared.shas[index]))
        if found is not None:
            repeats[index] = (entity_id, found.checksum)
    return NormaliseJob(
        user_id=upload.user.id,
        now_ms=now_ms,
        entity_types=[r.entity_type for r in upload.records],
        raws=prepared.raws[: len(upload.records)],
        values=prepared.values,
        repeats=repeats,
    )


def _finish_normalised(prepared: PreparedUpload, live: list[Prepared] | None, now_ms: int) -> list[Prepared]:
    """The upload's records in order: its live records' outcomes (`live`, None when the owner is
    unknown and everything is quarantined), then its deleted lists as tombstones."""
    upload = prepared.upload
    user_id = upload.user.id if upload.user is not None else None
    results: list[Prepared]
    if live is None:
        results = []
        for record, fields in zip(upload.records, prepared.key_fields, strict=True):
            entity_id = fields.get("id") if isinstance(fields, dict) else None
            results.append(
                Rejection(record.entity_type, d1_text(entity_id) if isinstance(entity_id, str) else None,
                          upload.quarantine_reason, field="owner", detail=upload.quarantine_detail)
            )
    else:
        results = live
    deleted_at = ms_to_iso_z(now_ms)
    for entity_type, ids in upload.deleted.items():
        for entity_id in ids:
            valid_id = d1_text(entity_id) if isinstance(entity_id, str) and entity_id else None
            if user_id is None:
                results.append(Rejection(entity_type, valid_id, upload.quarantine_reason, field="owner",
                                         detail=upload.quarantine_detail))
            elif (known := rec.ENTITY_TYPE_OF.get(entity_type)) is None:
                results.append(Rejection(entity_type, valid_id, rec.UNKNOWN_ENTITY_TYPE, field="entity_type"))
            elif valid_id is None:
                results.append(Rejection(entity_type, None, rec.MISSING_ID, field="id"))
            else:
                # An id in a device's deleted list counts as deleted at the time of its upload.
                results.append(Tombstone(known, valid_id, deleted_at, now_ms))
    return results


async def normalise_uploads(
    prepared: list[PreparedUpload], now_ms: int, known: list[dict[RepeatKey, KnownRaw]]
) -> list[list[Prepared]]:
    """Every record of every upload, normalised in order (large batches on every core). A record whose
    exact bytes normalised to a known checksum before becomes a `Repeat`, checked against the stored row
    in the write transaction."""
    jobs = [_normalise_job(p, now_ms, k) for p, k in zip(prepared, known, strict=True)]
    done = await shared_pool().run_many([job for job in jobs if job is not None])
    outcomes = iter(done)
    return [
        _finish_normalised(p, None if job is None else next(outcomes), now_ms)
        for p, job in zip(prepared, jobs, strict=True)
    ]


def _confirm_repeats(
    records: list[Prepared],
    stored: dict[tuple[str, str], StoredEntity],
    live_repeats: dict[EntityKey, str],
    user_id: str,
    now_ms: int,
) -> list[Normalised | Tombstone | Rejection | Repeat]:
    """A repeat whose stored row changed since it was looked up is normalised after all (those whose
    key is in `live_repeats` are confirmed already)."""
    confirmed: list[Prepared] = []
    for r in records:
        if isinstance(r, Repeat) and (r.entity_type, r.entity_id) not in live_repeats:
            s = stored.get((r.entity_type, r.entity_id))
            if s is None or not s.live or s.checksum != r.checksum:
                confirmed.extend(run_job(NormaliseJob(user_id, now_ms, [r.entity_type], [r.raw], None, {})))
                continue
        confirmed.append(r)
    return confirmed


class _StoreLookups:
    """`MergeLookups` from the database, inside the upload's write transaction."""

    def __init__(
        self, unit: WriteUnit, user_id: str, now_ms: int, logbook_ids: set[str], held_elsewhere: set[str]
    ) -> None:
        self._unit, self._user_id, self._now_ms = unit, user_id, now_ms
        self._batch_ids = logbook_ids
        self._held_elsewhere = held_elsewhere  # of the batch's logbook ids, read with their state
        self._duplicates: dict[str, set[EntityKey]] | None = None

    def duplicates_of(self, entity_id: str) -> dict[EntityKey, StoredEntity]:
        if self._duplicates is None:
            # Asked for one holder, loaded for every logbook key of the batch in one query.
            self._duplicates = self._unit.duplicate_keys_of(self._user_id, self._batch_ids)
        keys = self._duplicates.get(entity_id)
        if keys is None and entity_id not in self._batch_ids:
            keys = self._unit.duplicate_keys_of(self._user_id, [entity_id]).get(entity_id)
        return self._unit.load_state(self._user_id, keys) if keys else {}

    def duplicate_version(self, key: EntityKey, content_key: str, updated_ms: int | None) -> Normalised | None:
        raws = self._unit.raw_versions(self._user_id, key)
        versions = [
            n for n in run_job(NormaliseJob(self._user_id, self._now_ms, [key[0]] * len(raws), raws, None, {}))
            if isinstance(n, Normalised) and n.entity_id == key[1] and n.content_key == content_key
        ]
        exact = [n for n in versions if n.updated_ms == updated_ms]
        if exact or versions:
            return (exact or versions)[-1]
        return None

    def logbook_ids_held_elsewhere(self, entity_ids: Collection[str]) -> set[str]:
        unknown = [i for i in entity_ids if i not in self._batch_ids]
        held = {i for i in entity_ids if i in self._held_elsewhere}
        return held | self._unit.logbook_ids_of_other_users(self._user_id, unknown) if unknown else held


def _live_repeats(
    unit: WriteUnit, user_id: str, records: list[Prepared], others: set[EntityKey]
) -> dict[EntityKey, str]:
    """The keys only repeats name (none of `others`, the keys of the batch's other records) whose live
    row still has the repeats' checksum, with it. Their merge state is not read: a device re-pushing its
    history sends mostly repeats, and reading their state was 46% of the writer's time on a re-upload
    (`bench/profile_http.py --reupload`)."""
    repeated: dict[EntityKey, set[str]] = {}
    for r in records:
        if isinstance(r, Repeat):
            repeated.setdefault((r.entity_type, r.entity_id), set()).add(r.checksum)
    alone = {key: next(iter(sums)) for key, sums in repeated.items() if key not in others and len(sums) == 1}
    if not alone:
        return {}
    live = unit.live_checksums(user_id, alone)
    return {key: checksum for key, checksum in live.items() if checksum == alone[key]}


def _plan(
    unit: WriteUnit, user_id: str, records: list[Prepared], now_ms: int
) -> tuple[list[Prepared], MergePlan]:
    """The merge of an upload against its keys' stored state; returns its records (repeats whose stored
    row changed are normalised again) and the plan."""
    others: set[EntityKey] = {(r.entity_type, r.entity_id) for r in records if isinstance(r, Normalised | Tombstone)}
    live_repeats = _live_repeats(unit, user_id, records, others)
    repeated = {(r.entity_type, r.entity_id) for r in records if isinstance(r, Repeat)}
    keys = (repeated - live_repeats.keys()) | others
    # The contents the batch can touch: its records', and those its keys hold now (a holder that is
    # deleted or edited hands its content to a duplicate, unless another live entry holds it too).
    contents = content_probes(records)
    state = unit.load_batch_state(user_id, keys, contents)
    stored, live_content = state.stored, state.live_content
    records = _confirm_repeats(records, stored, live_repeats, user_id, now_ms)
    # A repeat normalised again after all (its stored row changed) may bring a content not read yet
    # (read again even if a stored key holds it: that key's row may not have told its session time).
    late = {key: t for key, t in content_probes(records).items() if key not in contents}
    if late:
        live_content = {**live_content, **unit.load_live_content(user_id, late)}
    logbook_ids = {k[1] for k in keys if k[0] == rec.LOGBOOK_ENTRY}
    lookups = _StoreLookups(unit, user_id, now_ms, logbook_ids, state.logbook_ids_elsewhere)
    return records, plan_merge(records, stored, live_content, lookups, live_repeats)


def _apply(
    unit: WriteUnit,
    prepared: PreparedUpload,
    records: list[Prepared],
    upload_id: str,
    now_ms: int,
) -> Receipt:
    upload = prepared.upload
    raws = prepared.raws
    user_id = upload.user.id if upload.user is not None else None
    if user_id is None:
        plan = plan_merge(records, {}, {})
    else:
        # Read-then-write below: this transaction holds the user until it ends (a no-op on SQLite).
        unit.lock_user(user_id)
        records, plan = _plan(unit, user_id, records, now_ms)
        unit.apply_plan(plan, user_id=user_id, device_id=upload.device_id, upload_id=upload_id)
        kept = [
            RawRecordRow(r.entity_type, r.entity_id, raw.decode("utf-8", "replace"), sha,
                         r.checksum if isinstance(r, Normalised) else None)
            for r, raw, sha in zip(records, raws, prepared.shas, strict=True)
            if isinstance(r, Normalised | Tombstone)
        ]
        # A device's completeness counts every distinct record it sent, quarantined ones included.
        unit.keep_received(kept, [(r.entity_type, r.entity_id) for r in records if r.entity_id is not None],
            sent_before=prepared.sent_before,
            user_id=user_id,
            device_id=upload.device_id,
            upload_id=upload_id,
        )
        if upload.alias_from is not None and upload.user is not None and upload.email is not None:
            unit.record_alias(upload.alias_from, upload.user, upload.email)
    unit.quarantine([
            QuarantineRow(q.rejection.entity_type, q.rejection.entity_id, raws[q.index].decode("utf-8", "replace"),
                          q.rejection.reason, q.rejection.field, q.rejection.detail)
            for q in plan.quarantined
        ],
        owner=user_id or upload.owner,
        email=upload.email,
        device_id=upload.device_id,
        upload_id=upload_id,
    )
    receipt = Receipt(plan.results)
    payload_sha = upload.payload_sha256 or sha256_hex(b"\n".join(raws))
    unit.record_upload(receipt,
        upload_id=upload_id,
        user_id=user_id or upload.owner,
        device_id=upload.device_id,
        source=upload.source,
        file_name=upload.file_name,
        payload_sha256=payload_sha,
    )
    return receipt


async def _off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """Pure work on a large batch runs in a thread, so the event loop keeps answering other requests
    (support reads) in between; small batches are quicker inline."""
    if size < POOL_THRESHOLD:
        return work(*args)
    return await asyncio.to_thread(work, *args)


async def _known_repeats(db: Storage, prepared: list[PreparedUpload]) -> list[dict[RepeatKey, KnownRaw]]:
    """Look up, before queueing for the writer, which records are byte-identical re-uploads, and which
    of those the upload's device sent itself (`sent_before`: the writer need not look them up again)."""

    def lookup(unit: ReadUnit) -> list[dict[RepeatKey, KnownRaw]]:
        found: list[dict[RepeatKey, KnownRaw]] = []
        for p in prepared:
            user = p.upload.user
            candidates = repeat_candidates(p) if user is not None else []
            known = (unit.known_raw_records(user.id, p.upload.device_id, candidates)
                     if user is not None and candidates else {})
            p.sent_before = {(t, i) for (t, i, _), raw in known.items() if raw.from_device}
            found.append(known)
        return found

    if not any(p.upload.user is not None and p.single_keys for p in prepared):
        return [{} for _ in prepared]
    return await db.read(lookup)


class StagedBatch(msgspec.Struct):
    """Uploads taken as far as they go without the write lock: decoded, fingerprinted, normalised."""

    prepared: list[PreparedUpload]
    normalised: list[list[Prepared]]
    now_ms: int
    started: float  # perf_counter at staging, for the upload duration metric


async def stage_batch(db: Storage, uploads: list[Upload], *, now_ms: int | None = None) -> StagedBatch:
    """The first half of `ingest_batch`. It writes nothing, so the next batch of a replay is staged
    while the writer commits the one before."""
    started = time.perf_counter()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    total = sum(len(upload.records) for upload in uploads)
    prepared = await _off_loop(total, _prepare_all, uploads)
    known = await _known_repeats(db, prepared)
    return StagedBatch(prepared, await normalise_uploads(prepared, now_ms, known), now_ms, started)


def _prepare_all(uploads: list[Upload]) -> list[PreparedUpload]:
    return [prepare_upload(upload) for upload in uploads]


async def ingest(
    db: Storage,
    upload: Upload,
    *,
    dry_run: bool = False,
    idempotency: Idempotency | None = None,
    render: Callable[[UploadResult], bytes] | None = None,
    now_ms: int | None = None,
) -> UploadResult | Replayed:
    """Take one upload through the pipeline in one transaction.

    With `idempotency` (and the `render` of the answer), the key is claimed in the same transaction and
    the rendered answer stored with it; a repeat of the same key and body gets that answer back with
    nothing written. A dry run does everything, then rolls back.
    """
    now = time.time()
    staged = await stage_batch(db, [upload], now_ms=now_ms if now_ms is not None else int(now * 1000))
    if idempotency is not None and render is None:
        raise ValueError("an idempotent upload needs the render of its answer")

    def write_upload(unit: WriteUnit) -> UploadResult | Replayed:
        claimed = idempotency is not None and upload.user is not None
        if idempotency is not None and upload.user is not None:
            unit.lock_user(upload.user.id)
            previous = unit.claim_idempotency(upload.user.id, idempotency.route, idempotency.key,
                                              idempotency.request_sha256, now)
            if previous is not None:
                if previous.request_sha256 != idempotency.request_sha256:
                    raise IdempotencyConflict(idempotency.key)
                return Replayed(previous.response)
        result = _ingest_in_transaction(unit, staged.prepared[0], staged.normalised[0], staged.now_ms)
        if claimed and idempotency is not None and upload.user is not None and render is not None:
            unit.remember_response(upload.user.id, idempotency.route, idempotency.key, render(result), now)
        return result

    if dry_run:
        return await db.write(write_upload, commit=False)
    # Concurrent uploads share a transaction and its fsync; each is answered once it is durable.
    answer = await db.write_shared(write_upload, weight=len(staged.normalised[0]))
    if isinstance(answer, UploadResult):
        metrics.observe_upload(upload.source, answer.receipt, time.perf_counter() - staged.started)
        changefeed.announce(db, _changes([upload], [answer]))
    return answer


InTransaction = Callable[[WriteUnit], None]


async def ingest_batch(
    db: Storage,
    uploads: list[Upload],
    *,
    dry_run: bool = False,
    in_transaction: InTransaction | None = None,
    now_ms: int | None = None,
) -> list[UploadResult]:
    """Several uploads (of one or more users) in one transaction; `in_transaction` runs inside it too, in
    the same hop, so a replay's checkpoint commits with the batch it covers."""
    staged = await stage_batch(db, uploads, now_ms=now_ms)
    return await commit_batch(db, staged, dry_run=dry_run, in_transaction=in_transaction)


async def commit_batch(
    db: Storage,
    staged: StagedBatch,
    *,
    dry_run: bool = False,
    in_transaction: InTransaction | None = None,
) -> list[UploadResult]:
    """The second half of `ingest_batch`: merge and write a staged batch in one transaction."""
    async with db.transaction(commit=not dry_run) as transaction:
        results = await apply_staged(transaction, staged, in_transaction=in_transaction)
    if not dry_run and results:
        changefeed.announce(db, _changes([p.upload for p in staged.prepared], results))
        elapsed = time.perf_counter() - staged.started
        for prepared, result in zip(staged.prepared, results, strict=True):
            metrics.observe_upload(prepared.upload.source, result.receipt, elapsed / len(results))
    return results


_WRITES_ROWS = frozenset({oc.INSERTED, oc.UPDATED, oc.DELETED, oc.CONTENT_DUPLICATE})


def _changes(uploads: list[Upload], results: list[UploadResult]) -> list[tuple[str, int]]:
    """The (user, seq) notices of committed uploads that changed stored rows, for live sockets."""
    return [(upload.user.id, int(result.sync_token)) for upload, result in zip(uploads, results, strict=True)
            if upload.user is not None and any(r.outcome in _WRITES_ROWS for r in result.receipt.results)]


async def apply_staged(
    transaction: WriteTransaction, staged: StagedBatch, *, in_transaction: InTransaction | None = None
) -> list[UploadResult]:
    """Merge and write a staged batch in the caller's open write transaction (a replay's dry run holds one
    transaction for all its batches, so each is judged as the real run would judge it)."""

    def work(unit: WriteUnit) -> list[UploadResult]:
        results = [
            _ingest_in_transaction(unit, prepared, records, staged.now_ms)
            for prepared, records in zip(staged.prepared, staged.normalised, strict=True)
        ]
        if in_transaction is not None:
            in_transaction(unit)
        return results

    return await transaction.run(work)


def _ingest_in_transaction(
    unit: WriteUnit, prepared: PreparedUpload, records: list[Prepared], now_ms: int
) -> UploadResult:
    upload = prepared.upload
    upload_id = upload.upload_id or f"upl_{uuid.uuid4().hex}"
    receipt = _apply(unit, prepared, records, upload_id, now_ms)
    sync_token = str(unit.current_seq())
    if upload.user is not None:
        unit.touch_sync_metadata(upload.user.id, upload.device_id, sync_token)
    return UploadResult(upload_id, receipt, sync_token)
