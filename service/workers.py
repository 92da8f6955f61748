"""Normalisation on every core: large uploads are normalised in worker processes, in chunks, while the
event loop stays free for other requests (support reads, small pushes).

Normalisation is pure and CPU-bound, so threads would not help (the GIL); processes do. Small uploads are
normalised inline: starting work in another process costs more than it saves for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec

from service import jsontext
from service.domain import records as rec
from service.domain.merge import Repeat
from service.domain.normalise import normalise
from service.domain.records import Normalised, Rejection, Tombstone
from service.memory import tune_garbage_collector

Prepared = Normalised | Tombstone | Rejection | Repeat

# Below this many records an upload is normalised inline.
POOL_THRESHOLD = 400
# Records per part sent to a worker. Unpickling a part's results holds the GIL in one go, so parts stay
# small enough that the event loop is never held up behind one for long.
MAX_PART = 128


class NormaliseJob(msgspec.Struct, frozen=True):
    """Live records of one user's upload to normalise (a chunk of them)."""

    user_id: str
    now_ms: int
    entity_types: list[str]
    raws: list[bytes]
    # Decoded values when the caller has them (inline runs); None in worker processes, which decode.
    values: list[Any] | None
    # index in this chunk -> (entity_id, checksum) of a byte-identical record stored before
    repeats: dict[int, tuple[str, str]]


def run_job(job: NormaliseJob) -> list[Prepared]:
    return _with_repeats(job, _normalise_each(_without_repeats(job)))


def _normalise_each(job: NormaliseJob) -> list[Prepared]:
    """The records of a job without repeats, normalised one by one."""
    results: list[Prepared] = []
    for index, (entity_type, raw) in enumerate(zip(job.entity_types, job.raws, strict=True)):
        if job.values is not None:
            value = job.values[index]
        else:
            try:
                value = jsontext.decode(raw)
            except msgspec.DecodeError:
                value = msgspec.UNSET
        if value is msgspec.UNSET:
            results.append(Rejection(entity_type, None, rec.NOT_AN_OBJECT, detail="not valid JSON"))
            continue
        results.append(normalise(entity_type, value, job.user_id, now_ms=job.now_ms))
    return results


# Workers yield the CPU to the server's own process (support reads, answers) when the cores are busy.
WORKER_NICENESS = 10


# Ctrl-C, `timeout -s TERM` and systemd signal the whole process group. Workers leave them to their parent,
# which stops them in order: a worker killed by the signal mid-job broke the pool (tracebacks, futures set
# after they were cancelled, a feeder thread stuck on a dead worker's pipe and the exit hung).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _start_worker() -> None:
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        # Blocked in the parent while it started this worker (see `_stop_signals_held`): one that arrived
        # meanwhile is pending, and now ignored.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    with contextlib.suppress(OSError):  # best effort: some sandboxes refuse it
        os.nice(WORKER_NICENESS)
    # A record allocates dozens of containers, nearly all freed by reference counting: with the default
    # thresholds the collector ran every few records (a tenth of a worker's time), for nothing.
    tune_garbage_collector()
    # A worker must not outlive its parent. When the parent is killed (kill -9, an out-of-memory kill, a
    # replay stopped hard) nobody shuts the pool down, and each worker would wait on its job queue forever:
    # every worker holds that queue's write end too, so it never sees end-of-file.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="parent-watch", daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])  # ready once the parent process has exited
    os._exit(1)


def run_jobs(jobs: list[NormaliseJob]) -> list[list[Prepared]]:
    return [run_job(job) for job in jobs]


def _without_repeats(job: NormaliseJob) -> NormaliseJob:
    """The job's records that need normalising: all but its repeats."""
    if not job.repeats:
        return job
    kept = [i for i in range(len(job.raws)) if i not in job.repeats]
    values = None if job.values is None else [job.values[i] for i in kept]
    return NormaliseJob(job.user_id, job.now_ms, [job.entity_types[i] for i in kept], [job.raws[i] for i in kept],
                        values, {})


