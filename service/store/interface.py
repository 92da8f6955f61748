"""The storage interface: what the use cases need of a database, in the domain's terms.

Two engines implement it: SQLite (`service.store.sqlite`, the embedded default) and PostgreSQL. A use
case hands the engine a plain synchronous function of a unit (`work(unit)`); the engine runs it on a
connection's own thread, inside one transaction, in one hop from the event loop (measured: a hop per
statement costs the support reads their latency while large uploads are written). So:

- `Storage` is async at the top: `write_shared` (group commit), `write` / `transaction` (one write
  transaction), `read` (one consistent snapshot), faults, close;
- `WriteUnit` / `ReadUnit` are synchronous: the operations one transaction may do, typed in and out
  (`service.store.rows` Structs, domain types, plain values; never a driver's row).

What correctness needs of an engine, named here rather than left to one engine's lock:

- per-user serialisation: a write that reads a user's state and writes from it calls `lock_user(user)`
  first; SQLite's write lock already covers every user (a no-op there), PostgreSQL takes
  `pg_advisory_xact_lock` on the user;
- `allocate_seq(n)` never hands out a value twice and never one lower than a value a reader of the
  same user may already have seen committed;
- `claim_idempotency` is one atomic insert-or-get: of two requests with the same key, one claims it and
  the other gets the stored answer (or waits for the first to commit), never both written.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from typing import Protocol, TypeVar

from service.domain.merge import EntityKey, MergePlan, StoredEntity
from service.domain.outcomes import Receipt
from service.domain.progress import RecoveryState
from service.domain.sources import Source
from service.store.rows import (
    ArchivedConflict,
    ArchiveTotals,
    BatchState,
    Checkpoint,
    ContentProbes,
    Declaration,
    EmailMatch,
    EntityStateRow,
    HourlyActivity,
    KeptRawRecord,
    KnownRaw,
    LedgerEntry,
    LiveDocument,
    NewUser,
    QuarantinedRecord,
    QuarantineRow,
    RawRecordRow,
    RedrivableRecord,
    StoredDocument,
    StoredResponse,
    StoredSyncRow,
    SummaryFigures,
    SyncMetadata,
    SyncRow,
    UserListItem,
    UserProfile,
    UserProgress,
    UserRecord,
)

T = TypeVar("T")

# An idempotency key answers for this long; an older one is another request.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class EngineKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Fault(StrEnum):
    """Why the database cannot take a write now: the request was fine, the storage is not."""

    LOCKED = "locked"
    READ_ONLY = "read_only"
    IO_ERROR = "io_error"
    DISK_FULL = "disk_full"
    CORRUPT = "corrupt"
    CANNOT_OPEN = "cannot_open"


FAULT_DESCRIPTIONS = {
    Fault.LOCKED: "the database is locked by another writer past the busy timeout",
    Fault.READ_ONLY: "the database is read-only",
    Fault.IO_ERROR: "the database's storage failed (I/O error)",
    Fault.DISK_FULL: "the disk holding the database is full",
    Fault.CORRUPT: "the database file is damaged",
    Fault.CANNOT_OPEN: "the database cannot be opened or reached",
}


class StorageUnavailable(RuntimeError):
    """The database cannot be opened for writing; the message is one line saying why."""

    def __init__(self, location: str, fault: Fault | None, cause: BaseException) -> None:
        reason = FAULT_DESCRIPTIONS[fault] if fault is not None else str(cause)
        super().__init__(f"cannot use the database {location}: {reason} ({cause})")
        self.fault = fault


class NotAnAppDatabase(RuntimeError):
    """The database holds some of the app's tables but not all the service writes to."""


class SchemaTooNew(NotAnAppDatabase):
    """The database was migrated by a newer release than this one (which would misread what it wrote)."""


class UnstorableText(ValueError):
    """The request holds text the engine cannot store (PostgreSQL text cannot hold U+0000, which the app's
    SQLite can). Its transaction was rolled back whole: nothing of it was written."""


