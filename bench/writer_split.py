"""Where the SQLite writer's time goes during an HTTP ingest, statement by statement, beside the push
ceiling's own statements: `.venv/bin/python bench/writer_split.py [--entries N] [--reupload]`.

The writer is the one stage of an ingest that cannot run in parallel (SQLite has one writer), so an
ingest can go no faster than one entry per the writer's wall time per entry. This starts the server (as
scenario 3 does) with every statement of its writer thread timed (wall and the thread's CPU), sends the
bench's pushes (scenario 3's: 200k entries, 1,000 a push, 6 in flight), and prints per entry:
- each kind of statement: the table it writes, or the tables it reads; SAVEPOINT/RELEASE/BEGIN; COMMIT;
- the writer's Python between statements (the merge's planning, its rows built): the hops' wall time
  less their statements';
- wall against CPU: what a statement waited for besides its own work (the GIL taken back after SQLite
  let go of it, the disk).
Then the push ceiling's statements on the same rows (`run.py`'s "app tables alone, a commit per 1,000
rows", timed the same way) and what the writer's time means for the target: 0.6x of the ceiling's rate
leaves the writer 1 / (0.6 x ceiling rate) per entry, and every other stage must fit beside it.

`--replay N` does the same for a replay of N entries (`python -m service replay` on run.py's NDJSON
file, scenario 5), beside the replay ceiling's statements (its resulting rows into the app tables alone, a
commit per 1,000, as `run.py` writes them).

`--replay N --alone` adds the service's own resulting rows (the app tables and its bookkeeping: merge
state, raw records, device records) written again into an empty database of the same schema by one thread
with nothing else in the process, in arrival order, a commit per 1,000 entries, each table's statement
timed: what those writes cost without a server, a pool or a planner beside them, once on a connection
like the ceiling's and once on the writer's own (its page cache). It tells what the writer's statements
cost because they share the process, and what they cost because they are written at all.

`--contention` measures instead what sharing the process costs the writer: its sync_data insert (the
service's connection and statement) alone, beside a busy process, and beside a busy thread of its own
process, as the event loop and the pool's threads are in the server.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STATS_ENV = "RESYNC_BENCH_WRITER_STATS"  # the instrumented server writes its figures to this file

_TABLE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def kind_of(sql: str) -> str:
    """What a statement does, named by its first word and the tables it names."""
    words = sql.split(None, 2)
    head = words[0].upper() if words else ""
    if head in {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"}:
        return "transaction control (BEGIN, SAVEPOINT, RELEASE)"
    tables = [t for t in _TABLE.findall(sql) if t.lower() not in {"json_each", "select", "set"}]
    if head in {"INSERT", "UPDATE"}:  # the table written is the first one named
        return f"{head.lower()} {tables[0] if tables else '?'}"
    tables = sorted(set(tables))
    return f"read {', '.join(tables) or '-'}"


# --- inside the server -------------------------------------------------------------------------------------


def instrument(stats_file: str) -> None:
    """Times the writer thread's statements, hops and commits; writes the totals to `stats_file` twice a
    second (wall and CPU seconds, calls per kind)."""
    from service.store.sqlite import connection as c

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    lock = threading.Lock()

    def on_writer() -> bool:
        return threading.current_thread().name.startswith("sqlite-writer")

    def add(kind: str, wall: float, cpu: float) -> None:
        with lock:
            entry = totals[kind]
            entry[0] += wall
            entry[1] += cpu
            entry[2] += 1

    def timed_statement(method: Any) -> Any:
        def wrapper(self: Any, sql: str, *args: Any) -> Any:
            if not on_writer():
                return method(self, sql, *args)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(self, sql, *args)
            finally:
                add(kind_of(sql), time.perf_counter() - wall, time.thread_time() - cpu)

        return wrapper

    for name in ("execute", "executemany", "insert_rows", "fetchall", "fetchone"):
        setattr(c.SyncConnection, name, timed_statement(getattr(c.SyncConnection, name)))

    run = c.GuardedConnection.run

    async def timed_run(self: Any, work: Any) -> Any:
        def hop(conn: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return work(conn)
            finally:
                if on_writer():
                    add("(hops)", time.perf_counter() - wall, time.thread_time() - cpu)

        return await run(self, hop)

    async def timed_commit(self: Any) -> None:
        def commit(_: Any) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                self._conn.commit()
            finally:
                add("COMMIT", time.perf_counter() - wall, time.thread_time() - cpu)

        await self.run(commit)  # a hop of its own, counted with the others

    c.GuardedConnection.run = timed_run  # type: ignore[method-assign]
    c.GuardedConnection.commit = timed_commit  # type: ignore[method-assign]

    from service.store.sqlite import checkpoints

    settle = checkpoints.WalCheckpointer.settle

    async def timed_settle(self: Any) -> None:
        # Before BEGIN, outside the writer's hops: the time a transaction waits for the WAL to be copied back.
        wall = time.perf_counter()
        try:
            await settle(self)
        finally:
            add("(settle)", time.perf_counter() - wall, 0.0)

    checkpoints.WalCheckpointer.settle = timed_settle  # type: ignore[method-assign]

    def write_totals() -> None:
        with lock:
            text = json.dumps(totals)
        Path(stats_file + ".tmp").write_text(text)
        os.replace(stats_file + ".tmp", stats_file)

    def dump() -> None:
        while True:
            time.sleep(0.5)
            write_totals()

    atexit.register(write_totals)  # a replay ends right after its last batch
    threading.Thread(target=dump, daemon=True, name="bench-writer-stats").start()


# --- the run -----------------------------------------------------------------------------------------------


def read_stats(path: Path) -> dict[str, list[float]]:
    time.sleep(1.2)  # two dumps after the last push
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _timed(totals: dict[str, list[float]], kind: str, call: Any, *args: Any) -> None:
    """`call(*args)`, its wall and CPU time added to `totals[kind]`."""
    wall, cpu = time.perf_counter(), time.thread_time()
    call(*args)
    entry = totals[kind]
    entry[0] += time.perf_counter() - wall
    entry[1] += time.thread_time() - cpu
    entry[2] += 1


def ceiling_split(rows: Any, db: Path, batch: int) -> dict[str, list[float]]:
    """run.py's push ceiling (`run_batched`), each statement timed: the app tables alone, a commit per
    `batch` records."""
    from harness import connect
    from run import _INSERT_LOGBOOK, _INSERT_SYNC

    logbook_by_id = {row[0]: row for row in rows.logbook}
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    conn = connect(db)
    timed = functools.partial(_timed, totals)
    try:
        for start in range(0, len(rows.sync), batch):
            chunk = rows.sync[start : start + batch]
            timed("transaction control (BEGIN, SAVEPOINT, RELEASE)", conn.execute, "BEGIN IMMEDIATE")
            timed("insert sync_data", conn.executemany, _INSERT_SYNC, chunk)
            timed("insert logbook_entries", conn.executemany, _INSERT_LOGBOOK,
                  [logbook_by_id[r[3]] for r in chunk if r[3] in logbook_by_id])
            timed("COMMIT", conn.execute, "COMMIT")
    finally:
        conn.close()
    return totals


def replay_ceiling_split(source: Path, db: Path, batch: int) -> tuple[dict[str, list[float]], int]:
    """run.py's replay ceiling (`run_copy_batched`), each statement timed: the replay's resulting rows
    into an empty app database, in arrival order, a commit per `batch`."""
    from harness import connect
    from run import _INSERT_LOGBOOK, _INSERT_SYNC, final_rows

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    conn = connect(db)
    timed = functools.partial(_timed, totals)
    done = 0
    try:
        for chunk, logbook in final_rows(source, batch):
            timed("transaction control (BEGIN, SAVEPOINT, RELEASE)", conn.execute, "BEGIN IMMEDIATE")
            timed("insert sync_data", conn.executemany, _INSERT_SYNC, chunk)
            timed("insert logbook_entries", conn.executemany, _INSERT_LOGBOOK, logbook)
            timed("COMMIT", conn.execute, "COMMIT")
            done += len(chunk)
    finally:
        conn.close()
    return totals, done


# The tables of a replay's resulting rows `alone_split` writes again, in the order the writer writes them.
ALONE_TABLES = ("sync_data", "logbook_entries", "recovery_entity_state", "recovery_raw_records",
                "recovery_device_records")


def alone_split(source: Path, db: Path, batch: int, connect: Any) -> dict[str, list[float]]:
    """The rows of `ALONE_TABLES` in the service database `source` written again into `db` (the same
    schema, empty, opened by `connect`), one thread: entries in arrival order (the raw records' order),
    `batch` entries a transaction, each table's executemany timed."""
    import sqlite3

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        schema = [r[0] for r in src.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
            " ORDER BY type = 'index', rowid")]
        users = src.execute("SELECT * FROM users").fetchall()
        Key = tuple[str, str, str]
        by_key: dict[str, dict[Key, list[tuple[Any, ...]]]] = {t: defaultdict(list) for t in ALONE_TABLES}
        order: dict[Key, None] = {}
        for row in src.execute("SELECT user_id, entity_type, entity_id, raw_sha256, raw, checksum, upload_id,"
                               " device_id, received_at FROM recovery_raw_records ORDER BY id"):
            order.setdefault(row[:3], None)
            by_key["recovery_raw_records"][row[:3]].append(row)
        for table, key in (("sync_data", "user_id, entity_type, entity_id"),
                           ("logbook_entries", "user_id, 'logbook_entry', id"),
                           ("recovery_entity_state", "user_id, entity_type, entity_id"),
                           ("recovery_device_records", "user_id, entity_type, entity_id")):
            for row in src.execute(f"SELECT {key}, * FROM {table}"):  # noqa: S608 - constant names
                by_key[table][row[:3]].append(row[3:])
                order.setdefault(row[:3], None)
    finally:
        src.close()
    conn = connect(db)
    for sql in schema:
        conn.execute(sql)
    conn.executemany(f"INSERT INTO users VALUES ({', '.join('?' * len(users[0]))})", users)  # noqa: S608
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ALONE_TABLES}
    columns["recovery_raw_records"].remove("id")  # appended, as the writer does
    statements = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"  # noqa: S608
                  for t, c in columns.items()}
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    timed = functools.partial(_timed, totals)
    keys = list(order)
    try:
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            timed("transaction control (BEGIN, SAVEPOINT, RELEASE)", conn.execute, "BEGIN IMMEDIATE")
            for table in ALONE_TABLES:
                rows = [row for key in chunk for row in by_key[table].get(key, ())]
                timed(f"insert {table}", conn.executemany, statements[table], rows)
            timed("COMMIT", conn.execute, "COMMIT")
    finally:
        conn.close()
    return totals


