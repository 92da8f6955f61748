"""Crash during upload: `kill -9` the real server in the middle of a stream of pushes, restart it on the
same database, let the clients retry what got no answer with the same idempotency key: the end state is
exactly that of the same stream sent to a fresh database without interruption, and nothing counts twice.

The stream is seeded: per user, a sequence of pushes (new entries, edits with newer `updatedAt`, stale
copies, deletion markers, goals, content duplicates, invalid records, records naming another user, exact
re-pushes that reuse their key) from two or three devices, each push with the app client's deterministic
`X-Idempotency-Key`. Users send concurrently; each user's pushes go one after the other, as a device's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import signal
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADA, BEN, add_users, auth, query
from tests.reliability.histories import MINUTE, START_MS, DeviceHistory, iso
from tests.reliability.liveserver import ServerProcess, live_server

pytestmark = pytest.mark.slow  # a live server or crashes: CI runs it, `-m "not slow"` skips it

SEED = 4_242
CARA = ("user_CaraCaraCaraCaraCara00", "cara@example.com", "user")
DAN = ("user_DanDanDanDanDanDanDan0", "dan@example.com", "user")
USERS = [ADA, BEN, CARA, DAN]
PUSHES_PER_USER = 25
KILL_AFTER_ACKED = (30, 65)  # two crashes, after this many answered pushes (of about 100)
RETRY_PAUSE_S = 0.02
@dataclass(frozen=True)
class Push:
    user: tuple[str, str, str]
    device: str
    body: bytes
    key: str


class StreamBuilder(DeviceHistory):
    """One user's history as their devices push it."""

    def __init__(self, user: tuple[str, str, str], rng: random.Random) -> None:
        super().__init__(user[0][5:10].lower(), rng)
        self.user = user

    def record(self) -> tuple[str, dict[str, Any]]:
        """One record of some kind, as ("entries" | "goals", document)."""
        roll = self.rng.random()
        ids = sorted(self.entries)
        if roll < 0.3 or not ids:
            return "entries", self.new_entry()
        entity_id = self.rng.choice(ids)
        versions = self.entries[entity_id]
        if roll < 0.5:  # an edit: newer updatedAt
            edited = {**versions[-1], "notes": f"{entity_id} edit {len(versions)}", "updatedAt": self.tick()}
            versions.append(edited)
            return "entries", edited
        if roll < 0.6:  # a stale copy from a device that missed edits (or an exact duplicate)
            return "entries", self.rng.choice(versions)
        if roll < 0.67:  # a deletion marker, at an explicit time
            return "entries", {"id": entity_id, "deletedAt": self.tick()}
        if roll < 0.77:  # a goal, new or edited
            edit = self.goals and self.rng.random() < 0.5
            goal_id = self.rng.choice(sorted(self.goals)) if edit else self.new_id("g")
            goal = {"id": goal_id, "title": f"goal {goal_id} at {self.clock}", "status": "PAUSED",
                    "progress": self.rng.randint(0, 100), "createdAt": iso(START_MS), "updatedAt": self.tick()}
            self.goals[goal_id] = goal
            return "goals", goal
        if roll < 0.82:  # the same session logged under another id
            twin_id = self.new_id("twin")
            twin = {**versions[-1], "id": twin_id, "createdAt": self.tick()}
            self.entries[twin_id] = [twin]
            return "entries", twin
        if roll < 0.86:  # invalid: quarantined
            return "entries", {**versions[-1], "id": self.new_id("bad"), "duration": -1}
        if roll < 0.88:  # names another user: quarantined
            return "entries", {**versions[-1], "id": self.new_id("other"), "user_id": "user_SomebodyElse00000000"}
        legacy = {**versions[-1], "type": "PRACTICE", "mood": "SATISFIED", "updatedAt": self.clock + MINUTE}
        self.clock += MINUTE
        versions.append(legacy)
        return "entries", legacy


def build_streams(seed: int) -> dict[str, list[Push]]:
    rng = random.Random(seed)
    streams: dict[str, list[Push]] = {}
    for n, user in enumerate(USERS):
        builder = StreamBuilder(user, rng)
        devices = [f"dev_{n}{d}{'x' * 14}" for d in range(rng.randint(2, 3))]
        pushes: list[Push] = []
        while len(pushes) < PUSHES_PER_USER:
            if pushes and rng.random() < 0.08:
                pushes.append(rng.choice(pushes))  # an unchanged re-push: same body, same key
                continue
            changes: dict[str, list[dict[str, Any]]] = {"entries": [], "goals": []}
            for _ in range(rng.randint(30, 80)):
                group, document = builder.record()
                changes[group].append(document)
            device = rng.choice(devices)
            body = json.dumps({"changes": changes}).encode()
            digest = hashlib.sha256(body).hexdigest()
            pushes.append(Push(user, device, body, f"{device}_POST_{digest[:16]}_{digest[16:32]}"))
        streams[user[0]] = pushes
    return streams


