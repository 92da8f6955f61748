"""Where the server's CPU goes during an HTTP ingest: `.venv/bin/python bench/profile_http.py [--entries N]`.

Starts `python -m service serve` on a fresh database (as scenario 3 does), sends two pushes so that the
normalising pool starts, then sends the bench's pushes (of 1,000 entries at the default 50k) and prints
the CPU each role used, per entry: the normalising worker processes, the writer thread, the event loop,
the process pool's result and job feeder threads, the readers, the threads that prepare large batches.
`--reupload` profiles the same pushes sent a second time instead (scenario 4: every record a repeat).
The CPU is read from /proc (user + system time of each thread); py-spy, attached to the server and to
each worker process with `--threads`, names the busiest functions of each role (samples of waiting
threads left out). Needs py-spy (`.venv/bin/pip install py-spy`) and permission to ptrace the server
(root, or `kernel.yama.ptrace_scope=0`). `--raw FILE` keeps py-spy's output (FILE.<pid> per process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ServerProcess, create_app_db
from run import SEED, Push, Sizes, build_pushes, send_pushes
from workload import ADMIN, BenchUser, PushDataset, make_users, push_dataset

RATE = 100  # samples per second and thread
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Leaf frames of a thread that waits (py-spy's own idle detection does not work in every sandbox).
WAITING = ("_worker (concurrent/futures/thread.py", "Condition.wait", "Event.wait", "Queue.get", "select (selectors.py",
           "wait (multiprocessing/connection.py", "_recv (multiprocessing/connection.py", "_wait_for_tstate_lock",
           "Runner.run (asyncio/runners.py", "_exit_with (service/workers.py")  # fmt: skip


def role_of(process: int, server: int, thread_name: str, stack: str) -> str:
    if process != server:
        return "workers"
    if "_ExecutorManagerThread" in stack:
        return "result thread"
    if "_feed (multiprocessing/queues.py" in stack:
        return "job feeder thread"
    if thread_name.startswith("sqlite-writer"):
        return "writer"
    if thread_name.startswith("sqlite-reader"):
        return "readers"
    if thread_name == "MainThread":
        return "event loop"
    if thread_name.startswith(("uvloop", "asyncio")):
        return "to_thread (batch prep)"
    return "other threads"


def cpu_seconds(pid: int) -> dict[tuple[int, int], float]:
    """User+system CPU of every thread of `pid` and of its child processes, by (process, thread)."""
    found: dict[tuple[int, int], float] = {}
    for process in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{process}/task"):
                with open(f"/proc/{process}/task/{task}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
                found[(process, int(task))] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


@dataclasses.dataclass
class IngestWorkload:
    """Scenario 3's ingest at `entries`: the users, their records, a fresh app database in `work` and the
    pushes, encoded before the run (so the client costs almost nothing while it is measured)."""

    users: list[BenchUser]
    dataset: PushDataset
    sizes: Sizes
    db: Path
    secret: str
    pushes: list[Push]

    @classmethod
    def make(cls, entries: int, work: Path) -> IngestWorkload:
        users = make_users(50)
        dataset = push_dataset(users, entries, SEED)
        sizes = Sizes(users=50, entries=entries, push_size=1000, app_way_subset=0, replay_entries=(0, 0),
                      postgres_replay_entries=0)
        db = work / "http.db"
        create_app_db(db, [*users, ADMIN])
        secret = secrets.token_urlsafe(32)
        return cls(users, dataset, sizes, db, secret, build_pushes(dataset, users, sizes.push_size, secret))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=50_000, help="50k: each user's pushes hold 1,000 entries")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--reupload", action="store_true",
                        help="send the pushes once unmeasured, then profile the same pushes again (scenario 4)")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="resync-profile-") as tmp:
        work = Path(tmp)
        workload = IngestWorkload.make(args.entries, work)
        db, secret, pushes, sizes = workload.db, workload.secret, workload.pushes, workload.sizes
        raw = args.raw or work / "profile.raw"
        with ServerProcess(db, secret, work / "server.log") as server:
            assert server._proc is not None
            # Two pushes first, unmeasured: the normalising pool starts, so py-spy finds its processes.
            asyncio.run(send_pushes([server.base_url], pushes[:2], sizes.concurrency))
            pushes = pushes[2:]
            if args.reupload:  # the first upload, unmeasured: what is profiled is every record a repeat
                asyncio.run(send_pushes([server.base_url], pushes, sizes.concurrency))
                pushes = pushes[:2] + pushes  # the first two were sent once only
            # py-spy's --subprocesses does not find the pool's spawned processes here: one recorder each.
            pids = [server._proc.pid, *children(server._proc.pid)]
            spies = [
                subprocess.Popen(
                    [pyspy, "record", "--pid", str(pid), "--threads", "--rate", str(RATE),
                     "--format", "raw", "--output", f"{raw}.{pid}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in pids
            ]
            time.sleep(1.0)  # py-spy attached
            before = cpu_seconds(server._proc.pid)
            started = time.perf_counter()
            run = asyncio.run(send_pushes([server.base_url], pushes, sizes.concurrency))
            seconds = time.perf_counter() - started
            after = cpu_seconds(server._proc.pid)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(timeout=60)
            server_pid = server._proc.pid
        print(f"{run.entries:,} entries in {seconds:.1f} s: {run.entries / seconds:,.0f} entries/s, "
              f"{run.requests} pushes, errors: {len(run.errors)}")  # fmt: skip
        cpu = {key: after[key] - before.get(key, 0.0) for key in after}
        report([(pid, Path(f"{raw}.{pid}")) for pid in pids], run.entries, server_pid, cpu)
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                found += [int(child) for child in listed.read().split()]
    return found


def report(raws: list[tuple[int, Path]], entries: int, server: int, cpu: dict[tuple[int, int], float]) -> None:
    """CPU per role from /proc (exact), and each role's busiest functions from py-spy's samples."""
    role_of_thread: dict[tuple[int, int], str] = {}
    functions: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    gc_samples: collections.Counter[str] = collections.Counter()
    busy_samples: collections.Counter[str] = collections.Counter()
    lines = [(pid, line) for pid, raw in raws if raw.exists() for line in raw.read_text().splitlines()]
    for process, line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2 or not frames[0].startswith("thread ("):
            continue
        # "thread (TID): NAME", or "thread (TID)" for a thread py-spy found no name for
        tid_text, _, name = frames[0].removeprefix("thread (").partition(")")
        name = name.removeprefix(": ")
        key = (process, int(tid_text, 0))
        role = role_of_thread.get(key)
        if role is None or role == "other threads":
            role = role_of_thread[key] = role_of(process, server, name, stack)
        if any(waiting in frames[-1] for waiting in WAITING):
            continue
        busy_samples[role] += int(count)
        functions[role][frames[-1].split(" (")[0]] += int(count)
        if "(garbage collection)" in stack:
            gc_samples[role] += int(count)
    by_role: collections.Counter[str] = collections.Counter()
    for key, seconds in cpu.items():
        by_role[role_of_thread.get(key, "workers" if key[0] != server else "other threads")] += seconds
    total = sum(by_role.values())
    print(f"{'role':24} {'CPU s':>7} {'us/entry':>9} {'share':>6}  busiest functions (py-spy samples, self)")
    for role, seconds in by_role.most_common():
        samples = busy_samples[role] or 1
        top = ", ".join(f"{name} {n / samples:.0%}" for name, n in functions[role].most_common(5))
        print(f"{role:24} {seconds:7.2f} {seconds / entries * 1e6:9.1f} {seconds / total:6.0%}  {top}")
    print(f"{'total':24} {total:7.2f} {total / entries * 1e6:9.1f}")


if __name__ == "__main__":
    sys.exit(main())