def _with_repeats(job: NormaliseJob, normalised: list[Prepared]) -> list[Prepared]:
    """The job's results in order: `normalised` (those of `_without_repeats(job)`) with its repeats between."""
    if not job.repeats:
        return normalised
    rest = iter(normalised)
    results: list[Prepared] = []
    for index, (entity_type, raw) in enumerate(zip(job.entity_types, job.raws, strict=True)):
        repeat = job.repeats.get(index)
        results.append(Repeat(entity_type, repeat[0], repeat[1], raw) if repeat is not None else next(rest))
    return results


def _slice(job: NormaliseJob, start: int, end: int) -> NormaliseJob:
    """Records start..end of a job, to run in a worker process (which decodes the raw bytes itself:
    sending them costs less than sending decoded values)."""
    return NormaliseJob(
        job.user_id,
        job.now_ms,
        job.entity_types[start:end],
        job.raws[start:end],
        None,
        {i - start: r for i, r in job.repeats.items() if start <= i < end},
    )


# Set by `serve --workers N` for its server processes: each has a pool, and they share the machine's cores.
SERVER_PROCESSES_ENV = "RESYNC_SERVER_PROCESSES"


def default_workers() -> int:
    """Worker processes for this process's pool: the machine's cores shared among the server processes
    (at least one each), none on a single core, where another process only adds the cost of sending."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return 0
    try:
        servers = max(1, int(os.environ.get(SERVER_PROCESSES_ENV, "1")))
    except ValueError:
        servers = 1
    return max(1, cores // servers)


class NormalisePool:
    """A lazily started process pool (`default_workers()` processes; 0 normalises inline)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else default_workers()
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the parent has threads (its SQLite connections), and forking those can deadlock.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context, initializer=_start_worker
            )
        return self._executor

    async def run_many(self, jobs: list[NormaliseJob]) -> list[list[Prepared]]:
        """Every job's results, in order. Jobs are cut into one part of about equal size per worker
        (a part may hold several small jobs, and a large job may span parts). Repeats need no normalising:
        they are made here and never sent, so a device re-pushing its history keeps the pool idle."""
        to_normalise = [_without_repeats(job) for job in jobs]
        total = sum(len(job.raws) for job in to_normalise)
        if self.workers < 1 or total < POOL_THRESHOLD:
            return [run_job(job) for job in jobs]
        share = min(-(-total // self.workers), MAX_PART)
        parts: list[list[tuple[int, NormaliseJob]]] = [[]]
        room = share
        for index, job in enumerate(to_normalise):
            start = 0
            while start < len(job.raws):
                if room == 0:
                    parts.append([])
                    room = share
                end = min(len(job.raws), start + room)
                parts[-1].append((index, _slice(job, start, end)))
                room -= end - start
                start = end
        loop = asyncio.get_running_loop()
        pool = self._pool()
        with _stop_signals_held():  # submitting may start workers
            # Results come back pickled. Measured against msgspec's msgpack (#17): pickle costs the worker
            # more (10 against 2 us a record), the parent less (5 against 7), and the parent's share holds
            # the GIL its writer and event loop need.
            futures = [loop.run_in_executor(pool, run_jobs, [job for _, job in part]) for part in parts]
        done = await asyncio.gather(*futures)
        results: list[list[Prepared]] = [[] for _ in jobs]
        for part, outcomes in zip(parts, done, strict=True):
            for (index, _), outcome in zip(part, outcomes, strict=True):
                results[index].extend(outcome)
        return [_with_repeats(job, normalised) for job, normalised in zip(jobs, results, strict=True)]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back from this thread while workers may be started: a new worker inherits
    the mask, so a group signal sent before it ignores them cannot kill it half-started. The held signal
    is delivered (to the parent's handler) as soon as the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_shared = NormalisePool()


def shared_pool() -> NormalisePool:
    return _shared


def close_shared_pool() -> None:
    _shared.close()
