"""Normalisation on every core: the process pool gives exactly what normalising inline gives, in order."""

from __future__ import annotations

import subprocess
import sys
import time

import msgspec
import pytest
from msgspec import inspect as mi

from service import workers
from service.domain.records import LOGBOOK_ENTRY
from service.workers import POOL_THRESHOLD, NormaliseJob, NormalisePool, run_job
from tests.conftest import ADA


def _entry(n: int) -> bytes:
    return msgspec.json.encode(
        {"id": f"entry_{n:05d}", "timestamp": 1_700_000_000_000 + n * 60_000, "duration": 30 + n % 7,
         "type": "PRACTICE" if n % 3 else "practice", "instrument": "piano", "pieces": [{"title": f"Étude {n % 12}"}]}
    )


def _job(start: int, count: int, *, repeat_at: int | None = None) -> NormaliseJob:
    raws = [_entry(n) for n in range(start, start + count)]
    if count:
        raws[-1] = b"not json"  # a record that is quarantined, in the pool as inline
    repeats = {repeat_at: (f"entry_{start + repeat_at:05d}", "c" * 64)} if repeat_at is not None else {}
    return NormaliseJob(ADA[0], 1_800_000_000_000, [LOGBOOK_ENTRY] * count, raws, None, repeats)


async def test_jobs_cut_across_workers_come_back_whole_and_in_order() -> None:
    """Small jobs share a part and a large one spans parts: every job's results match inline normalisation."""
    jobs = [_job(0, 3), _job(100, POOL_THRESHOLD + 17, repeat_at=250), _job(900, 0), _job(1000, 40, repeat_at=1)]
    pool = NormalisePool(workers=2)
    try:
        pooled = await pool.run_many(jobs)
        assert pool._executor is not None  # the work went to worker processes, not inline
    finally:
        pool.close()
    assert pooled == [run_job(job) for job in jobs]
    assert [len(results) for results in pooled] == [3, POOL_THRESHOLD + 17, 0, 40]


def _with_repeats_at(job: NormaliseJob, indices: range) -> NormaliseJob:
    repeats = {i: (f"entry_{i:05d}", "c" * 64) for i in indices}
    return NormaliseJob(job.user_id, job.now_ms, job.entity_types, job.raws, None, repeats)


async def test_repeats_are_never_sent_to_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device re-pushing its history is all repeats: they need no normalising, so the pool is not even
    started, and a mixed job's repeats come back in place while only the rest went to the workers."""
    pool = NormalisePool(workers=2)
    try:
        all_repeats = _with_repeats_at(_job(0, POOL_THRESHOLD + 50), range(POOL_THRESHOLD + 49))
        assert await pool.run_many([all_repeats]) == [run_job(all_repeats)]
        assert pool._executor is None
        # Repeats every third record: what is left still reaches the threshold, so it goes to the pool.
        mixed = _with_repeats_at(_job(0, 2 * POOL_THRESHOLD), range(0, 2 * POOL_THRESHOLD, 3))
        sent: list[NormaliseJob] = []
        cut = workers._slice
        monkeypatch.setattr(workers, "_slice", lambda job, start, end: sent.append(cut(job, start, end)) or sent[-1])
        pooled = await pool.run_many([mixed])
        assert pool._executor is not None
        assert pooled == [run_job(mixed)]
        assert sum(len(part.raws) for part in sent) == 2 * POOL_THRESHOLD - len(mixed.repeats)
        assert not any(part.repeats for part in sent)
    finally:
        pool.close()


async def test_a_pool_of_no_workers_normalises_inline() -> None:
    jobs = [_job(0, POOL_THRESHOLD + 1)]
    pool = NormalisePool(workers=0)
    assert await pool.run_many(jobs) == [run_job(jobs[0])]
    assert pool._executor is None
    pool.close()


async def test_one_worker_still_takes_the_work_off_the_event_loop() -> None:
    """`serve --workers N` on N cores gives each server process one worker: it is used, not skipped."""
    jobs = [_job(0, POOL_THRESHOLD + 1)]
    pool = NormalisePool(workers=1)
    try:
        assert await pool.run_many(jobs) == [run_job(jobs[0])]
        assert pool._executor is not None
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("cores", "servers", "expected"),
    [(1, None, 0), (2, None, 2), (8, None, 8), (8, "2", 4), (8, "3", 2), (2, "4", 1), (1, "4", 0), (4, "junk", 4)],
)
def test_the_pool_is_sized_once_per_machine(
    monkeypatch: pytest.MonkeyPatch, cores: int, servers: str | None, expected: int
) -> None:
    """N server processes share the machine's cores: each pool gets its share (at least one worker), so
    `serve --workers N` no longer starts N pools of one worker per core each."""
    monkeypatch.setattr(workers.os, "cpu_count", lambda: cores)
    if servers is None:
        monkeypatch.delenv(workers.SERVER_PROCESSES_ENV, raising=False)
    else:
        monkeypatch.setenv(workers.SERVER_PROCESSES_ENV, servers)
    assert workers.default_workers() == expected
    assert NormalisePool().workers == expected


_ORPHAN_SCRIPT = """
import time
from service.workers import NormalisePool
executor = NormalisePool(workers=2)._pool()
for future in [executor.submit(time.sleep, 0.2) for _ in range(4)]:  # busy enough to start both workers
    future.result()
print(" ".join(str(pid) for pid in executor._processes), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running, that is: neither gone nor a zombie waiting to be reaped (by whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_workers_exit_when_their_parent_is_killed() -> None:
    """A replay or server killed with SIGKILL leaves no worker processes behind waiting forever."""
    with subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            workers = [int(pid) for pid in parent.stdout.readline().split()]
            assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        finally:
            parent.kill()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def test_results_cross_back_as_stored_text_without_a_decoded_document() -> None:
    """What a worker sends back is pickled and unpickled by the server (under its GIL): a normalised
    record carries its document once, as the stored text; a decoded copy doubled that cost."""
    fields = mi.type_info(workers.Normalised)
    assert isinstance(fields, mi.StructType)
    kinds = {f.name: type(f.type).__name__ for f in fields.fields}
    assert "text" in kinds and not {"DictType", "AnyType"} & set(kinds.values()), kinds
