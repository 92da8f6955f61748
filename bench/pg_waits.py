"""What a PostgreSQL replay waits on: `.venv/bin/python bench/pg_waits.py [--entries N] [--postgres-url URL]`.

Replays N entries (150k) of the bench's NDJSON into a fresh app database (a durable server of its own, as
`bench/run.py` scenario 7 starts, unless `--postgres-url` names one), and samples `pg_stat_activity` every
10 ms for the service role's connections: each sample is one connection's state and wait event. A backend
`active` with no wait event is computing; `active` with one waits in the server (`IO:WalSync` the commit's
flush, `Lock:advisory` a user's lock, `LWLock:*` a shared structure); `idle in transaction` waits for the
replay process mid-transaction (its Python), and `idle` has nothing to do. `--profile FILE` runs the
replay under py-spy (`record --subprocesses --threads`, raw output in FILE) and prints each thread's
busiest functions: where the replay process's own time goes.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pg
import psycopg
from workload import ADMIN, make_users, write_ndjson

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=150_000)
    parser.add_argument("--postgres-url", help="a superuser's URL (default: a durable server of our own)")
    parser.add_argument("--profile", type=Path, help="run the replay under py-spy, its raw samples in this file")
    args = parser.parse_args()
    server = pg.PgBench(args.postgres_url)
    try:
        users = make_users(200)
        url = server.new_database("bench_waits", [*users, ADMIN])
        with tempfile.TemporaryDirectory() as work:
            file = write_ndjson(Path(work) / "replay.ndjson", users, args.entries, "pg-waits")
            samples: collections.Counter[tuple[str, str]] = collections.Counter()
            stop = threading.Event()
            sampler = threading.Thread(target=sample, args=(server.admin_url, server.service, samples, stop))
            sampler.start()
            cpu_before, busy_before = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy()
            started = time.perf_counter()
            command = [sys.executable, "-m", "service", "replay", "--database-url", url, "--json", str(file.path)]
            if args.profile:
                pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                command = [pyspy, "record", "--subprocesses", "--threads", "--rate", "100", "--format", "raw",
                           "--output", str(args.profile), "--", *command]
            replay = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            cpu_after, busy_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy()
            stop.set()
            sampler.join()
        if replay.returncode != 0:
            print(replay.stderr[-2000:], file=sys.stderr)
            return 1
        print(f"{args.entries:,} entries in {seconds:.1f} s: {args.entries / seconds:,.0f} entries/s; "
              f"{server.describe()}")  # fmt: skip
        replay_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
        print(f"the replay and its workers used {replay_cpu:.1f} CPU s ({replay_cpu / seconds:.0%} of one core); "
              f"the machine's {os.cpu_count()} cores were {busy:.0%} busy (PostgreSQL and the sampler included)")
        total = sum(samples.values())
        print(f"{'state':22} {'wait event':32} {'share':>6}  (connection samples, every {SAMPLE_S * 1000:.0f} ms)")
        for (state, event), count in samples.most_common():
            print(f"{state:22} {event:32} {count / total:6.1%}")
        if args.profile:
            print_profile(args.profile)
    finally:
        server.close()
    return 0


def print_profile(raw: Path) -> None:
    """Each thread's share of the samples (waiting ones included: py-spy's raw format keeps them) and
    its busiest leaf functions."""
    threads: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2:
            continue
        process = frames[0].partition(":")[0] if frames[0].startswith("process") else ""
        thread = next((f for f in frames if f.startswith("thread (")), "thread (?)")
        label = f"{process} {thread}".strip()
        threads[label][frames[-1].split(" (")[0]] += int(count)
    total = sum(sum(c.values()) for c in threads.values()) or 1
    for label, functions in sorted(threads.items(), key=lambda t: -sum(t[1].values()))[:12]:
        samples = sum(functions.values())
        top = ", ".join(f"{f} {n / samples:.0%}" for f, n in functions.most_common(6))
        print(f"{samples / total:6.1%}  {label:36}  {top}")


def machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def sample(admin_url: str, role: str, samples: collections.Counter[tuple[str, str]], stop: threading.Event) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchall()
            for state, kind, event in rows:
                samples[(state or "?", f"{kind}:{event}" if kind else "-")] += 1
            time.sleep(SAMPLE_S)


if __name__ == "__main__":
    raise SystemExit(main())