class ReadUnit(Protocol):
    """The reads of one consistent snapshot (synchronous: they run on the engine's connection thread)."""

    # -- the app's sync data
    def current_seq(self) -> int:
        """The app's global change number (the sync token)."""
        ...

    def live_documents(self, user_id: str) -> list[LiveDocument]:
        """The user's live documents in change (`seq`) order, as clients pull them."""
        ...

    def live_documents_of_type(self, user_id: str, entity_type: str) -> list[StoredDocument]:
        """A user's live documents of one type, newest change first."""
        ...

    def live_counts(self, user_id: str) -> dict[str, int]:
        """entity_type -> how many live documents the user has."""
        ...

    def changes_after(self, user_id: str, entity_type: str, after_seq: int, limit: int) -> list[SyncRow]:
        """A user's rows of one type changed after `after_seq`, tombstones included, in `seq` order
        (rows without a `seq` are never returned)."""
        ...

    def rows_of(self, user_id: str, entity_type: str, entity_ids: Collection[str]) -> list[SyncRow]:
        """The current rows (live or tombstones) of some of a user's keys of one type."""
        ...

    def sync_metadata(self, user_id: str) -> SyncMetadata | None: ...

    def device_count(self, user_id: str) -> int:
        """Devices the user has uploaded from."""
        ...

    def known_raw_records(
        self, user_id: str, device_id: str | None, candidates: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], KnownRaw]:
        """(entity_type, entity_id, raw_sha256) -> the checksum that raw record normalised to before, and
        whether `device_id` sent it."""
        ...

    # -- users
    def user_by_id(self, user_id: str) -> UserRecord | None: ...

    def users_with_email(self, email: str) -> list[UserRecord]:
        """Every user whose address equals `email` ignoring case, by id (the one owner rule,
        `service.domain.owners`, decides which of them an address names)."""
        ...

    def match_email(self, email: str) -> EmailMatch:
        """Who `email` names: `service.domain.owners.match_email_among(email, self.users_with_email(email))`."""
        ...

    def user_profile(self, user_id: str) -> UserProfile | None: ...

    # -- progress and support
    def user_progress(self, user_id: str) -> UserProgress | None:
        """Everything support needs about one user's recovery; None when the service knows nothing of them."""
        ...

    def user_state(self, user_id: str) -> RecoveryState:
        """The user's recovery state (`service.domain` state rule)."""
        ...

    def device_received(self, user_id: str, device_id: str) -> dict[str, int]:
        """entity_type -> distinct records the device sent."""
        ...

    def latest_ledger(self, user_id: str, limit: int = 20) -> list[LedgerEntry]:
        """The user's uploads, newest first."""
        ...

    def list_users(
        self, *, email: str | None, state: RecoveryState | None, after: str | None, limit: int
    ) -> list[UserListItem]:
        """Users by id after `after`; `email` matches any part of the address, ignoring case."""
        ...

    def users_by_state_counts(self) -> dict[str, int]:
        """How many users are in each state."""
        ...

    def summary_figures(self) -> SummaryFigures: ...

    def quarantine_page(
        self, owner: str, *, after: int | None, limit: int, include_resolved: bool
    ) -> list[QuarantinedRecord]:
        """Records quarantined under `owner`, by id after `after`."""
        ...

    def ledger_per_hour(self, since: str) -> list[HourlyActivity]:
        """Uploads and records received per hour since `since` (ledger time text), oldest first."""
        ...

    def waiting_conflicts(self, user_id: str, limit: int, *, after: int = 0) -> list[ArchivedConflict]:
        """The user's conflicts waiting for review, in archive order, from after the archive id `after`."""
        ...

    def archive_totals(self) -> ArchiveTotals: ...

    def last_upload_at(self) -> str | None: ...

    def latest_declarations(self, user_id: str) -> dict[str, Declaration]:
        """device_id -> its latest declaration of completeness, matched or not."""
        ...

    # -- re-drive
    def redrivable_quarantine(self, user: UserRecord) -> list[RedrivableRecord]:
        """The unresolved quarantined records that may be re-driven into `user`'s account, oldest first:
        kept under `user.id`, or kept for an owner unknown then and now whose email names `user`."""
        ...

    def users_with_redrivable_quarantine(self) -> list[str]: ...

    # -- replay
    def checkpoint(self, replay_key: str) -> Checkpoint | None: ...

    # -- renormalise
    def users_with_stored_rows(self, user_id: str | None) -> list[str]:
        """Users holding `sync_data` rows (only `user_id` when given), by id."""
        ...

    # -- operations
    def ping(self) -> None:
        """A cheap read of the app's tables (for /health): raises when the database cannot answer."""
        ...


