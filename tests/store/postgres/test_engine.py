"""The PostgreSQL engine's own promises, beyond the contract suite both engines pass: what keeps several
writers and several service processes (here: two `PostgresStorage` handles on one database) correct
without SQLite's database-wide lock, and how its faults are named."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import errors

from service.domain.merge import ArchivedVersion, MergePlan, StateWrite, SyncWrite
from service.domain.records import LOGBOOK_ENTRY, LogbookRow
from service.store.interface import EngineKind, Fault, NotAnAppDatabase, StorageUnavailable, WriteUnit
from service.store.postgres.engine import PostgresStorage, UnsafeRole, fault_of, redact
from tests.pghelpers import PgDatabase

WAIT_S = 10
USERS = [f"user_{i:021d}" for i in range(6)]


@pytest.fixture
async def two(pg_database: PgDatabase) -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two service processes' handles on one database (each with its own writers and readers)."""
    with psycopg.connect(pg_database.owner_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email) SELECT u, u || '@example.com' FROM unnest(%s::text[]) AS u", (USERS,)
        )
    first, second = await asyncio.gather(PostgresStorage.open(pg_database.url),
                                         PostgresStorage.open(pg_database.url))
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _plan(entity_ids: list[str], *, version: int = 1, row_ids: dict[str, str] | None = None) -> MergePlan:
    writes = [
        SyncWrite(entity_type="goal", entity_id=e, row_id=(row_ids or {}).get(e), data=f'{{"id":"{e}","v":{version}}}',
                  checksum=f"c{version}", version=version, deleted_ms=None, logbook_row=None)
        for e in entity_ids
    ]
    return MergePlan(results=[], sync_writes=writes, state_writes=[], archived=[], quarantined=[])


def _write(user: str, entity_ids: list[str]) -> object:
    def work(unit: WriteUnit) -> None:
        unit.lock_user(user)
        stored = unit.load_state(user, {("goal", e) for e in entity_ids})
        row_ids = {e: s.row_id for (_, e), s in stored.items() if s.row_id}
        version = 1 + max((s.version for s in stored.values()), default=0)
        unit.apply_plan(_plan(entity_ids, version=version, row_ids=row_ids), user_id=user, device_id="dev",
                        upload_id="upl")  # type: ignore[arg-type]

    return work


async def test_change_numbers_never_repeat_and_follow_each_users_commits_across_two_processes(
    two: tuple[PostgresStorage, PostgresStorage], pg_database: PgDatabase
) -> None:
    """Many writes for six users through two processes at once: every seq distinct, each user's rows
    in the order its writes committed (versions rise with seq), and the app's sync_sequence and
    current_seq at the highest."""
    first, second = two
    jobs = []
    for round_ in range(6):
        for i, user in enumerate(USERS):
            storage = first if (i + round_) % 2 else second
            jobs.append(storage.write(_write(user, [f"g{k}" for k in range(5)])))  # type: ignore[arg-type]
    await asyncio.gather(*jobs)
    with psycopg.connect(pg_database.owner_url) as conn:
        rows = conn.execute("SELECT user_id, entity_id, version, seq FROM sync_data ORDER BY seq").fetchall()
        sequence = conn.execute("SELECT current_value FROM sync_sequence").fetchone()
    seqs = [r[3] for r in rows]
    assert len(rows) == 30 and len(set(seqs)) == 30
    assert all(r[2] == 6 for r in rows)  # six rounds, each saw the one before: nothing lost to a race
    assert sequence is not None and sequence[0] >= max(seqs)
    assert await first.read(lambda unit: unit.current_seq()) == max(seqs)


