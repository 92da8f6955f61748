"""Where the server's CPU goes during an HTTP ingest: `.venv/bin/python bench/profile_http.py [--entries N]`.

Starts `python -m service serve` on a fresh database (as scenario 3 does), attaches py-spy to it with
`--subprocesses --threads` (active samples only: a sample is CPU time, or time waiting for the GIL), sends
the bench's pushes of 1,000 entries, and prints the CPU per entry by role: the normalising worker
processes, the writer thread, the event loop, the process pool's result thread, the other threads
(readers, the thread that prepares large batches), and the server's garbage collections inside them.
Needs py-spy (`.venv/bin/pip install py-spy`) and permission to ptrace the server (root, or
`kernel.yama.ptrace_scope=0`). `--raw FILE` keeps py-spy's output.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
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
from run import SEED, Sizes, build_pushes, send_pushes
from workload import ADMIN, make_users, push_dataset

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
    processes = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                processes += [int(child) for child in children.read().split()]
    for process in processes:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{process}/task"):
                with open(f"/proc/{process}/task/{task}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
                found[(process, int(task))] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=50_000, help="50k: each user's pushes hold 1,000 entries")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    users = make_users(50)
    dataset = push_dataset(users, args.entries, SEED)
    sizes = Sizes(users=50, entries=args.entries, push_size=1000, app_way_subset=0, replay_entries=(0, 0))
    with tempfile.TemporaryDirectory(prefix="resync-profile-") as tmp:
        work = Path(tmp)
        db = work / "http.db"
        create_app_db(db, [*users, ADMIN])
        secret = secrets.token_urlsafe(32)
        pushes = build_pushes(dataset, users, sizes.push_size, secret)
        raw = args.raw or work / "profile.raw"
        with ServerProcess(db, secret, work / "server.log") as server:
            assert server._proc is not None
            # Two pushes first, unmeasured: the normalising pool starts, so py-spy finds its processes.
            asyncio.run(send_pushes(server.base_url, pushes[:2], sizes.concurrency))
            pushes = pushes[2:]
            spy = subprocess.Popen(
                [pyspy, "record", "--pid", str(server._proc.pid), "--subprocesses", "--threads", "--rate", str(RATE),
                 "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attached
            before = cpu_seconds(server._proc.pid)
            started = time.perf_counter()
            run = asyncio.run(send_pushes(server.base_url, pushes, sizes.concurrency))
            seconds = time.perf_counter() - started
            after = cpu_seconds(server._proc.pid)
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            server_pid = server._proc.pid
        print(f"{run.entries:,} entries in {seconds:.1f} s: {run.entries / seconds:,.0f} entries/s, "
              f"{run.requests} pushes, errors: {len(run.errors)}")  # fmt: skip
        cpu = {key: after[key] - before.get(key, 0.0) for key in after}
        report(raw, run.entries, server_pid, cpu)
    return 0


def report(raw: Path, entries: int, server: int, cpu: dict[tuple[int, int], float]) -> None:
    """CPU per role from /proc (exact), and each role's busiest functions from py-spy's samples."""
    role_of_thread: dict[tuple[int, int], str] = {}
    functions: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    gc_samples: collections.Counter[str] = collections.Counter()
    busy_samples: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 3 or not frames[0].startswith("process ") or not frames[1].startswith("thread ("):
            continue
        process = int(frames[0].split()[1].rstrip(":").split(":")[0])
        tid_text, _, name = frames[1].removeprefix("thread (").partition("): ")
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
