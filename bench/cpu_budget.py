"""What the machine's CPUs allow an HTTP ingest at #17's target, and what it takes:
`.venv/bin/python bench/cpu_budget.py [--entries N] [--postgres]`.

#17's push target is 0.6x of a ceiling C rows/s (the same final rows into the app tables alone, a commit
per push's worth). On a machine of P CPUs, an ingest at that rate may spend at most P / (0.6 C) seconds
of CPU an entry, every process included: the server, its normalising workers, the client, PostgreSQL.
This measures, each on a fresh database and one after the other (the 200k ingest of scenario 3: 50 users,
pushes of 1,000, 6 in flight, bodies encoded before the run), from /proc:
- the SQLite push ceiling (run.py's, on the same rows): rows/s and the machine's CPU a row;
- the HTTP ingest as shipped: entries/s, the CPUs busy (and idle), and the CPU an entry of the server
  process, its workers and the client;
- the front half alone: the same server with `ingest` staging every upload (decoded, fingerprinted,
  looked up, normalised by the workers) and planning its merge, but writing nothing. What the ingest
  could reach if the writer cost nothing;
- `--postgres`: the PostgreSQL push ceiling (`COPY`, a commit per 1,000), the HTTP ingest and the same
  upload again into PostgreSQL, with PostgreSQL's own processes' CPU apart (a durable server of its own,
  as run.py starts).
Then, for each ingest, the CPU an entry the target allows against what it spent. A run that is short of
CPUs (busy near P) is bound by the CPU; one with CPUs idle is bound by a stage that cannot run in
parallel (SQLite's one writer; see `writer_split.py` for its statements).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
FRONT_HALF_ENV = "RESYNC_BENCH_FRONT_HALF"  # the server this script launches writes nothing
TARGET = 0.6
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Machine:
    """/proc/stat's totals, in CPU seconds."""

    busy: float  # user, nice, system, irq, softirq
    idle: float
    steal: float

    @classmethod
    def now(cls) -> Machine:
        with open("/proc/stat") as stat:
            user, nice, system, idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        return cls((user + nice + system + irq + softirq) / CLOCK_TICKS, idle / CLOCK_TICKS, steal / CLOCK_TICKS)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as listed:
                    children = [int(child) for child in listed.read().split()]
                found += children
                todo += children
        except OSError:
            continue
    return found


def postgres_pids() -> list[int]:
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                    if cmdline.read().startswith(b"postgres"):
                        pids.append(int(name))
            except OSError:
                continue
    return pids


@dataclass
class Spent:
    """What one measured step took: wall seconds, the machine's busy/idle/steal CPU seconds, and CPU
    seconds of named groups of processes (those alive at its end; a process that exits meanwhile, such as
    a client connection's PostgreSQL backend, is in the machine's figure only)."""

    seconds: float
    machine: Machine
    groups: dict[str, float]


def measure(step: Callable[[], T], groups: Callable[[], dict[str, list[int]]]) -> tuple[T, Spent]:
    def cpu_of() -> dict[str, float]:
        return {name: sum(process_cpu(pid) for pid in pids) for name, pids in groups().items()}

    before_groups, before, client_before = cpu_of(), Machine.now(), time.process_time()
    started = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - started
    after, after_groups, client_after = Machine.now(), cpu_of(), time.process_time()
    spent = {name: after_groups[name] - before_groups.get(name, 0.0) for name in after_groups}
    spent["client (this process)"] = client_after - client_before
    return result, Spent(seconds, Machine(after.busy - before.busy, after.idle - before.idle,
                                          after.steal - before.steal), spent)


def print_spent(what: str, count: int, unit: str, spent: Spent, rate: float) -> None:
    """`unit` is singular ("row", "entry"): the rate is per second, the CPU per one."""
    cpus = spent.machine.busy / spent.seconds
    plural = "entries" if unit == "entry" else f"{unit}s"
    print(f"{what}: {rate:,.0f} {plural}/s ({count:,} in {spent.seconds:.1f} s); the machine {cpus:.2f} CPUs busy, "
          f"{spent.machine.idle:.1f} s idle, {spent.machine.steal:.1f} s stolen; "
          f"{spent.machine.busy / count * 1e6:.1f} us of CPU {'an' if unit[0] in 'aeiou' else 'a'} {unit}")
    for name, seconds in spent.groups.items():
        print(f"    {name:40} {seconds / count * 1e6:8.1f} us")