class WriteUnit(ReadUnit, Protocol):
    """The operations of one write transaction (synchronous, on the engine's writer thread). Every read
    a write transaction needs is here too (`ReadUnit`), seen from inside the transaction."""

    def lock_user(self, user_id: str) -> None:
        """Serialise this transaction with every other one writing for `user_id`, until it ends."""
        ...

    # -- the merge's reads
    def load_state(self, user_id: str, keys: Collection[EntityKey]) -> dict[EntityKey, StoredEntity]:
        """The stored state of every key that has one (sync_data row and merge state)."""
        ...

    def load_live_content(self, user_id: str, contents: ContentProbes) -> dict[str, list[str]]:
        """content_key -> entity_ids of the user's live logbook entries that hold that content: those
        whose merge state records it, and the live logbook rows at the probe's time, without content in
        merge state, whose stored text has it (a live row whose text holds its state has no state row)."""
        ...

    def live_checksums(self, user_id: str, keys: Collection[EntityKey]) -> dict[EntityKey, str]:
        """The checksum of each key's live sync_data row (keys without one are left out): all the merge
        needs to know of a key that only repeats name, read instead of its state (`load_batch_state`)."""
        ...

    def load_batch_state(
        self, user_id: str, keys: Collection[EntityKey], contents: ContentProbes
    ) -> BatchState:
        """The three reads of a batch's merge in as few statements as the engine can (measured: a
        statement per read cost the writer as much as its inserts): `load_state(keys)`,
        `load_live_content` of `contents` and of the stored logbook keys' content keys, and
        `logbook_ids_of_other_users` of the logbook keys."""
        ...

    def duplicate_keys_of(self, user_id: str, entity_ids: Collection[str]) -> dict[str, set[EntityKey]]:
        """holder entity_id -> the keys of the user's logbook entries recorded as its content duplicates."""
        ...

    def raw_versions(self, user_id: str, key: EntityKey) -> list[bytes]:
        """Every live record (not a deletion) kept verbatim for one key, oldest first."""
        ...

    def logbook_ids_of_other_users(self, user_id: str, entity_ids: Collection[str]) -> set[str]:
        """Which of these ids another user's logbook_entries row holds."""
        ...

    # -- the merge's writes
    def allocate_seq(self, count: int) -> int:
        """Reserve `count` values of the app's global change number; returns the first."""
        ...

    def apply_plan(self, plan: MergePlan, *, user_id: str, device_id: str | None, upload_id: str) -> None:
        """Write the plan: sync_data (fresh seq values), logbook_entries, merge state, archive."""
        ...

    def keep_received(
        self,
        rows: list[RawRecordRow],
        sent: list[EntityKey],
        *,
        sent_before: Collection[EntityKey],
        user_id: str,
        device_id: str | None,
        upload_id: str,
    ) -> None:
        """Keep every distinct raw record verbatim (once per distinct content), and which distinct keys
        the device sent (`sent`, quarantined ones included) with its count per entity type. A key's raw
        row from the device is its record; a device row only where none says it (`store.device_records`).
        `sent_before`: keys already known to be the device's (a raw row of its), not looked up again."""
        ...

    def quarantine(
        self, rows: list[QuarantineRow], *, owner: str, email: str | None, device_id: str | None, upload_id: str
    ) -> None: ...

    def record_upload(
        self,
        receipt: Receipt,
        *,
        upload_id: str,
        user_id: str,
        device_id: str | None,
        source: Source,
        file_name: str | None,
        payload_sha256: str,
    ) -> None:
        """The ledger row, the user's running totals, the device's first/last upload."""
        ...

    def touch_sync_metadata(self, user_id: str, device_id: str | None, sync_token: str) -> None: ...

    def record_alias(self, token_sub: str, user: UserRecord, email: str) -> None:
        """A token subject mapped to `user` by its email."""
        ...

    # -- idempotency
    def claim_idempotency(
        self, user_id: str, route: str, key: str, request_sha256: str, now: float
    ) -> StoredResponse | None:
        """One atomic insert-or-get: None when this transaction now holds the key (it must then
        `remember_response` before it commits), else the answer stored for the key within the TTL."""
        ...

    def remember_response(self, user_id: str, route: str, key: str, response: bytes, now: float) -> None:
        """The answer to a key this transaction claimed."""
        ...

    # -- devices, review, re-drive
    def declare_device(self, user_id: str, device_id: str, expected: Mapping[str, int], complete: bool) -> None:
        """Record a declaration; only a matching one (`complete`) changes the device."""
        ...

    def mark_archive_reviewed(self, user_id: str) -> int:
        """Mark the user's archived conflicts reviewed (kept); returns how many were waiting."""
        ...

    def resolve_redriven(self, ids: list[int], upload_id: str) -> int:
        """Mark re-driven quarantine rows resolved (never deleted); returns how many were still unresolved."""
        ...

    # -- replay
    def save_checkpoint(
        self, replay_key: str, *, file_name: str, file_sha256: str, records_done: int, finished: bool
    ) -> None: ...

    # -- renormalise
    def stored_rows(self, user_id: str) -> list[StoredSyncRow]:
        """Every sync_data row of the user, in seq order."""
        ...

    def entity_states(self, user_id: str) -> dict[EntityKey, EntityStateRow]: ...

    def kept_raw_records(self, user_id: str) -> list[KeptRawRecord]:
        """The user's kept live raw records, oldest first."""
        ...

    def content_key_of(self, user_id: str, key: EntityKey) -> str | None:
        """The content key of one key: its merge state's, else the one its live logbook row's text gives
        (None when it has neither)."""
        ...

    def last_device_of(self, user_id: str, key: EntityKey) -> str | None:
        """The device of the latest raw record kept for a key."""
        ...

    def record_moves(self, user_id: str, moves: list[tuple[str, str, str]]) -> None:
        """(entity_type, old id, new id): the old key's merge state points at the new one."""
        ...

    def update_raw_checksums(self, checksums: Mapping[int, str]) -> None:
        """raw record id -> the checksum it normalises to now."""
        ...

    # -- users (the CLI)
    def add_user(self, user: NewUser, *, if_absent: bool = False) -> bool:
        """Insert a `users` row; with `if_absent` an existing id or email is left alone (returns False).
        Without it a conflict raises `UserExists`."""
        ...