def report_alone(label: str, totals: dict[str, list[float]], entries: int, budget: float) -> None:
    per = 1e6 / entries
    wall = sum(v[0] for v in totals.values())
    print(f"\nthe service's resulting rows written again alone, {label}: {wall * per:.1f} us an entry "
          f"({wall * per / budget:.2f}x the budget of {budget:.1f})")
    print_rows(totals, per, wall)


def replay(entries: int, alone: bool = False) -> int:
    """The replay's writer split at `entries`, beside its ceiling's (and with `alone`, its rows written
    again by one thread: `alone_split`)."""
    from harness import create_app_db, run_measured
    from run import REPLAY_COMMANDS, SEED, human_count
    from workload import make_users, write_ndjson

    users = make_users(50)
    label = human_count(entries)
    with tempfile.TemporaryDirectory(prefix="resync-writer-replay-") as tmp:
        work = Path(tmp)
        file = write_ndjson(work / "replay.ndjson", users, entries, f"{SEED}:{label}")
        db = work / "replay.db"
        create_app_db(db, users)
        stats = work / "writer.json"
        os.environ[STATS_ENV] = str(stats)
        try:
            launcher = [REPLAY_COMMANDS[0][0][0], str(Path(__file__).resolve()), "replay"]
            child = run_measured([*launcher, "--db", str(db), "--json", str(file.path)], work, "replay")
        finally:
            del os.environ[STATS_ENV]
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            return 1
        split = read_stats(stats)
        create_app_db(work / "ceiling.db", users)
        ceiling, rows = replay_ceiling_split(db, work / "ceiling.db", 1000)
        ceiling_wall = sum(v[0] for v in ceiling.values())
        report(split, ceiling, file.entries, child.seconds, rows / ceiling_wall, what=f"replay of {label}",
               rows=rows)
        if alone:
            from harness import connect

            from service.store.sqlite.connection import _open

            budget = writer_budget_us(rows, file.entries, rows / ceiling_wall)
            for name, opener in (("on a connection like the ceiling's", connect),
                                 ("on the writer's own connection (its page cache)", lambda p: _open(str(p), False))):
                target = work / "alone.db"
                totals = alone_split(db, target, 1000, opener)
                report_alone(name, totals, file.entries, budget)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
    return 0


