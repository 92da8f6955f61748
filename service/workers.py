"""Normalisation on every core: large uploads are normalised in worker processes, in chunks, while the
event loop stays free for other requests (support reads, small pushes).

Normalisation is pure and CPU-bound, so threads would not help (the GIL); processes do. Small uploads are
normalised inline: starting work in another process costs more than it saves for them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec

from service.domain import records as rec
from service.domain.merge import Repeat
from service.domain.normalise import normalise
from service.domain.records import Normalised, Rejection, Tombstone

Prepared = Normalised | Tombstone | Rejection | Repeat

# Below this many records an upload is normalised inline.
POOL_THRESHOLD = 400


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
    results: list[Prepared] = []
    for index, (entity_type, raw) in enumerate(zip(job.entity_types, job.raws, strict=True)):
        repeat = job.repeats.get(index)
        if repeat is not None:
            results.append(Repeat(entity_type, repeat[0], repeat[1], raw))
            continue
        if job.values is not None:
            value = job.values[index]
        else:
            try:
                value = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                value = msgspec.UNSET
        if value is msgspec.UNSET:
            results.append(Rejection(entity_type, None, rec.NOT_AN_OBJECT, detail="not valid JSON"))
            continue
        results.append(normalise(entity_type, value, job.user_id, now_ms=job.now_ms))
    return results


class NormalisePool:
    """A lazily started process pool, one worker per core (none on a single core)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the parent has threads (aiosqlite), and forking those can deadlock.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self._executor

    async def run(self, job: NormaliseJob) -> list[Prepared]:
        size = len(job.raws)
        if self.workers < 2 or size < POOL_THRESHOLD:
            return run_job(job)
        loop = asyncio.get_running_loop()
        pool = self._pool()
        chunk = -(-size // self.workers)
        parts = [
            NormaliseJob(
                job.user_id,
                job.now_ms,
                job.entity_types[start : start + chunk],
                job.raws[start : start + chunk],
                None,
                {i - start: r for i, r in job.repeats.items() if start <= i < start + chunk},
            )
            for start in range(0, size, chunk)
        ]
        done = await asyncio.gather(*(loop.run_in_executor(pool, run_job, part) for part in parts))
        return [item for part in done for item in part]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


_shared = NormalisePool()


def shared_pool() -> NormalisePool:
    return _shared


def close_shared_pool() -> None:
    _shared.close()