class UserExists(ValueError):
    """`add_user` without `if_absent`: the id or email is taken."""


class WriteTransaction(Protocol):
    """An open write transaction (`Storage.transaction`): work runs in it, one hop each."""

    async def run(self, work: Callable[[WriteUnit], T]) -> T: ...


class CommitWatch(Protocol):
    """Commits made through other connections to the same database (another server process, a replay),
    found by polling: cheap when nothing changed (SQLite: `SqliteStorage.watch_commits`)."""

    async def latest_seq(self) -> int | None:
        """The highest `seq` committed, or None when nothing was committed since the previous call (the
        first call always answers)."""
        ...

    async def users_changed(self, after_seq: int, up_to_seq: int) -> list[tuple[str, int]]:
        """(user_id, highest seq) of every user with rows whose seq is in (after_seq, up_to_seq]."""
        ...

    async def close(self) -> None: ...


class Storage(Protocol):
    """A database engine: the one handle every use case gets."""

    @property
    def kind(self) -> EngineKind: ...

    @property
    def location(self) -> str:
        """Where the data is, for messages (a path; a URL without its password)."""
        ...

    async def write_shared(self, work: Callable[[WriteUnit], T], *, weight: int = 1) -> T:
        """`work` in a write transaction shared with other callers' work queued meanwhile (group
        commit), each in a savepoint of its own: an error in one is raised to its caller only.
        Returns once the transaction holding it is durable; `weight` (records) bounds a transaction."""
        ...

    async def write(self, work: Callable[[WriteUnit], T], *, commit: bool = True) -> T:
        """`work` in a write transaction of its own, committed (rolled back unless `commit`) after it."""
        ...

    def transaction(self, *, commit: bool = True) -> AbstractAsyncContextManager[WriteTransaction]:
        """One write transaction several pieces of work run in (a replay's batch and its checkpoint,
        a dry run's every batch); committed at the end unless `commit` is False, rolled back on error."""
        ...

    async def read(self, work: Callable[[ReadUnit], T]) -> T:
        """`work` in one consistent snapshot on a reader; reads never wait for writes."""
        ...

    def current_fault(self) -> Fault | None:
        """The fault of a recent write that failed with no successful write since (for /health)."""
        ...

    def fault_of(self, error: BaseException) -> Fault | None:
        """The storage fault behind an error this engine raised, or None (a bug, a bad statement)."""
        ...

    async def health(self) -> Fault | None:
        """None when the database answers a read and can take a write now, else why not."""
        ...

    async def close(self) -> None:
        """Work already queued is committed and answered; then every connection is closed."""
        ...