def _parse_json_until(stop: Any) -> None:
    """Python that holds the GIL as the event loop's and the pool's threads do: JSON decoded over and over."""
    document = json.dumps({"ids": list(range(200)), "notes": "x" * 500})
    while not stop.is_set():
        json.loads(document)


def contention(entries: int) -> None:
    """The writer's sync_data insert (the service's own connection and statement, 1,000 rows a
    transaction) alone, beside a busy process, and beside a busy thread of its own process."""
    import multiprocessing

    from harness import create_app_db
    from run import SEED, prepare_rows
    from workload import ADMIN, make_users, push_dataset

    from service.store.sqlite import units
    from service.store.sqlite.connection import SyncConnection, _open

    users = make_users(50)
    rows = prepare_rows(push_dataset(users, entries, SEED), {u.id: u.device_id for u in users})
    sql = units._INSERT_SYNC.strip() + " ON CONFLICT DO NOTHING"  # the data set repeats some keys
    sync = [(*r[:7], None, *r[7:]) for r in rows.sync]  # with deleted_at, as the writer inserts them

    def insert_all() -> tuple[float, float]:
        with tempfile.TemporaryDirectory(prefix="resync-contention-") as tmp:
            db = Path(tmp) / "c.db"
            create_app_db(db, [*users, ADMIN])
            conn = _open(str(db), False)
            wall = cpu = 0.0
            for start in range(0, len(sync), 1000):
                conn.execute("BEGIN IMMEDIATE")
                began, began_cpu = time.perf_counter(), time.thread_time()
                SyncConnection(conn).insert_rows(sql, sync[start : start + 1000])
                wall, cpu = wall + time.perf_counter() - began, cpu + time.thread_time() - began_cpu
                conn.execute("COMMIT")
            conn.close()
        return wall * 1e6 / len(sync), cpu * 1e6 / len(sync)

    print(f"the writer's sync_data insert, {len(sync):,} rows, 1,000 a transaction: wall and CPU us a row")
    print("  alone:                                     {:6.1f} {:6.1f}".format(*insert_all()))
    neighbours: list[tuple[str, Any, Any]] = [
        ("beside a busy process (another core):     ", multiprocessing.Process, multiprocessing.Event()),
        ("beside a busy thread of the same process: ", threading.Thread, threading.Event()),
    ]
    for label, kind, stop in neighbours:
        neighbour = kind(target=_parse_json_until, args=(stop,), daemon=True)
        neighbour.start()
        try:
            print(f"  {label}" + " {:6.1f} {:6.1f}".format(*insert_all()))
        finally:
            stop.set()
            neighbour.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="scenario 3's 200k: 4 pushes of 1,000 a user")
    parser.add_argument("--reupload", action="store_true", help="time the same pushes sent a second time")
    parser.add_argument("--contention", action="store_true",
                        help="instead: the writer's sync_data insert alone, beside a busy process, and thread")
    parser.add_argument("--replay", type=int, metavar="N", help="instead: a replay of N entries (scenario 5)")
    parser.add_argument("--alone", action="store_true",
                        help="with --replay: its resulting rows written again by one thread, table by table")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    if args.replay:
        return replay(args.replay, args.alone)
    if args.contention:
        contention(args.entries)
        return 0
    from harness import ServerProcess, create_app_db
    from profile_http import IngestWorkload
    from run import prepare_rows, send_pushes
    from workload import ADMIN

    with tempfile.TemporaryDirectory(prefix="resync-writer-") as tmp:
        work = Path(tmp)
        workload = IngestWorkload.make(args.entries, work)
        users, dataset, sizes, pushes = workload.users, workload.dataset, workload.sizes, workload.pushes
        stats = work / "writer.json"
        os.environ[STATS_ENV] = str(stats)
        try:
            launcher = [str(Path(__file__).resolve())]
            with ServerProcess(workload.db, workload.secret, work / "server.log", launcher=launcher) as server:
                if args.reupload:
                    asyncio.run(send_pushes([server.base_url], pushes, sizes.concurrency))
                before = read_stats(stats)
                started = time.perf_counter()
                run = asyncio.run(send_pushes([server.base_url], pushes, sizes.concurrency))
                seconds = time.perf_counter() - started
                after = read_stats(stats)
        finally:
            del os.environ[STATS_ENV]
        if run.errors:
            print("\n".join(run.errors[:5]), file=sys.stderr)
            return 1
        split = {k: [a - b for a, b in zip(v, before.get(k, [0.0, 0.0, 0]), strict=True)] for k, v in after.items()}
        rows = prepare_rows(dataset, {u.id: u.device_id for u in users})
        create_app_db(work / "ceiling.db", [*users, ADMIN])
        ceiling_started = time.perf_counter()
        ceiling = ceiling_split(rows, work / "ceiling.db", sizes.push_size)
        ceiling_rate = len(rows.sync) / (time.perf_counter() - ceiling_started)
    what = "re-upload (every record a repeat)" if args.reupload else "first upload"
    report(split, ceiling, run.entries, seconds, ceiling_rate, what=what, rows=run.entries)
    return 0