class Run:
    """Clients pushing every user's stream to `server`, retrying until answered; optional crashes."""

    def __init__(self, server: ServerProcess, streams: dict[str, list[Push]]) -> None:
        self.server = server
        self.streams = streams
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.acked = 0
        self.cut_off = 0  # requests in flight when the server died
        self.refused = 0  # attempts while it was down
        self.kills = 0
        self._answered = asyncio.Event()

    async def user_stream(self, client: httpx.AsyncClient, pushes: list[Push]) -> None:
        for push in pushes:
            headers = auth(push.user, **{"Content-Type": "application/json", "X-Device-ID": push.device,
                                         "X-Idempotency-Key": push.key})
            while True:
                try:
                    response = await client.post(f"{self.server.base_url}/api/sync/push", content=push.body,
                                                 headers=headers)
                except httpx.ConnectError:
                    self.refused += 1
                except httpx.TransportError:
                    self.cut_off += 1
                else:
                    assert response.status_code == 200, response.text
                    self.answers[push.user[0]].append(response.json())
                    self.acked += 1
                    self._answered.set()
                    break
                await asyncio.sleep(RETRY_PAUSE_S)  # the device retries the same push, same key

    async def crash(self, after_acked: tuple[int, ...], rng: random.Random) -> None:
        for threshold in after_acked:
            while self.acked < threshold:
                self._answered.clear()
                await self._answered.wait()
            await asyncio.sleep(rng.uniform(0, 0.01))  # somewhere inside the next pushes
            self.server.kill()
            self.kills += 1
            await asyncio.sleep(0.1)
            await self.server.start_async()

    async def run(self, crash_after: tuple[int, ...] = (), seed: int = SEED) -> None:
        async with httpx.AsyncClient(timeout=60) as client, asyncio.timeout(120):
            tasks = [self.user_stream(client, pushes) for pushes in self.streams.values()]
            await asyncio.gather(*tasks, self.crash(crash_after, random.Random(seed)))


def final_state(db_path: str) -> dict[str, Any]:
    """Everything an upload writes, in a form that does not depend on ids or clocks of the run."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted((tuple(r) for r in query(db_path, sql)), key=repr)

    ledger: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in query(db_path, "SELECT user_id, device_id, source, payload_sha256, received, counts FROM recovery_ledger"
                            " ORDER BY rowid"):
        ledger[r["user_id"]].append(tuple(r)[1:])
    return {
        "sync_data": rows("SELECT user_id, entity_type, entity_id, checksum, version, deleted_at, device_id, data"
                          " FROM sync_data"),
        "logbook_entries": rows("SELECT * FROM logbook_entries"),
        "ledger per user, in order": dict(ledger),
        "recovery_progress": rows("SELECT user_id, entity_type, outcome, n FROM recovery_progress"),
        "recovery_entity_state": rows("SELECT * FROM recovery_entity_state"),
        "recovery_archive": rows("SELECT user_id, entity_type, entity_id, checksum, updated_ms, reason"
                                 " FROM recovery_archive"),
        "recovery_quarantine": rows("SELECT owner, entity_type, entity_id, reason, field, raw"
                                    " FROM recovery_quarantine"),
        "recovery_raw_records": rows("SELECT user_id, entity_type, entity_id, raw_sha256 FROM recovery_raw_records"),
        "recovery_device_records": rows("SELECT * FROM recovery_device_records"),
        "recovery_device_counts": rows("SELECT * FROM recovery_device_counts"),
        "recovery_idempotency_keys": rows("SELECT user_id, route, key, request_sha256 FROM recovery_idempotency_keys"),
        "sync_metadata": rows("SELECT user_id, last_device_id FROM sync_metadata"),
    }


def without_run_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between runs (the upload id and the global sequence number)."""
    return {**answer, "syncToken": None, "recovery": {**answer["recovery"], "uploadId": None}}


async def run_once(
    tmp: Path, streams: dict[str, list[Push]], crash_after: tuple[int, ...]
) -> tuple[Run, dict[str, Any]]:
    with live_server(tmp / "app.db") as server:
        add_users(server.db_path, *USERS)
        run = Run(server, streams)
        await run.run(crash_after)
        if crash_after:
            server.kill()  # the end state must already be on disk once acknowledged
        else:
            server.stop()
        return run, final_state(server.db_path)


