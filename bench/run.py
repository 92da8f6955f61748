"""Recovery service benchmark: `.venv/bin/python bench/run.py [--quick] [--only SCENARIO,...] [--keep]`.

Scenarios (see bench/README.md for what each measures and why):
  baseline  sqlite3 executemany of the normalised rows into the app schema, one transaction (the ceiling)
  app       the app's own way: per record SELECT, upsert, COMMIT (synchronous=FULL)
  http      POST /api/sync/push through a real server, bounded concurrency
  reupload  the same upload again: every record a duplicate
  support   GET /v1/support/users/{id} latency while `http` runs
  replay    `python -m service replay` of two NDJSON files (1M and 4M entries): rate and peak RSS
  postgres  the same on PostgreSQL: its COPY ceilings, HTTP ingest with one and two replicas, a 1M replay

Data is generated (seeded, see workload.py) into a temporary directory, or bench/data/ with --keep.
Prints one table, writes bench/results.json, then checks the databases hold exactly what the generator
says they must; a wrong count prints FAILED and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.queues
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pg
from harness import (
    ROOT,
    RSS_SAMPLE_INTERVAL_S,
    ChildRun,
    ServerProcess,
    connect,
    create_app_db,
    percentile,
    run_measured,
)
from rich.console import Console
from rich.table import Table
from workload import ADMIN, BenchUser, Expected, NdjsonFile, PushDataset, make_users, push_dataset, total, write_ndjson

from service.domain.normalise import normalise
from service.domain.outcomes import OUTCOMES
from service.domain.records import LOGBOOK_ENTRY, Normalised
from service.replay.runner import DEFAULT_BATCH_SIZE
from service.tokens import issue_token

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results.json"
SEED = "mirubato-bench-1"
SCENARIOS = ("baseline", "app", "http", "reupload", "support", "replay", "postgres")
# Wide enough for the table when the output goes to a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=200)


@dataclass(frozen=True)
class Sizes:
    users: int
    entries: int  # the push data set: baseline, app's way and HTTP ingest use the same records
    push_size: int
    app_way_subset: int  # per-record commits are slow: the app's way runs on the first N records
    replay_entries: tuple[int, ...]  # one or two sizes; with two, the RSS growth between them is a row
    postgres_replay_entries: int
    replay_ceiling_at: tuple[int, ...] = ()  # replay sizes whose own rows are written again for a ceiling
    concurrency: int = 6
    poll_interval_s: float = 0.020


FULL = Sizes(users=50, entries=200_000, push_size=1000, app_way_subset=10_000, replay_entries=(1_000_000, 4_000_000),
             postgres_replay_entries=1_000_000, replay_ceiling_at=(1_000_000, 4_000_000))
QUICK = Sizes(users=50, entries=20_000, push_size=1000, app_way_subset=2_000, replay_entries=(100_000, 400_000),
              postgres_replay_entries=100_000, replay_ceiling_at=(100_000, 400_000))


# --- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    on: str  # "ratio" or "figure"
    op: str  # ">=" or "<="
    bound: float
    unit: str = "x"

    def __str__(self) -> str:
        what = "ratio " if self.on == "ratio" else ""
        return f"{what}{self.op} {self.bound:g}{'x' if self.on == 'ratio' else ' ' + self.unit}"

    def met(self, figure: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else figure
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound


@dataclass
class Result:
    scenario: str
    name: str
    figure: float | None
    unit: str
    ratio: float | None = None
    ratio_to: str | None = None  # what the ratio is against
    target: Target | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        return self.target.met(self.figure, self.ratio) if self.target else None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    sizes: Sizes
    quick: bool
    results: list[Result] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    baseline: float | None = None  # rows/s
    push_ceiling: float | None = None  # rows/s: the app tables alone, a commit per push's worth

    def ratio(self, rate: float | None) -> float | None:
        return rate / self.baseline if rate and self.baseline else None

    def failed(self, scenario: str, name: str, error: BaseException | str) -> None:
        self.results.append(Result(scenario, name, None, "", note=f"error: {error}"))
        self.checks.append(Check(f"{scenario} ran", False, str(error)))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# --- 1 and 2: SQLite alone --------------------------------------------------------------------------------


@dataclass
class PreparedRows:
    """The push data set normalised by the service's own `normalise` (untimed): one sync_data row per
    record, and its logbook_entries row when the legacy CHECKs accept it."""

    sync: list[tuple[Any, ...]]
    logbook: list[tuple[Any, ...]]


def prepare_rows(dataset: PushDataset, devices: dict[str, str]) -> PreparedRows:
    now_ms = int(time.time() * 1000)
    sync: list[tuple[Any, ...]] = []
    logbook: list[tuple[Any, ...]] = []
    for i, (user_id, raw) in enumerate(dataset.pairs()):
        n = normalise(LOGBOOK_ENTRY, raw, user_id, now_ms=now_ms)
        if not isinstance(n, Normalised):
            raise RuntimeError(f"the service does not take a generated record ({n}): fix bench/workload.py")
        device = devices[user_id]
        data = n.text
        sync.append((f"sync_bench{i:012d}", user_id, n.entity_type, n.entity_id, data, n.checksum, 1, device, i + 1))
        if (row := n.logbook_row) is not None:
            content = tuple(getattr(row, column) for column in LOGBOOK_CONTENT)
            logbook.append((row.id, user_id, *content, 1, n.checksum, device))
    return PreparedRows(sync, logbook)


_SYNC_COLUMNS = ("id", "user_id", "entity_type", "entity_id", "data", "checksum", "version", "device_id", "seq")
_INSERT_SYNC = """INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, device_id, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"""
LOGBOOK_CONTENT = ("timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids", "notes",
                   "mood", "tags", "session_id", "metadata", "created_at", "updated_at")  # fmt: skip
_LOGBOOK_COLUMNS = ("id", "user_id", *LOGBOOK_CONTENT, "sync_version", "checksum", "device_id")
_INSERT_LOGBOOK = (
    f"INSERT INTO logbook_entries ({', '.join(_LOGBOOK_COLUMNS)}) "  # noqa: S608 - constant column names
    f"VALUES ({', '.join('?' * len(_LOGBOOK_COLUMNS))}) ON CONFLICT DO NOTHING"
)
_APP_SELECT = "SELECT id, checksum, version FROM sync_data WHERE user_id = ? AND entity_type = ? AND entity_id = ?"
_APP_UPSERT = """INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, version, device_id, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, entity_type, entity_id) DO UPDATE SET data = excluded.data, checksum = excluded.checksum,
  version = sync_data.version + 1, device_id = excluded.device_id, seq = excluded.seq"""


def run_baseline(rows: PreparedRows, db: Path) -> float:
    """Rows/s of one executemany transaction (sync_data, then logbook_entries), per record sent."""
    conn = connect(db)
    try:
        started = time.perf_counter()
        _write_transaction(conn, rows.sync, rows.logbook)
        return rate(len(rows.sync), time.perf_counter() - started)
    finally:
        conn.close()


def _write_transaction(conn: sqlite3.Connection, sync: list[Any], logbook: list[Any]) -> None:
    """sync_data rows, then their logbook_entries rows, in one transaction (fsync'd COMMIT)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT_SYNC, sync)
    conn.executemany(_INSERT_LOGBOOK, logbook)
    conn.execute("COMMIT")


def run_batched(rows: PreparedRows, db: Path, batch: int) -> float:
    """Rows/s of the same inserts with a transaction (and an fsync'd COMMIT) per `batch` records."""
    logbook_by_id = {row[0]: row for row in rows.logbook}
    conn = connect(db)
    try:
        started = time.perf_counter()
        for start in range(0, len(rows.sync), batch):
            chunk = rows.sync[start : start + batch]
            _write_transaction(conn, chunk, [logbook_by_id[r[3]] for r in chunk if r[3] in logbook_by_id])
        return rate(len(rows.sync), time.perf_counter() - started)
    finally:
        conn.close()


def final_rows(source: Path, batch: int) -> Iterator[tuple[list[Any], list[Any]]]:
    """A service database's final app rows, `batch` sync_data rows at a time in arrival order, each with
    its logbook_entries rows."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        cursor = src.execute(f"SELECT {', '.join(_SYNC_COLUMNS)} FROM sync_data ORDER BY rowid")  # noqa: S608
        while chunk := cursor.fetchmany(batch):
            entry_ids = json.dumps([r[3] for r in chunk if r[2] == LOGBOOK_ENTRY])
            logbook = src.execute(
                f"SELECT {', '.join(_LOGBOOK_COLUMNS)} FROM logbook_entries"  # noqa: S608 - constant columns
                " WHERE id IN (SELECT value FROM json_each(?))",
                (entry_ids,),
            ).fetchall()
            yield chunk, logbook
    finally:
        src.close()


def run_copy_batched(source: Path, db: Path, batch: int) -> tuple[float, int]:
    """Rows/s of writing a service database's final app rows (sync_data, logbook_entries) again into an
    empty app database, in arrival order, a transaction per `batch` records; reading them is not timed."""
    conn = connect(db)
    spent = 0.0
    done = 0
    try:
        for chunk, logbook in final_rows(source, batch):
            started = time.perf_counter()
            _write_transaction(conn, chunk, logbook)
            spent += time.perf_counter() - started
            done += len(chunk)
        return rate(done, spent), done
    finally:
        conn.close()


def run_app_way(rows: PreparedRows, db: Path, subset: int) -> tuple[float, int]:
    """Rows/s the way the app writes: per record, SELECT the stored row, upsert, COMMIT (fsync)."""
    records = rows.sync[:subset]
    conn = connect(db)
    try:
        started = time.perf_counter()
        for row in records:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_APP_SELECT, row[1:4]).fetchone()
            conn.execute(_APP_UPSERT, row)
            conn.execute("COMMIT")
        return rate(len(records), time.perf_counter() - started), len(records)
    finally:
        conn.close()


# --- 3, 4 and 6: HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    user_id: str
    entries: int
    body: bytes
    headers: dict[str, str]


def build_pushes(dataset: PushDataset, users: list[BenchUser], push_size: int, secret: str) -> list[Push]:
    """Each user's records in push bodies of `push_size`, encoded up front, users taking turns."""
    per_user: list[list[Push]] = []
    for user in users:
        headers = {
            "Authorization": f"Bearer {issue_token(secret, user.id, user.email)}",
            "X-Device-ID": user.device_id,
            "Content-Type": "application/json",
        }
        records = dataset.records[user.id]
        per_user.append(
            [
                Push(
                    user.id,
                    len(chunk),
                    json.dumps({"changes": {"entries": chunk}}, ensure_ascii=False).encode(),
                    headers,
                )
                for chunk in (records[i : i + push_size] for i in range(0, len(records), push_size))
            ]
        )
    rounds = max(len(p) for p in per_user)
    return [pushes[k] for k in range(rounds) for pushes in per_user if k < len(pushes)]


@dataclass
class PushRun:
    entries: int = 0
    seconds: float = 0.0
    requests: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return rate(self.entries, self.seconds)


def replica_of(index: int, users: int, replicas: int) -> int:
    """The replica push `index` goes to (pushes are in rounds, users taking turns): each round starts one
    replica further, so a user's successive pushes alternate between replicas (no stickiness)."""
    return (index + index // users) % replicas


async def send_pushes(base_urls: list[str], pushes: list[Push], concurrency: int) -> PushRun:
    """Every push, at most `concurrency` in flight in all; each answer's per-outcome counts are added up.
    With several servers (replicas of one database) the pushes are spread over them (`replica_of`)."""
    run = PushRun()
    users = len({push.user_id for push in pushes})
    queue = iter(enumerate(pushes))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=600, limits=limits))
            for url in base_urls
        ]

        async def worker() -> None:
            for index, push in queue:  # shared: each push is taken by exactly one worker
                client = clients[replica_of(index, users, len(clients))]
                response = await client.post("/api/sync/push", content=push.body, headers=push.headers)
                run.requests += 1
                if response.status_code != 200:
                    run.errors.append(f"{push.user_id}: HTTP {response.status_code} {response.text[:200]}")
                    continue
                run.entries += push.entries
                run.counts.update(response.json()["recovery"]["counts"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
    return run


@dataclass
class Latencies:
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def poll_support(
    base_url: str, token: str, user_ids: list[str], stop: asyncio.Event, interval_s: float, limit: int | None = None
) -> Latencies:
    """GET /v1/support/users/{id} every `interval_s` (users in turn) until `stop` is set (or `limit` requests)."""
    latencies = Latencies()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as client:
        await client.get(f"/v1/support/users/{user_ids[0]}")  # warm up the connection, not measured
        i = 0
        while not stop.is_set() and (limit is None or i < limit):
            started = time.perf_counter()
            response = await client.get(f"/v1/support/users/{user_ids[i % len(user_ids)]}")
            latencies.ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                latencies.errors.append(f"HTTP {response.status_code}")
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    return latencies


async def ingest_while_polling(
    base_url: str, pushes: list[Push], sizes: Sizes, admin_token: str, user_ids: list[str], poll_urls: list[str]
) -> tuple[PushRun, list[Latencies]]:
    """The pushes, while a process per URL of `poll_urls` polls the support route there: measured from a
    process of its own, the latency is the server's, not this process's event loop busy with the pushes'
    answers. One list of latencies per URL, in order."""
    if not poll_urls:
        return await send_pushes([base_url], pushes, sizes.concurrency), []
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    answers: list[multiprocessing.queues.Queue[Latencies]] = [context.Queue() for _ in poll_urls]
    pollers = [
        context.Process(
            target=poll_in_process, args=(url, admin_token, user_ids, sizes.poll_interval_s, stop, answer)
        )
        for url, answer in zip(poll_urls, answers, strict=True)
    ]
    for poller in pollers:
        poller.start()
    try:
        run = await send_pushes([base_url], pushes, sizes.concurrency)
    finally:
        stop.set()
    latencies = [await asyncio.to_thread(answer.get, True, 120) for answer in answers]
    for poller in pollers:
        poller.join(30)
    return run, latencies


def poll_in_process(
    base_url: str, token: str, user_ids: list[str], interval_s: float, stop: Any, answers: Any
) -> None:
    """A child process's body: poll until `stop` (a multiprocessing Event) is set, then send the latencies."""

    async def poll() -> Latencies:
        stopped = asyncio.Event()
        watcher = asyncio.create_task(asyncio.to_thread(stop.wait))
        watcher.add_done_callback(lambda _: stopped.set())
        return await poll_support(base_url, token, user_ids, stopped, interval_s)

    answers.put(asyncio.run(poll()))


@dataclass
class HttpRuns:
    db: Path
    ingest: PushRun
    reupload: PushRun | None
    latencies: Latencies | None
    idle_latencies: Latencies | None  # the same GETs on the idle server after the ingest, for reference
    # The same GETs during the ingest on the devices' port (the server process, beside the writer)
    device_port_latencies: Latencies | None = None


IDLE_POLLS = 100


def run_http(
    dataset: PushDataset, users: list[BenchUser], sizes: Sizes, work: Path, *, reupload: bool, support: bool
) -> HttpRuns:
    db = work / "http.db"
    create_app_db(db, [*users, ADMIN])
    secret = secrets.token_urlsafe(32)
    pushes = build_pushes(dataset, users, sizes.push_size, secret)
    admin_token = issue_token(secret, ADMIN.id, ADMIN.email)
    user_ids = [u.id for u in users]
    # Support staff are served by the support listener (`serve --support-port`), as deployed; the same GETs
    # on the devices' port are measured beside them, for reference.
    with ServerProcess(db, secret, work / "server.log", support_listener=support) as server:
        poll_urls = [server.support_url, server.base_url] if server.support_url else []
        ingest, polled = asyncio.run(
            ingest_while_polling(server.base_url, pushes, sizes, admin_token, user_ids, poll_urls)
        )
        idle = None
        if server.support_url:
            idle = asyncio.run(
                poll_support(server.support_url, admin_token, user_ids, asyncio.Event(), 0.005, limit=IDLE_POLLS)
            )
        again = asyncio.run(send_pushes([server.base_url], pushes, sizes.concurrency)) if reupload else None
    latencies, device_port = polled if polled else (None, None)
    return HttpRuns(db, ingest, again, latencies, idle, device_port)


# --- 5: replay -----------------------------------------------------------------------------------------


# Issue #17's targets: ratios to the ceilings the service's own commit cadence allows, measured in the run.
PUSH_TARGET = Target("ratio", ">=", 0.6)
REPLAY_TARGET = Target("ratio", ">=", 0.6)
REPLAY_COMMANDS = (
    ([sys.executable, "-m", "service", "replay"], ""),
    # The package's own entry point, while the CLI does not register `replay` yet.
    ([sys.executable, "-m", "service.replay"], "via `python -m service.replay` (`service replay` not in the CLI yet)"),
)


def replay_command() -> tuple[list[str] | None, str]:
    """The replay command and a note on it, or None and why it is not available."""
    for cmd, note in REPLAY_COMMANDS:
        if run_quiet([*cmd, "--help"]).returncode == 0:
            return cmd, note
    return None, "not available: `python -m service replay --help` fails (the command is not there yet)"


def run_quiet(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class ReplayRun:
    label: str
    file: NdjsonFile
    db: Path | str  # a SQLite file or a PostgreSQL URL
    child: ChildRun
    summary: dict[str, Any] | None

    @property
    def rate(self) -> float:
        return rate(self.file.entries, self.child.seconds)

    @property
    def rows(self) -> int:
        """The sync_data rows the replay must end with (one per session)."""
        return total(self.file.expected).sessions

    @property
    def peak_mb(self) -> float:
        return self.child.peak_rss_bytes / 1e6


def run_replay(cmd: list[str], entries: int, users: list[BenchUser], work: Path, keep: bool) -> ReplayRun:
    label = human_count(entries)
    console.print(f"  generating {label}-entry NDJSON file ...")
    file = write_ndjson(work / f"replay-{label}.ndjson", users, entries, f"{SEED}:{label}")
    db = work / f"replay-{label}.db"
    create_app_db(db, users)
    console.print(f"  replaying {label} entries ({file.path.stat().st_size / 1e6:,.0f} MB, {file.lines:,} lines) ...")
    child = run_measured([*cmd, "--db", str(db), "--json", str(file.path)], work, f"replay-{label}")
    try:
        summary = json.loads(child.stdout) if child.returncode == 0 else None
    except json.JSONDecodeError:
        summary = None
    if not keep:
        file.path.unlink()  # gigabytes in the full run; the database stays for the checks
    return ReplayRun(label, file, db, child, summary)


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def human_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# --- correctness --------------------------------------------------------------------------------------


Query = Callable[..., list[tuple[Any, ...]]]


def per_user(query: Query, sql: str, *params: Any) -> dict[str, int]:
    return {user_id: n for user_id, n in query(sql, *params)}


def open_querier(db: Path | str) -> tuple[Query, Callable[[], None]]:
    """`query(sql, *params)` (`?` placeholders) on a SQLite file, or a PostgreSQL database's URL; and close."""
    if isinstance(db, str):
        return pg.querier(db)
    conn = connect(db)
    return (lambda sql, *params: conn.execute(sql, params).fetchall()), conn.close


def compare(name: str, got: dict[str, int], want: dict[str, int]) -> Check:
    wrong = [f"{u}: {got.get(u, 0)} != {w}" for u, w in want.items() if got.get(u, 0) != w]
    wrong += [f"{u}: {n} unexpected" for u, n in got.items() if u not in want and n]
    total_got, total_want = sum(got.values()), sum(want.values())
    detail = f"{total_got:,} (expected {total_want:,})" + (
        f"; {len(wrong)} users differ, e.g. {wrong[:3]}" if wrong else ""
    )
    return Check(name, not wrong, detail)


def no_errors(name: str, errors: list[str]) -> Check:
    return Check(name, not errors, f"{len(errors)} failed, e.g. {'; '.join(errors[:3])}" if errors else "")


def check_database(
    label: str, db: Path | str, expected: dict[str, Expected], received: int, source: str
) -> list[Check]:
    """The rows each user must end with: one live row per session (ids whose content another id has are
    content duplicates, recorded but not stored), logbook rows where the legacy CHECKs allow, a ledger that
    counts every record received, nothing quarantined. `db`: a SQLite file or a PostgreSQL URL."""
    query, close = open_querier(db)
    try:
        live = per_user(
            query,
            "SELECT user_id, COUNT(*) FROM sync_data WHERE entity_type = ? AND deleted_at IS NULL GROUP BY user_id",
            LOGBOOK_ENTRY,
        )
        all_rows = per_user(query, "SELECT user_id, COUNT(*) FROM sync_data GROUP BY user_id")
        logbook = per_user(
            query, "SELECT user_id, COUNT(*) FROM logbook_entries WHERE deleted_at IS NULL GROUP BY user_id"
        )
        twins = per_user(
            query, "SELECT user_id, COUNT(*) FROM recovery_entity_state WHERE duplicate_of IS NOT NULL GROUP BY user_id"
        )
        ledger = query("SELECT COALESCE(SUM(received), 0) FROM recovery_ledger WHERE source = ?", source)[0][0]
        quarantined = query("SELECT COUNT(*) FROM recovery_quarantine")[0][0]
    finally:
        close()
    keys_minus_twins = {u: e.keys - e.twins for u, e in expected.items()}
    return [
        compare(f"{label}: live sync_data rows per user == distinct keys - content duplicates", live, keys_minus_twins),
        compare(f"{label}: all sync_data rows per user (no tombstones expected)", all_rows, keys_minus_twins),
        compare(
            f"{label}: logbook_entries rows per user (legacy CHECKs)",
            logbook,
            {u: e.row_eligible for u, e in expected.items()},
        ),
        compare(f"{label}: content duplicates recorded per user", twins, {u: e.twins for u, e in expected.items()}),
        Check(
            f"{label}: ledger received sum == entries sent", ledger == received, f"{ledger:,} (expected {received:,})"
        ),
        Check(f"{label}: nothing quarantined", quarantined == 0, f"{quarantined:,} quarantined"),
    ]


def check_counts(label: str, counts: dict[str, int], expected: Expected, *, first_time: bool) -> Check:
    """Outcome counts as answered: a first upload inserts each session once and dedupes the rest; a
    repeat only finds duplicates. (Which copy of a session is the duplicate may depend on order.)"""
    got: dict[str, int] = {str(o): counts.get(o, 0) for o in OUTCOMES}
    dupes = got["duplicate"] + got["content_duplicate"]
    inserted = expected.sessions if first_time else 0
    others = sum(n for o, n in got.items() if o not in ("inserted", "duplicate", "content_duplicate"))
    ok = got["inserted"] == inserted and dupes == expected.sent - inserted and others == 0
    detail = (
        f"inserted {got['inserted']:,} (expected {inserted:,}), duplicates {dupes:,} "
        f"(expected {expected.sent - inserted:,}), other outcomes {others:,}"
    )
    return Check(f"{label}: outcome counts", ok, detail)


# --- the scenarios in order -------------------------------------------------------------------------------


BASELINE_ROUNDS = 3


def scenario_sqlite(report: Report, rows: PreparedRows, users: list[BenchUser], work: Path, run_app: bool) -> None:
    rates = []
    for round_ in range(BASELINE_ROUNDS):  # the best of a few: a ceiling, and less noisy than one short run
        db = work / f"baseline-{round_}.db"
        create_app_db(db, users)
        rates.append(run_baseline(rows, db))
    report.baseline = max(rates)
    report.results.append(
        Result(
            "1",
            "baseline: executemany, one transaction",
            report.baseline,
            "rows/s",
            1.0,
            "baseline",
            note=f"{len(rows.sync):,} records (+{len(rows.logbook):,} logbook_entries rows); "
            f"best of {BASELINE_ROUNDS}: {', '.join(f'{r:,.0f}' for r in rates)}",
        )
    )
    db = work / "batched.db"
    create_app_db(db, users)
    batched = run_batched(rows, db, report.sizes.push_size)
    report.push_ceiling = batched
    report.results.append(
        Result(
            "1",
            f"app tables alone, a commit per {report.sizes.push_size:,} rows",
            batched,
            "rows/s",
            report.ratio(batched),
            "baseline",
            note="the same inserts, one fsync'd transaction per push's worth: what any service that commits "
            "each push pays before doing anything else (the ceiling for 3)",
        )
    )
    remove_db(db)
    if run_app:
        db = work / "app-way.db"
        create_app_db(db, users)
        app_rate, done = run_app_way(rows, db, report.sizes.app_way_subset)
        report.results.append(
            Result(
                "2",
                "app's way: SELECT + upsert + COMMIT per record",
                app_rate,
                "rows/s",
                report.ratio(app_rate),
                "baseline",
                note=f"subset: first {done:,} of {len(rows.sync):,} records, synchronous=FULL",
            )
        )


def scenario_http(report: Report, dataset: PushDataset, users: list[BenchUser], work: Path, selected: set[str]) -> None:
    sizes = report.sizes
    runs = run_http(dataset, users, sizes, work, reupload="reupload" in selected, support="support" in selected)
    expected = total(dataset.expected)
    ingest = runs.ingest
    push_note = (
        f"{ingest.entries:,} entries, {ingest.requests} pushes of <= {sizes.push_size}, {sizes.concurrency} in flight"
    )
    report.results.append(
        Result(
            "3",
            "HTTP push ingest",
            ingest.rate,
            "entries/s",
            ingest.rate / report.push_ceiling if report.push_ceiling else None,
            f"commit per {sizes.push_size:,} (1)",
            PUSH_TARGET,
            f"{push_note}; {report.ratio(ingest.rate) or 0:.2f}x of the baseline",
        )
    )
    report.checks.append(no_errors("http ingest: every push answered 200", ingest.errors))
    report.checks.append(check_counts("http ingest", ingest.counts, expected, first_time=True))
    received = ingest.entries
    if runs.reupload is not None:
        again = runs.reupload
        report.results.append(
            Result(
                "4",
                "HTTP push, same upload again",
                again.rate,
                "entries/s",
                again.rate / ingest.rate if ingest.rate else None,
                "HTTP ingest (3)",
                Target("ratio", ">=", 2),
                "every record a duplicate",
            )
        )
        report.checks.append(no_errors("http re-upload: every push answered 200", again.errors))
        report.checks.append(check_counts("http re-upload", again.counts, expected, first_time=False))
        received += again.entries
    if runs.latencies is not None:
        add_latency_rows(report, runs.latencies, runs.idle_latencies, runs.device_port_latencies)
    report.checks += check_database("http db", runs.db, dataset.expected, received, "push")


def add_latency_rows(
    report: Report, latencies: Latencies, idle: Latencies | None, device_port: Latencies | None = None
) -> None:
    if not latencies.ms:
        report.failed("6", "support GET latency", "no request completed during the ingest")
        return
    note = f"{len(latencies.ms):,} requests during (3), every {report.sizes.poll_interval_s * 1000:.0f} ms"
    if device_port is not None:
        note = f"support listener (serve --support-port): {note}"
    if idle is not None and idle.ms:
        note += f"; idle server: p50 {percentile(idle.ms, 50):.1f}, p99 {percentile(idle.ms, 99):.1f} ms"
    report.results.append(
        Result("6", "support GET /v1/support/users/{id} p50", percentile(latencies.ms, 50), "ms", note=note)
    )
    report.results.append(
        Result(
            "6",
            "support GET /v1/support/users/{id} p99",
            percentile(latencies.ms, 99),
            "ms",
            target=Target("figure", "<=", 25, "ms"),
            note=note,
        )
    )
    report.checks.append(no_errors("support GET: every poll answered 200", latencies.errors))
    if device_port is not None and device_port.ms:
        report.results.append(
            Result(
                "6",
                "the same GET on the devices' port, p99",
                percentile(device_port.ms, 99),
                "ms",
                note=f"{len(device_port.ms):,} requests at once, from the server process beside its writer "
                f"(p50 {percentile(device_port.ms, 50):.1f} ms); for reference",
            )
        )
        report.checks.append(no_errors("support GET on the devices' port: every poll answered 200", device_port.errors))


def scenario_replay(report: Report, users: list[BenchUser], work: Path, keep: bool) -> None:
    cmd, how = replay_command()
    labels = [human_count(n) for n in report.sizes.replay_entries]
    small, large = labels[0], labels[-1]
    if cmd is None:
        for label in labels:
            report.results.append(Result("5", f"replay {label}", None, "entries/s", target=REPLAY_TARGET, note=how))
        return
    runs: list[ReplayRun] = []
    ceiling: Result | None = None  # the latest measured
    for entries in report.sizes.replay_entries:
        run = run_replay(cmd, entries, users, work, keep)
        runs.append(run)
        if run.child.returncode != 0:
            report.failed("5", f"replay {run.label}", f"exit {run.child.returncode}: {run.child.stderr.strip()[-300:]}")
            continue
        replayed = Result("5", f"replay {run.label}", run.rate, "entries/s", target=REPLAY_TARGET)
        report.results.append(replayed)
        report.results.append(
            Result(
                "5",
                f"replay {run.label} peak RSS",
                run.peak_mb,
                "MB",
                target=Target("figure", "<=", 200, "MB"),
                note=f"VmHWM of the replay process, sampled every {RSS_SAMPLE_INTERVAL_S:g} s; its normalising "
                f"workers peaked at {run.child.workers_peak_rss_bytes / 1e6:.0f} MB each at most",
            )
        )
        if len(runs) == 2 and runs[0].child.returncode == 0:
            growth = runs[1].peak_mb / runs[0].peak_mb
            report.results.append(
                Result(
                    "5",
                    f"replay peak RSS {large} / {small}",
                    growth,
                    "x",
                    growth,
                    f"replay {small}",
                    Target("ratio", "<=", 1.15),
                    f"{runs[0].peak_mb:.0f} MB -> {runs[1].peak_mb:.0f} MB: flat means <= 1.15x",
                )
            )
        report.checks += replay_checks(run)
        against_ceiling(report, replayed, run, ceiling, how)  # a smaller size's, until this size's is measured
        write_json(report, complete=False)  # what is done so far, should the run be stopped in the ceiling
        if entries in report.sizes.replay_ceiling_at:
            ceiling = replay_ceiling(report, run, users, work)
            report.results.append(ceiling)
            against_ceiling(report, replayed, run, ceiling, how)
        if not keep and isinstance(run.db, Path):
            remove_db(run.db)  # the 4M database is many GB; its checks are done


def against_ceiling(report: Report, replayed: Result, run: ReplayRun, ceiling: Result | None, how: str) -> None:
    """The replay's ratio: the rate it wrote its resulting rows at, over the replay ceiling's."""
    replayed.note = (
        f"{run.file.entries:,} entries in {run.child.seconds:.1f} s (process wall time), "
        f"{report.ratio(run.rate) or 0:.2f}x of the baseline{'; ' + how if how else ''}"
    )
    if ceiling is None or not ceiling.figure:
        return
    replayed.ratio = rate(run.rows, run.child.seconds) / ceiling.figure
    replayed.ratio_to = ceiling.name.split(":")[0] + " ceiling"
    replayed.note += f"; ratio: its {run.rows:,} resulting rows per second over the ceiling's"


def replay_ceiling(report: Report, run: ReplayRun, users: list[BenchUser], work: Path) -> Result:
    """The replay's own result rows written with nothing else, batch by batch: the most any resumable
    replay (which commits each batch with its checkpoint) can reach on this machine at this size."""
    assert isinstance(run.db, Path)
    console.print(f"  the {run.label} replay's rows into the app tables alone ...")
    db = work / f"replay-{run.label}-ceiling.db"
    create_app_db(db, users)
    try:
        ceiling, rows = run_copy_batched(run.db, db, DEFAULT_BATCH_SIZE)
    finally:
        remove_db(db)
    return Result(
        "5",
        f"replay {run.label}: app tables alone, a commit per {DEFAULT_BATCH_SIZE:,} rows",
        ceiling,
        "rows/s",
        report.ratio(ceiling),
        "baseline",
        note=f"the replay's {rows:,} resulting sync_data rows and their logbook_entries rows, written again "
        f"into an empty app database in arrival order; the replay wrote them at "
        f"{rate(rows, run.child.seconds) / ceiling if ceiling else 0:.2f}x of this rate",
    )


def replay_checks(run: ReplayRun, name: str | None = None) -> list[Check]:
    name = name or f"replay {run.label}"
    expected = total(run.file.expected)
    checks = check_database(f"{name} db", run.db, run.file.expected, run.file.entries, "replay")
    if run.summary is None:
        return [*checks, Check(f"{name}: --json summary", False, "no JSON summary on stdout")]
    counts = run.summary.get("counts", {})
    checks.append(
        Check(
            f"{name}: summary records == entries in the file",
            run.summary.get("records") == run.file.entries,
            f"{run.summary.get('records', 0):,} (expected {run.file.entries:,})",
        )
    )
    checks.append(check_counts(name, counts, expected, first_time=True))
    return checks


# --- 7: PostgreSQL ---------------------------------------------------------------------------------------


def scenario_postgres(
    report: Report, rows: PreparedRows, dataset: PushDataset, users: list[BenchUser], work: Path, url: str | None
) -> None:
    """The PostgreSQL rows: its own ceilings (COPY of the final rows into the app tables alone), HTTP ingest
    through one and through two replicas (serve processes on one database), the re-upload, a replay. The
    service connects as the operator's service role (SELECT/INSERT/UPDATE on the app tables, nothing more)."""
    try:
        server = pg.PgBench(url)
    except pg.PostgresUnavailable as error:
        why = str(error).splitlines()[0]
        console.print(f"  PostgreSQL scenarios skipped: no server can be had ({why})")
        report.results.append(Result("7", "PostgreSQL", None, "", note=f"skipped: no PostgreSQL server ({why})"))
        return
    try:
        console.print(f"  {server.describe()}")
        ceilings = postgres_ceilings(report, server, rows, users)
        postgres_http(report, server, dataset, users, work, ceilings)
        postgres_replay(report, server, users, work, ceilings)
    finally:
        server.close()


PG_CEILING_ROUNDS = 2


@dataclass(frozen=True)
class PgCeilings:
    one_transaction: float  # rows/s
    push: float  # rows/s, a commit per push's worth


def postgres_ceilings(
    report: Report, server: pg.PgBench, rows: PreparedRows, users: list[BenchUser]
) -> PgCeilings:
    sizes = report.sizes
    console.print("  PostgreSQL ceilings: COPY of the final rows ...")
    measured: dict[int, list[float]] = {len(rows.sync): [], sizes.push_size: []}
    for round_ in range(PG_CEILING_ROUNDS):  # alternated, the best of each: a ceiling, and less noisy
        for batch, rates in measured.items():
            db = server.new_database(f"bench_ceiling{round_}_{batch}", users)
            rates.append(pg.copy_batched(db, rows.sync, rows.logbook, _LOGBOOK_COLUMNS, batch))
            server.drop(db)
    one, batched = max(measured[len(rows.sync)]), max(measured[sizes.push_size])
    rounds = f"best of {PG_CEILING_ROUNDS}: " + ", ".join(f"{r:,.0f}" for r in measured[sizes.push_size])
    report.results.append(
        Result(
            "7",
            "PostgreSQL: COPY, one transaction",
            one,
            "rows/s",
            report.ratio(one),
            "baseline (SQLite)",
            note=f"{server.describe()}; the same {len(rows.sync):,} records' final rows into sync_data + "
            "logbook_entries by COPY as the service role; best of "
            f"{PG_CEILING_ROUNDS}: {', '.join(f'{r:,.0f}' for r in measured[len(rows.sync)])}",
        )
    )
    report.results.append(
        Result(
            "7",
            f"PostgreSQL: app tables alone, a commit per {sizes.push_size:,} rows",
            batched,
            "rows/s",
            batched / one if one else None,
            "PostgreSQL one transaction",
            note="COPY, one durable COMMIT per push's worth: the ceiling for PostgreSQL's HTTP ingest; "
            f"{batched / report.push_ceiling if report.push_ceiling else 0:.2f}x of SQLite's (1); {rounds}",
        )
    )
    return PgCeilings(one, batched)


def postgres_http(
    report: Report, server: pg.PgBench, dataset: PushDataset, users: list[BenchUser], work: Path, ceilings: PgCeilings
) -> None:
    sizes = report.sizes
    expected = total(dataset.expected)
    secret = secrets.token_urlsafe(32)
    pushes = build_pushes(dataset, users, sizes.push_size, secret)
    for replicas in (1, 2):
        label = f"{replicas} replica{'s' if replicas > 1 else ''}"
        console.print(f"  PostgreSQL: HTTP ingest of {dataset.size:,} entries, {label} ...")
        db = server.new_database(f"bench_http{replicas}", [*users, ADMIN])
        with contextlib.ExitStack() as stack:
            urls = [
                stack.enter_context(ServerProcess(None, secret, work / f"pg-server-{replicas}-{n}.log", db)).base_url
                for n in range(replicas)
            ]
            ingest = asyncio.run(send_pushes(urls, pushes, sizes.concurrency))
            again = asyncio.run(send_pushes(urls, pushes, sizes.concurrency)) if replicas == 1 else None
        spread = "; a user's pushes alternate between the replicas" if replicas > 1 else ""
        report.results.append(
            Result(
                "7",
                f"PostgreSQL: HTTP push ingest, {label}",
                ingest.rate,
                "entries/s",
                ingest.rate / ceilings.push if ceilings.push else None,
                f"PostgreSQL commit per {sizes.push_size:,}",
                PUSH_TARGET,
                f"{ingest.entries:,} entries, {ingest.requests} pushes of <= {sizes.push_size}, "
                f"{sizes.concurrency} in flight in all{spread}",
            )
        )
        report.checks.append(no_errors(f"postgres http ingest ({label}): every push answered 200", ingest.errors))
        report.checks.append(check_counts(f"postgres http ingest ({label})", ingest.counts, expected, first_time=True))
        received = ingest.entries
        if again is not None:
            report.results.append(
                Result(
                    "7",
                    f"PostgreSQL: HTTP push, same upload again, {label}",
                    again.rate,
                    "entries/s",
                    again.rate / ingest.rate if ingest.rate else None,
                    f"PostgreSQL ingest, {label}",
                    Target("ratio", ">=", 2),
                    "every record a duplicate",
                )
            )
            report.checks.append(no_errors(f"postgres http re-upload ({label}): every push answered 200", again.errors))
            report.checks.append(
                check_counts(f"postgres http re-upload ({label})", again.counts, expected, first_time=False)
            )
            received += again.entries
        report.checks += check_database(f"postgres http db ({label})", db, dataset.expected, received, "push")
        server.drop(db)


def postgres_replay(
    report: Report, server: pg.PgBench, users: list[BenchUser], work: Path, ceilings: PgCeilings
) -> None:
    cmd, how = replay_command()
    entries = report.sizes.postgres_replay_entries
    label = human_count(entries)
    if cmd is None:
        report.results.append(Result("7", f"PostgreSQL: replay {label}", None, "entries/s", note=how))
        return
    console.print(f"  PostgreSQL: generating the {label}-entry NDJSON file ...")
    file = write_ndjson(work / f"pg-replay-{label}.ndjson", users, entries, f"{SEED}:{label}")
    db = server.new_database("bench_replay", users)
    console.print(f"  PostgreSQL: replaying {label} entries ...")
    child = run_measured([*cmd, "--database-url", db, "--json", str(file.path)], work, f"pg-replay-{label}")
    file.path.unlink()
    try:
        summary = json.loads(child.stdout) if child.returncode == 0 else None
    except json.JSONDecodeError:
        summary = None
    run = ReplayRun(label, file, db, child, summary)
    if child.returncode != 0:
        report.failed("7", f"PostgreSQL: replay {label}", f"exit {child.returncode}: {child.stderr.strip()[-300:]}")
        server.drop(db)
        return
    console.print(f"  PostgreSQL: the {label} replay's rows into the app tables alone ...")
    target = server.new_database("bench_replay_ceiling", users)
    ceiling, rows = pg.copy_database(db, target, _LOGBOOK_COLUMNS, DEFAULT_BATCH_SIZE)
    server.drop(target)
    written = rate(run.rows, child.seconds)
    report.results.append(
        Result(
            "7",
            f"PostgreSQL: replay {label}",
            run.rate,
            "entries/s",
            written / ceiling if ceiling else None,
            f"PostgreSQL replay {label} ceiling",
            REPLAY_TARGET,
            f"{entries:,} entries in {child.seconds:.1f} s (process wall time); peak RSS {run.peak_mb:.0f} MB "
            f"(workers {child.workers_peak_rss_bytes / 1e6:.0f} MB); ratio: its {run.rows:,} resulting rows per "
            "second over the ceiling's",
        )
    )
    report.results.append(
        Result(
            "7",
            f"PostgreSQL: replay {label}: app tables alone, a commit per {DEFAULT_BATCH_SIZE:,} rows",
            ceiling,
            "rows/s",
            ceiling / ceilings.one_transaction if ceilings.one_transaction else None,
            "PostgreSQL one transaction",
            note=f"the replay's {rows:,} resulting rows written again by COPY into an empty app database in "
            "arrival order (seq): the ceiling of a resumable replay into PostgreSQL",
        )
    )
    report.checks += replay_checks(run, f"postgres replay {label}")
    server.drop(db)


# --- reporting ------------------------------------------------------------------------------------------


def fmt_figure(result: Result) -> str:
    if result.figure is None:
        return "-"
    if result.unit in ("ms", "MB", "x"):
        return f"{result.figure:,.2f}" if result.figure < 10 else f"{result.figure:,.1f}"
    return f"{result.figure:,.0f}"


def print_table(report: Report) -> None:
    cpus = os.cpu_count()
    baseline = f"{report.baseline:,.0f} rows/s" if report.baseline else "-"
    table = Table(
        title=f"Recovery service benchmark ({'quick' if report.quick else 'full'})",
        caption=f"{cpus} CPUs ({platform.machine()}, Python {platform.python_version()}); "
        f"baseline {baseline}, measured in this run",
    )
    for heading, justify in (
        ("#", "right"),
        ("scenario", "left"),
        ("figure", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("target", "left"),
        ("met", "center"),
        ("note", "left"),
    ):
        table.add_column(heading, justify=justify)  # type: ignore[arg-type]
    for r in sorted(report.results, key=lambda r: r.scenario):  # stable: in-scenario order is kept
        ratio = f"{r.ratio:.2f}x vs {r.ratio_to}" if r.ratio is not None and r.ratio_to else "-"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[r.met]
        table.add_row(r.scenario, r.name, fmt_figure(r), r.unit, ratio, str(r.target or "-"), met, r.note)
    console.print(table)


def print_checks(report: Report) -> None:
    for check in report.checks:
        mark = "[green]ok[/]    " if check.ok else "[red]WRONG[/] "
        console.print(f"{mark} {check.name}" + (f": {check.detail}" if check.detail else ""), highlight=False)


def write_json(report: Report, *, complete: bool = True) -> None:
    """The figures so far (`complete` false while scenarios still run, or when the run was stopped)."""
    cpus = os.cpu_count()
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if report.quick else "full",
        "complete": complete,
        "cpu_count": cpus,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "baseline_rows_per_s": report.baseline,
        "sizes": asdict(report.sizes),
        "results": [
            {
                **{k: v for k, v in asdict(r).items() if k != "target"},
                "target": str(r.target) if r.target else None,
                "met": r.met,
                "cpu_count": cpus,
                "baseline_rows_per_s": report.baseline,
            }
            for r in report.results
        ],
        "checks": [asdict(c) for c in report.checks],
        "correct": all(c.ok for c in report.checks),
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")


# --- main -----------------------------------------------------------------------------------------------


def _replay_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: one or two entry counts, like 1000000 or 100000,400000") from None
    if not 1 <= len(sizes) <= 2 or min(sizes) < 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: one or two entry counts of at least 1000")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about a tenth of the size (under two minutes)")
    parser.add_argument("--only", metavar="SCENARIO,...", help=f"run only these: {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the data and databases in bench/data/")
    parser.add_argument("--replay-entries", metavar="N[,N]", type=_replay_sizes,
                        help="the replay sizes instead of the run's own (each with its ceiling), as when the 4M "
                        "replay, 20-80 minutes on 2 CPUs, does not fit the time there is")
    parser.add_argument("--postgres-url", metavar="URL",
                        help="a PostgreSQL superuser's URL for the postgres scenario (default: start a durable "
                        "server of its own, as tests/pgserver.py does; skipped when none can be had)")
    args = parser.parse_args(argv)
    selected = set(SCENARIOS) if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = selected - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    if selected & {"reupload", "support"}:
        selected.add("http")  # both run against the server of (3)
    args.selected = selected
    return args


@contextlib.contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    if keep:
        path = BENCH_DIR / "data" / datetime.now().strftime("run-%Y%m%d-%H%M%S")
        path.mkdir(parents=True)
        yield path
        console.print(f"data kept in {path}")
        return
    path = Path(tempfile.mkdtemp(prefix="resync-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_all(report: Report, selected: set[str], work: Path, keep: bool, postgres_url: str | None) -> None:
    sizes = report.sizes
    users = make_users(sizes.users)
    console.print(f"generating {sizes.entries:,} entries for {sizes.users} users (seed {SEED!r}) ...")
    dataset = push_dataset(users, sizes.entries, SEED)
    rows = prepare_rows(dataset, {u.id: u.device_id for u in users})
    console.print("1/2: SQLite baseline and the app's way ...")
    scenario_sqlite(report, rows, users, work, run_app="app" in selected)  # the baseline always runs: ratios need it
    write_json(report, complete=False)
    if "http" in selected:
        console.print(f"3/4/6: HTTP ingest of {dataset.size:,} entries ...")
        guarded(report, "3", "HTTP push ingest", lambda: scenario_http(report, dataset, users, work, selected))
    # PostgreSQL before the long replays: a run stopped in the 4M replay still has every other figure.
    if "postgres" in selected:
        console.print("7: PostgreSQL ...")
        prepared = rows
        guarded(report, "7", "PostgreSQL",
                lambda: scenario_postgres(report, prepared, dataset, users, work, postgres_url))
    del rows
    if "replay" in selected:
        console.print("5: replay ...")
        guarded(report, "5", "replay", lambda: scenario_replay(report, users, work, keep))


def guarded(report: Report, scenario: str, name: str, run: Any) -> None:
    """A scenario that fails is reported as failed; the others still run. Ctrl-C is not caught. The figures
    so far are written after each scenario."""
    started = time.perf_counter()
    try:
        run()
    except Exception as error:  # reported in the table and as a failed check
        report.failed(scenario, name, f"{type(error).__name__}: {error}")
    console.print(f"  ({name}: {time.perf_counter() - started:.0f} s)")
    write_json(report, complete=False)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same way out as Ctrl-C: the server is stopped, the temp dir removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sizes = QUICK if args.quick else FULL
    if args.replay_entries:
        sizes = dataclasses.replace(sizes, replay_entries=args.replay_entries, replay_ceiling_at=args.replay_entries)
    report = Report(sizes, args.quick)
    started = time.perf_counter()
    try:
        with work_dir(args.keep) as work:
            run_all(report, args.selected, work, args.keep, args.postgres_url)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: the server and any replay were stopped; the figures of what finished:")
        print_table(report)
        write_json(report, complete=False)
        print_checks(report)
        return 130
    print_table(report)
    write_json(report)
    print_checks(report)
    met = [r.met for r in report.results if r.met is not None]
    console.print(
        f"targets met: {sum(met)}/{len(met)}; took {time.perf_counter() - started:.0f} s; "
        f"results in {RESULTS_PATH.relative_to(ROOT)}"
    )
    if not all(c.ok for c in report.checks):
        console.print("[bold red]FAILED[/]: the databases do not hold what was sent (see WRONG above)")
        return 1
    if report.checks:
        console.print("[green]correct[/]: every database holds exactly the expected rows and counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
