"""How fast the support page answers on a large database while ingest runs.

`python -m tests.web.page_speed --users 10000 --seconds 20` seeds a database with that many users and a
realistic spread of recovery states (devices, ledger rows over the last day, quarantined records,
conflicts), starts the real service on it, keeps pushes of new entries arriving from several threads, and
times every page meanwhile (signed in as an admin, as a browser would be). It prints one line per page
(p50 / p95 / max in ms, server-to-client, over HTTP on loopback) and the ingest rate during the run.
`--explain` prints the query plans of the user search at that size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from service.store.sqlite.engine import SqliteStorage
from service.store.sqlite.units import STATE_FIGURES_SQL
from service.usecases.cursors import encode_cursor
from tests.conftest import ADMIN, token_for
from tests.reliability.liveserver import live_server

STATES_MIX = (("not_started", 0.30), ("in_progress", 0.35), ("complete", 0.25), ("needs_review", 0.10))


def user_id(i: int) -> str:
    return f"user_{i:021d}"


def seed(db_path: str, users: int, *, rng: random.Random | None = None) -> dict[str, str]:
    """The app's users and the service's tables for `users` users (direct SQL: a fixture, not the service),
    on a database the service has created. Returns a few ids worth opening: one per state."""
    rng = rng or random.Random(14)
    now = datetime.now(UTC)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    examples: dict[str, str] = {}
    user_rows, recovery_users, devices, device_counts, progress_rows, ledger, quarantine, archive = (
        [], [], [], [], [], [], [], [])
    for i in range(users):
        uid = user_id(i)
        user_rows.append((uid, f"Person.{i}@Example{i % 97}.com", f"person {i}", "user"))
        roll, state = rng.random(), "not_started"
        acc = 0.0
        for name, share in STATES_MIX:
            acc += share
            if roll < acc:
                state = name
                break
        examples.setdefault(state, uid)
        if state == "not_started":
            continue
        first = now - timedelta(hours=rng.uniform(1, 23))
        last = first + timedelta(minutes=rng.uniform(0, 50))
        text = lambda t: t.strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
        recovery_users.append((uid, text(first), text(last)))
        entries = rng.randint(20, 400)
        for d in range(rng.choice((1, 1, 2, 3))):
            dev = f"dev_{i:012d}{d:04d}"
            complete = state in ("complete", "needs_review") or (state == "in_progress" and d > 0)
            devices.append((uid, dev, text(first), text(last), text(last) if complete else None,
                            json.dumps({"logbook_entry": entries}) if complete else None, int(complete)))
            device_counts.append((uid, dev, "logbook_entry", entries))
            for u in range(rng.randint(1, 4)):
                at = first + timedelta(minutes=u * 7)
                n = entries // 2
                ledger.append((f"upl_{i:012d}{d:02d}{u:02d}", uid, dev, "push", None, "0" * 64, n,
                               json.dumps({"inserted": n}), text(at)))
        progress_rows.append((uid, "logbook_entry", "inserted", entries))
        progress_rows.append((uid, "logbook_entry", "duplicate", entries // 3))
        if state == "needs_review":
            for q in range(rng.randint(1, 5)):
                quarantine.append((uid, None, "logbook_entry", f"E{i:012d}{q:04d}",
                                   json.dumps({"id": f"E{i:012d}{q:04d}", "timestamp": "not a time"}),
                                   "invalid_time", "timestamp", "cannot be read", f"upl_{i:012d}0000", None,
                                   text(last)))
            if rng.random() < 0.5:
                archive.append((uid, "logbook_entry", f"E{i:012d}0000", json.dumps({"id": "x", "notes": "old"}),
                                "0" * 64, None, "superseded by newer version", f"upl_{i:012d}0000", text(last)))
    with conn:
        conn.executemany("INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)", user_rows)
        conn.execute("INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)",
                     (ADMIN[0], ADMIN[1], "support", ADMIN[2]))
        conn.executemany("INSERT INTO recovery_users VALUES (?, ?, ?)", recovery_users)
        conn.executemany("INSERT INTO recovery_devices (user_id, device_id, first_upload_at, last_upload_at,"
                         " declared_at, expected, complete) VALUES (?, ?, ?, ?, ?, ?, ?)", devices)
        conn.executemany("INSERT INTO recovery_device_counts VALUES (?, ?, ?, ?)", device_counts)
        conn.executemany("INSERT INTO recovery_progress VALUES (?, ?, ?, ?)", progress_rows)
        conn.executemany("INSERT INTO recovery_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ledger)
        conn.executemany("INSERT INTO recovery_quarantine (owner, email, entity_type, entity_id, raw, reason, field,"
                         " detail, upload_id, device_id, quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         quarantine)
        conn.executemany("INSERT INTO recovery_archive (user_id, entity_type, entity_id, data, checksum, updated_ms,"
                         " reason, upload_id, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", archive)
    conn.execute("ANALYZE")
    conn.close()
    return examples


async def _create(db_path: str) -> None:
    db = await SqliteStorage.open(db_path)
    await db.close()


@dataclass
class Ingest:
    """Pushes of new entries from a few threads until stopped; counts what was acknowledged."""

    base_url: str
    threads: int = 3
    batch: int = 200
    entries: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self, user_ids: list[str]) -> None:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t, user_ids), daemon=True)
            worker.start()
            self.workers.append(worker)

    def _run(self, t: int, user_ids: list[str]) -> None:
        n = 0
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not self.stop.is_set():
                uid = user_ids[(t * 7919 + n) % len(user_ids)]
                token = _token(uid)
                records = [{"entity_type": "logbook_entry", "data": _entry(f"T{t}N{n:06d}E{j:04d}")}
                           for j in range(self.batch)]
                response = client.post("/v1/recovery/uploads", headers={"Authorization": f"Bearer {token}"},
                                       json={"device_id": f"dev_speed{t:03d}0000000", "records": records})
                if response.status_code == 200:
                    self.entries += self.batch
                n += 1

    def finish(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join()


def _token(uid: str) -> str:
    return token_for((uid, "", "user"))


def _entry(entry_id: str) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": 1748799900000, "duration": 20, "type": "practice", "instrument": "piano",
            "pieces": [], "techniques": [], "goalIds": [], "notes": entry_id, "mood": None, "tags": [],
            "createdAt": "2025-06-01T18:30:12.345Z", "updatedAt": "2025-06-01T18:30:12.345Z"}


def pages(examples: dict[str, str], users: int) -> dict[str, str]:
    return {
        "overview": "/support/",
        "overview (live poll)": "/support/overview/live",
        "users, first page": "/support/users",
        "users, email part": "/support/users?q=son.4242@",
        "users, no match": "/support/users?q=nobody-has-this",
        "users, by id": f"/support/users?q={user_id(users // 2)}",
        "users, state needs_review": "/support/users?state=needs_review",
        "users, state complete, page 2": "/support/users?state=complete&cursor="
                                         + encode_cursor(user_id(users // 3)),
        "user, needs review": f"/support/users/{examples['needs_review']}",
        "user, complete": f"/support/users/{examples['complete']}",
        "user, in progress": f"/support/users/{examples['in_progress']}",
    }


def measure(base_url: str, paths: dict[str, str], rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client(base_url=base_url, timeout=30, cookies={"support-session": token_for(ADMIN)}) as client:
        for path in paths.values():  # one warm-up each
            assert client.get(path).status_code == 200, path
        for _ in range(rounds):
            for name, path in paths.items():
                start = time.perf_counter()
                response = client.get(path)
                timings[name].append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (path, response.status_code)
    return timings


def report(timings: dict[str, list[float]]) -> list[str]:
    lines = [f"{'page':34} {'p50':>7} {'p95':>7} {'max':>7}  (ms, n={len(next(iter(timings.values())))})"]
    for name, values in timings.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        lines.append(f"{name:34} {statistics.median(ordered):7.1f} {p95:7.1f} {ordered[-1]:7.1f}")
    return lines


def explain(db_path: str) -> list[str]:
    conn = sqlite3.connect(db_path)
    out = []
    for label, (email, state) in {"email part": ("son.4242@", None), "state": (None, "needs_review")}.items():
        # The page of users the list reads (the state of each is then decided by `state_of`).
        sql = (f"SELECT u.id, {STATE_FIGURES_SQL} FROM users u"  # noqa: S608
               " WHERE (? IS NULL OR u.id > ?) AND (? IS NULL OR instr(LOWER(u.email), LOWER(?)) > 0)"
               " ORDER BY u.id LIMIT ?")
        params = (None, None, email, email, 51 if state is None else 200)
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        start = time.perf_counter()
        conn.execute(sql, params).fetchall()
        out.append(f"{label}: {(time.perf_counter() - start) * 1000:.1f} ms; " + " | ".join(r[3] for r in plan))
    conn.close()
    return out


def run(users: int, seconds: float, *, ingest: bool = True, folder: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        db_path = str(Path(scratch) / "app.db")
        started = time.perf_counter()
        asyncio.run(_create(db_path))  # the service's own schema
        examples = seed(db_path, users)
        seeded_s = time.perf_counter() - started
        with live_server(db_path) as server:
            idle = measure(server.base_url, pages(examples, users), rounds=5)
            load = Ingest(server.base_url)
            if ingest:
                load.start([user_id(i) for i in range(0, users, max(users // 50, 1))])
                time.sleep(1.0)
            began, before = time.perf_counter(), load.entries
            busy: dict[str, list[float]] = {}
            while time.perf_counter() - began < seconds or not busy:
                for name, values in measure(server.base_url, pages(examples, users), rounds=1).items():
                    busy.setdefault(name, []).extend(values)
            rate = (load.entries - before) / (time.perf_counter() - began)
            load.finish()
        return {"users": users, "seeded_s": seeded_s, "idle": idle, "busy": busy, "ingest_entries_per_s": rate,
                "plans": explain(db_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-ingest", action="store_true")
    args = parser.parse_args()
    result = run(args.users, args.seconds, ingest=not args.no_ingest)
    print(f"{result['users']} users (seeded in {result['seeded_s']:.1f} s)")
    print("idle:")
    print("\n".join(report(result["idle"])))
    print(f"while ingest runs ({result['ingest_entries_per_s']:.0f} entries/s acknowledged):")
    print("\n".join(report(result["busy"])))
    print("\n".join(result["plans"]))


if __name__ == "__main__":
    main()