async def test_kill_9_mid_stream_and_retries_end_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """Two `kill -9`s while pushes are in flight, restarts on the same file, retries with the same keys:
    the rows (checksum, version, deletion per user/type/id), ledger, progress, archive, quarantine, raw
    records and idempotency keys equal those of an uninterrupted run, and every push got the same answer.
    The last kill comes after the last answer and nothing is lost: acknowledged means on disk."""
    streams = build_streams(SEED)
    (tmp_path / "reference").mkdir()
    (tmp_path / "crashed").mkdir()
    reference, expected = await run_once(tmp_path / "reference", streams, crash_after=())
    crashed, actual = await run_once(tmp_path / "crashed", streams, crash_after=KILL_AFTER_ACKED)

    assert crashed.kills == len(KILL_AFTER_ACKED)
    assert crashed.cut_off >= 1, "no push was in flight at a kill: the crash tested nothing"
    assert reference.cut_off == reference.refused == 0
    for table in expected:
        assert actual[table] == expected[table], f"{table} differs after the crashes"
    for user_id, pushes in streams.items():
        assert len(crashed.answers[user_id]) == len(pushes)
        assert [without_run_ids(a) for a in crashed.answers[user_id]] == [
            without_run_ids(a) for a in reference.answers[user_id]
        ]

    # Nothing doubled: one ledger row per distinct push, and received adds up per user.
    ledger = expected["ledger per user, in order"]
    for user_id, pushes in streams.items():
        assert len(actual["ledger per user, in order"][user_id]) == len(set(pushes)) == len(ledger[user_id])
        received = sum(row[3] for row in actual["ledger per user, in order"][user_id])
        progress = sum(r[3] for r in actual["recovery_progress"] if r[0] == user_id)
        assert received == progress == sum(
            len(json.loads(p.body)["changes"]["entries"]) + len(json.loads(p.body)["changes"]["goals"])
            for p in set(pushes)
        )
    seqs = [r["seq"] for r in query(str(tmp_path / "crashed" / "app.db"), "SELECT seq FROM sync_data")]
    assert None not in seqs and len(seqs) == len(set(seqs))


# ---- the two sides of a crash, made deterministic ---------------------------------------------------


def _one_push(device: str = "dev_detDETdetDETdet0") -> Push:
    changes = {"entries": [
        {"id": f"det-{n}", "timestamp": iso(START_MS + n * MINUTE), "duration": 20 + n, "type": "practice",
         "instrument": "piano", "notes": f"deterministic {n}", "createdAt": iso(START_MS),
         "updatedAt": iso(START_MS + n * MINUTE)}
        for n in range(40)
    ]}  # fmt: skip
    body = json.dumps({"changes": changes}).encode()
    digest = hashlib.sha256(body).hexdigest()
    return Push(ADA, device, body, f"{device}_POST_{digest[:16]}_{digest[16:32]}")


async def _send_unanswered(server: ServerProcess, push: Push) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Write the push on a raw connection and never read the answer (the device will not get it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    headers = auth(push.user, **{"Content-Type": "application/json", "X-Device-ID": push.device,
                                 "X-Idempotency-Key": push.key, "Content-Length": str(len(push.body)),
                                 "Host": f"127.0.0.1:{server.port}", "Connection": "close"})
    head = "POST /api/sync/push HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + push.body)
    await writer.drain()
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def _ledger(db_path: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in query(db_path, "SELECT upload_id, received, counts FROM recovery_ledger")]


async def _retry(server: ServerProcess, push: Push) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/api/sync/push", content=push.body, headers=auth(
            push.user, **{"Content-Type": "application/json", "X-Device-ID": push.device,
                          "X-Idempotency-Key": push.key}))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_push_committed_just_before_the_crash_is_answered_from_its_stored_answer(tmp_path: Path) -> None:
    """The push commits, the server is killed before the device reads the answer; after the restart the
    retry (same key, same body) gets the stored answer of that commit, and nothing is applied twice."""
    push = _one_push()
    with live_server(tmp_path / "app.db") as server:
        add_users(server.db_path, ADA)
        _, writer = await _send_unanswered(server, push)
        async with asyncio.timeout(30):
            # Watching the file from outside is the point: no event could tell us the commit landed.
            while not (committed := _ledger(server.db_path)):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        server.kill()
        await _close(writer)
        assert _ledger(server.db_path) == committed  # on disk as it was, after kill -9
        await server.start_async()

        answer = await _retry(server, push)
        assert answer["recovery"]["uploadId"] == committed[0][0]  # the stored answer, not a second upload
        assert answer["recovery"]["counts"]["inserted"] == 40
        assert _ledger(server.db_path) == committed
        assert query(server.db_path, "SELECT SUM(n) AS n FROM recovery_progress")[0]["n"] == 40
        assert query(server.db_path, "SELECT COUNT(*) AS n, MAX(version) AS v FROM sync_data")[0][:] == (40, 1)


async def test_a_push_the_crash_cut_off_before_it_ran_is_applied_once_by_the_retry(tmp_path: Path) -> None:
    """The server is frozen (SIGSTOP) with the push in its socket and then killed, so the push never ran:
    after the restart nothing of it is there, and the retry with the same key applies it, once."""
    push = _one_push()
    with live_server(tmp_path / "app.db") as server:
        add_users(server.db_path, ADA)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            _, writer = await _send_unanswered(server, push)  # the kernel accepts it; nobody reads it
            await asyncio.sleep(0.2)
        finally:
            server.kill()  # SIGKILL ends a stopped process too
        await _close(writer)
        await server.start_async()
        assert _ledger(server.db_path) == []
        assert query(server.db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0

        answer = await _retry(server, push)
        assert answer["recovery"]["counts"]["inserted"] == 40
        ledger = _ledger(server.db_path)
        assert [row[0] for row in ledger] == [answer["recovery"]["uploadId"]]
        again = await _retry(server, push)
        assert again == answer
        assert _ledger(server.db_path) == ledger