def print_budget(what: str, entries: int, spent: Spent, ceiling: float, unit: str = "an entry") -> None:
    cpus = os.cpu_count() or 1
    allowed = cpus / (TARGET * ceiling) * 1e6
    used = spent.machine.busy / entries * 1e6
    rate = entries / spent.seconds
    print(f"  {what}: {rate / ceiling:.2f}x of the ceiling ({ceiling:,.0f} rows/s); {TARGET}x allows "
          f"{allowed:.1f} us of CPU {unit} on {cpus} CPUs, it spent {used:.1f} ({used / allowed:.2f}x)")


def sqlite_rows(entries: int, work: Path) -> None:
    from harness import ServerProcess, create_app_db
    from profile_http import IngestWorkload
    from run import prepare_rows, run_batched, send_pushes
    from workload import ADMIN

    workload = IngestWorkload.make(entries, work)
    rows = prepare_rows(workload.dataset, {u.id: u.device_id for u in workload.users})
    ceiling_db = work / "ceiling.db"
    create_app_db(ceiling_db, workload.users)
    ceiling, spent = measure(lambda: run_batched(rows, ceiling_db, workload.sizes.push_size), dict)
    print_spent("SQLite push ceiling (app tables alone, a commit per 1,000)", len(rows.sync), "row", spent, ceiling)
    runs: list[tuple[str, Spent, int]] = []
    for label, launcher, env in (("HTTP ingest, as shipped", None, None),
                                 ("the front half alone (nothing written)", [str(Path(__file__).resolve())], "1")):
        db = work / f"http-{len(runs)}.db"
        create_app_db(db, [*workload.users, ADMIN])
        if env:
            os.environ[FRONT_HALF_ENV] = env
        try:
            with ServerProcess(db, workload.secret, work / "server.log", launcher=launcher) as server:
                assert server._proc is not None
                pid = server._proc.pid
                # Two pushes first, unmeasured: the normalising pool is started.
                asyncio.run(send_pushes([server.base_url], workload.pushes[:2], workload.sizes.concurrency))
                pushes = workload.pushes[2:]
                url, concurrency = server.base_url, workload.sizes.concurrency
                run, spent = measure(
                    lambda: asyncio.run(send_pushes([url], pushes, concurrency)),  # noqa: B023 - called at once
                    lambda: {"server process": [pid], "normalising workers": descendants(pid)},  # noqa: B023
                )
        finally:
            os.environ.pop(FRONT_HALF_ENV, None)
        sent = run.entries
        print_spent(label, sent, "entry", spent, sent / spent.seconds)
        if run.errors:
            print(f"    {len(run.errors)} pushes failed: {run.errors[:1]}")
        runs.append((label, spent, sent))
    for label, spent, sent in runs:
        print_budget(label, sent, spent, ceiling)


def postgres_replay(server: Any, users: list[Any], entries: int, work: Path) -> None:
    """`python -m service replay` of run.py's NDJSON into PostgreSQL, its CPU (the replay and its workers,
    PostgreSQL's processes, the machine) against what 0.6x of its ceiling (the replay's resulting rows
    by COPY into an empty database, a commit per 1,000; run.py's) allows a resulting row."""
    import resource
    import subprocess

    import pg
    from run import _LOGBOOK_COLUMNS, SEED
    from workload import write_ndjson

    file = write_ndjson(work / "pg-replay.ndjson", users, entries, f"{SEED}:cpu")
    db = server.new_database("cpu_replay", users)
    command = [sys.executable, "-m", "service", "replay", "--database-url", db, "--json", str(file.path)]

    def replay() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, check=True, cwd=HERE.parent, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    replay_cpu, spent = measure(replay, lambda: {"PostgreSQL": postgres_pids()})
    spent.groups["the replay and its workers"] = replay_cpu
    file.path.unlink()
    target = server.new_database("cpu_replay_ceiling", users)
    ceiling, rows = pg.copy_database(db, target, _LOGBOOK_COLUMNS, 1000)
    server.drop(target)
    server.drop(db)
    print_spent(f"PostgreSQL replay of {entries:,} entries ({rows:,} resulting rows)", rows, "row", spent,
                rows / spent.seconds)
    print(f"PostgreSQL replay ceiling (its rows by COPY, a commit per 1,000): {ceiling:,.0f} rows/s")
    print_budget("PostgreSQL replay", rows, spent, ceiling, unit="a resulting row")