def print_rows(totals: dict[str, list[float]], per: float, whole: float) -> None:
    """One line per statement kind, largest first: wall and CPU us an entry, calls, share of `whole`."""
    for kind, (wall, cpu, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"{kind[:58]:58} {wall * per:8.1f} {cpu * per:7.1f} {calls:6.0f} {wall / whole:10.0%}")


def writer_budget_us(rows: int, entries: int, ceiling_rate: float) -> float:
    """The writer's wall time an entry at which the run would reach 0.6x of the ceiling's rows/s."""
    return rows / entries * 1e6 / (0.6 * ceiling_rate)


def report(split: dict[str, list[float]], ceiling: dict[str, list[float]], entries: int, seconds: float,
           ceiling_rate: float, *, what: str, rows: int) -> None:
    """Per entry; the target's rate is the ceiling's rows/s, and `rows` the rows the run's entries end
    as (a replay's ratio is its resulting rows a second over the ceiling's)."""
    hops = split.pop("(hops)", [0.0, 0.0, 0])
    settled = split.pop("(settle)", [0.0, 0.0, 0])
    # Every statement runs inside a hop (COMMIT in one of its own): what is left of the hops is Python.
    python = [hops[0] - sum(v[0] for v in split.values()), hops[1] - sum(v[1] for v in split.values()), 0]
    per = 1e6 / entries
    print(f"{entries:,} entries, {what}, in {seconds:.1f} s: {entries / seconds:,.0f} entries/s; the writer "
          f"was busy {hops[0] / seconds:.0%} of the time, {hops[0] * per:.1f} us an entry (CPU {hops[1] * per:.1f})")
    print(f"before BEGIN, waiting for the WAL to be copied back: {settled[0] / seconds:.0%} of the time, "
          f"{settled[0] * per:.1f} us an entry")
    print(f"{'writer statement':58} {'wall us':>8} {'CPU us':>7} {'calls':>6} {'wall share':>10}")
    print_rows(split, per, hops[0])
    print(f"{'Python between statements (planning, rows built)':58} {python[0] * per:8.1f} {python[1] * per:7.1f} "
          f"{'':6} {python[0] / hops[0]:10.0%}")
    ceiling_wall = sum(v[0] for v in ceiling.values())
    name = "replay ceiling" if "replay" in what else "push ceiling"
    print(f"\n{name}, the app tables alone: {ceiling_rate:,.0f} rows/s, {ceiling_wall * per:.1f} us an entry")
    print_rows(ceiling, per, ceiling_wall)
    budget = writer_budget_us(rows, entries, ceiling_rate)
    cap = rows / hops[0]
    print(f"\n0.6x of the ceiling is {0.6 * ceiling_rate:,.0f} rows/s ({rows:,} rows for {entries:,} entries): at "
          f"most {budget:.1f} us of writer wall time an entry, against {hops[0] * per:.1f} now "
          f"({hops[0] * per / budget:.2f}x the budget); the writer alone caps this run at {cap:,.0f} rows/s, "
          f"{cap / ceiling_rate:.2f}x of the ceiling; the run reached {rows / seconds / ceiling_rate:.2f}x")

if __name__ == "__main__":
    if os.environ.get(STATS_ENV) and len(sys.argv) > 1 and sys.argv[1] in {"serve", "replay"}:
        # Launched as the server (by ServerProcess) or the replay: instrument, then run the service's own entry point.
        sys.path.insert(0, str(HERE.parent))
        instrument(os.environ[STATS_ENV])
        from service.cli import main as service_main

        sys.exit(service_main(sys.argv[1:]))
    sys.exit(main())