async def test_one_users_writes_wait_for_each_other_while_another_users_go_ahead(
    two: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two
    holding, release = threading.Event(), threading.Event()

    def hold(unit: WriteUnit) -> str:
        unit.lock_user(USERS[0])
        holding.set()
        assert release.wait(WAIT_S)
        return "held"

    held = asyncio.ensure_future(first.write(hold))
    assert await asyncio.to_thread(holding.wait, WAIT_S)
    same_user = asyncio.ensure_future(second.write(lambda unit: unit.lock_user(USERS[0])))
    await second.write(lambda unit: unit.lock_user(USERS[1]))  # another user: not held up
    await asyncio.sleep(0.2)
    assert not same_user.done()
    release.set()
    assert await held == "held"
    await asyncio.wait_for(same_user, WAIT_S)


async def test_an_idempotency_key_is_claimed_once_and_the_other_request_gets_its_answer(
    two: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Two requests with one key on two processes: one claims it; the other waits for that commit and
    reads the answer stored, never a second claim."""
    first, second = two
    claimed, release = threading.Event(), threading.Event()

    def claim_and_answer(unit: WriteUnit) -> object:
        found = unit.claim_idempotency(USERS[0], "POST /x", "k1", "sha", 1000.0)
        claimed.set()
        assert release.wait(WAIT_S)
        unit.remember_response(USERS[0], "POST /x", "k1", b'{"ok":1}', 1000.0)
        return found

    winner = asyncio.ensure_future(first.write(claim_and_answer))
    assert await asyncio.to_thread(claimed.wait, WAIT_S)
    loser = asyncio.ensure_future(
        second.write(lambda unit: unit.claim_idempotency(USERS[0], "POST /x", "k1", "sha", 1001.0))
    )
    await asyncio.sleep(0.2)
    assert not loser.done()
    release.set()
    assert await winner is None
    stored = await asyncio.wait_for(loser, WAIT_S)
    assert stored is not None and stored.response == b'{"ok":1}' and stored.request_sha256 == "sha"


async def test_an_expired_key_is_claimed_again(two: tuple[PostgresStorage, PostgresStorage]) -> None:
    first, _ = two

    def claim(now: float) -> object:
        def work(unit: WriteUnit) -> object:
            found = unit.claim_idempotency(USERS[0], "POST /x", "k", "sha", now)
            if found is None:
                unit.remember_response(USERS[0], "POST /x", "k", f'"{now}"'.encode(), now)
            return found

        return work

    assert await first.write(claim(1000.0)) is None  # type: ignore[arg-type]
    assert await first.write(claim(2000.0)) is not None  # type: ignore[arg-type]
    assert await first.write(claim(1000.0 + 25 * 3600)) is None  # type: ignore[arg-type]


async def test_a_block_of_change_numbers_is_adjacent(two: tuple[PostgresStorage, PostgresStorage]) -> None:
    first, second = two
    blocks = await asyncio.gather(*(s.write(lambda unit: unit.allocate_seq(10)) for s in (first, second) * 3))
    values = [v for b in blocks for v in range(b, b + 10)]
    assert len(values) == len(set(values)) == 60


async def test_the_plan_writes_the_logbook_copy_the_merge_state_and_archives_a_version_once(
    two: tuple[PostgresStorage, PostgresStorage], pg_database: PgDatabase
) -> None:
    first, _ = two
    user = USERS[0]
    row = LogbookRow(id="e1", timestamp=1, duration=30, type="practice", instrument="piano", pieces="[]",
                     techniques="[]", goal_ids="[]", notes=None, mood=None, tags="[]", session_id=None,
                     metadata=None, created_at=1, updated_at=2)
    refused = msgspec_replace(row, id="e2", type="not-an-old-type")
    plan = MergePlan(
        results=[],
        sync_writes=[SyncWrite(LOGBOOK_ENTRY, "e1", None, '{"id":"e1"}', "c1", 1, None, row),
                     SyncWrite(LOGBOOK_ENTRY, "e2", None, '{"id":"e2"}', "c2", 1, None, refused)],
        state_writes=[StateWrite(LOGBOOK_ENTRY, "e1", 1, None, "k", None),
                      StateWrite(LOGBOOK_ENTRY, "e1", 2, None, "k2", None)],
        archived=[ArchivedVersion(LOGBOOK_ENTRY, "e1", "{}", "c0", 1, "superseded")] * 2,
        quarantined=[],
    )
    again = MergePlan(results=[], sync_writes=[], state_writes=[], archived=plan.archived, quarantined=[])
    for each in (plan, again):
        await first.write(lambda unit, each=each: unit.apply_plan(each, user_id=user, device_id="d", upload_id="u"))
    with psycopg.connect(pg_database.superuser_url) as conn:
        logbook = conn.execute("SELECT id, user_id, checksum, device_id FROM logbook_entries").fetchall()
        state = conn.execute("SELECT updated_ms, content_key FROM recovery_entity_state").fetchall()
        archived = conn.execute("SELECT COUNT(*) FROM recovery_archive").fetchone()
    assert logbook == [("e1", user, "c1", "d")]  # the old CHECKs refuse e2: it stays in sync_data only
    assert state == [(2, "k2")]  # the later write of a key wins, as statement by statement
    assert archived == (1,)


def msgspec_replace(row: LogbookRow, **changes: object) -> LogbookRow:
    import msgspec

    return msgspec.structs.replace(row, **changes)


async def test_a_lost_connection_is_a_fault_and_the_next_write_reconnects(
    two: tuple[PostgresStorage, PostgresStorage], pg_database: PgDatabase
) -> None:
    first, _ = two
    with psycopg.connect(pg_database.superuser_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    failures = 0
    for _ in range(4):  # each of the four writers finds its connection gone once
        try:
            await first.write(lambda unit: unit.lock_user(USERS[0]))
        except psycopg.Error as error:
            assert first.fault_of(error) is Fault.CANNOT_OPEN
            assert first.current_fault() is Fault.CANNOT_OPEN
            failures += 1
    assert failures >= 1
    await first.write(lambda unit: unit.lock_user(USERS[0]))
    assert first.current_fault() is None


async def test_a_read_only_server_is_a_read_only_fault(
    two: tuple[PostgresStorage, PostgresStorage], pg_database: PgDatabase
) -> None:
    first, _ = two
    with psycopg.connect(pg_database.superuser_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {pg_database.name} SET default_transaction_read_only = on")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    faults = set()
    for _ in range(5):
        with pytest.raises(psycopg.Error) as caught:
            await first.write(lambda unit: unit.record_alias("sub", unit.user_by_id(USERS[0]), "x"))  # type: ignore[arg-type]
        faults.add(first.fault_of(caught.value))
    assert Fault.READ_ONLY in faults
    assert await first.health() is Fault.READ_ONLY


def test_faults_are_named_by_sqlstate() -> None:
    assert fault_of(errors.DiskFull()) is Fault.DISK_FULL
    assert fault_of(errors.ReadOnlySqlTransaction()) is Fault.READ_ONLY
    assert fault_of(errors.LockNotAvailable()) is Fault.LOCKED
    assert fault_of(errors.DeadlockDetected()) is Fault.LOCKED
    assert fault_of(errors.AdminShutdown()) is Fault.CANNOT_OPEN
    assert fault_of(psycopg.OperationalError("connection lost")) is Fault.CANNOT_OPEN
    assert fault_of(errors.UniqueViolation()) is None  # a bug or a bad statement, never a 503
    try:
        try:
            raise errors.DiskFull()
        except errors.DiskFull as error:
            raise RuntimeError("wrapped") from error
    except RuntimeError as wrapped:
        assert fault_of(wrapped) is Fault.DISK_FULL


async def test_the_service_refuses_a_role_that_could_drop_an_app_table(pg_database: PgDatabase) -> None:
    with pytest.raises(UnsafeRole, match="owns") as caught:
        await PostgresStorage.open(pg_database.owner_url)
    assert "***" in str(caught.value) and pg_database.owner_url.split(":")[2].split("@")[0] not in str(caught.value)
    assert isinstance(caught.value, StorageUnavailable)


async def test_a_database_without_the_app_tables_is_not_an_app_database(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.owner_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE sync_metadata RENAME TO sync_metadata_gone")
    with pytest.raises(NotAnAppDatabase, match="sync_metadata"):
        await PostgresStorage.open(pg_database.url)


async def test_an_unreachable_server_is_one_line_of_error() -> None:
    with pytest.raises(StorageUnavailable) as caught:
        await PostgresStorage.open("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    assert caught.value.fault is Fault.CANNOT_OPEN
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value).strip()


def test_the_location_never_shows_the_password() -> None:
    assert redact("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact("postgresql://h/d") == "postgresql://h/d"


async def test_it_is_the_postgresql_engine(two: tuple[PostgresStorage, PostgresStorage]) -> None:
    assert two[0].kind is EngineKind.POSTGRESQL