def postgres_rows(entries: int, work: Path, replay_entries: int = 0) -> None:
    import pg
    from harness import ServerProcess
    from run import _LOGBOOK_COLUMNS, SEED, build_pushes, prepare_rows, send_pushes
    from workload import ADMIN, make_users, push_dataset

    users = make_users(50)
    dataset = push_dataset(users, entries, SEED)
    rows = prepare_rows(dataset, {u.id: u.device_id for u in users})
    secret = secrets.token_urlsafe(32)
    pushes = build_pushes(dataset, users, 1000, secret)
    server = pg.PgBench(None)
    try:
        print(f"{server.describe()}")
        best = 0.0
        for round_ in range(2):  # the best of two, as run.py's
            db = server.new_database(f"cpu_ceiling{round_}", users)
            rate, spent = measure(lambda: pg.copy_batched(db, rows.sync, rows.logbook, _LOGBOOK_COLUMNS, 1000),  # noqa: B023
                                   dict)
            print_spent(f"PostgreSQL push ceiling (COPY, a commit per 1,000), round {round_ + 1}", len(rows.sync),
                        "row", spent, rate)
            best = max(best, rate)
            server.drop(db)
        db = server.new_database("cpu_http", [*users, ADMIN])
        runs: list[tuple[str, Spent, int]] = []
        with ServerProcess(None, secret, work / "pg-server.log", db) as service:
            assert service._proc is not None
            pid = service._proc.pid
            for label in ("PostgreSQL HTTP ingest, one replica", "the same upload again"):
                run, spent = measure(
                    lambda: asyncio.run(send_pushes([service.base_url], pushes, 6)),
                    lambda: {"server process": [pid], "normalising workers": descendants(pid),
                             "PostgreSQL": postgres_pids()},
                )
                sent = run.entries
                print_spent(label, sent, "entry", spent, sent / spent.seconds)
                runs.append((label, spent, sent))
        server.drop(db)
        for label, spent, sent in runs[:1]:
            print_budget(label, sent, spent, best)
        if replay_entries:
            postgres_replay(server, users, replay_entries, work)
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="scenario 3's 200k by default")
    parser.add_argument("--postgres", action="store_true", help="also the PostgreSQL ceiling and ingest")
    parser.add_argument("--postgres-replay", type=int, default=0, metavar="N",
                        help="with --postgres: also a replay of N entries into PostgreSQL (0: none)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory(prefix="resync-cpu-") as tmp:
        sqlite_rows(args.entries, Path(tmp))
        if args.postgres:
            postgres_rows(args.entries, Path(tmp), args.postgres_replay)
    return 0


def front_half_only() -> None:
    """In the launched server: `ingest` stages each upload and plans its merge against an empty store,
    then answers as if it had written it (every figure is then the front half's alone)."""
    from service.domain.merge import plan_merge
    from service.domain.outcomes import Receipt
    from service.store.interface import Storage
    from service.usecases import ingest as pipeline

    async def ingest_front_half(db: Storage, upload: pipeline.Upload, **kwargs: Any) -> pipeline.UploadResult:
        now_ms = kwargs.get("now_ms")
        staged = await pipeline.stage_batch(db, [upload], now_ms=now_ms)
        plan = plan_merge(staged.normalised[0], {}, {})
        return pipeline.UploadResult(upload.upload_id or "upl_front_half", Receipt(plan.results), "0")

    pipeline.ingest = ingest_front_half  # bound by the API modules when they import it, after this


if __name__ == "__main__":
    if os.environ.get(FRONT_HALF_ENV) and len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.path.insert(0, str(HERE.parent))
        front_half_only()
        from service.cli import main as service_main

        sys.exit(service_main(sys.argv[1:]))
    sys.exit(main())
