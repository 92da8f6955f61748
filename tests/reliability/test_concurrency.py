"""Concurrency: many devices of one user, and other users, upload at once to the real server.

A seeded workload: every entity key has up to four versions (distinct `updatedAt`), some a deletion
(a `deletedAt` marker with an explicit time, or the native API's `deleted` list, which counts as deleted
at the time of its upload, after every version here). Each version and marker goes to one to three of
the user's devices, in batches through the app's push or the native upload, with or without an
idempotency key; some requests are retried, some twice at the same moment; everything is sent in a
shuffled order, up to 24 requests in flight. The expected end state follows from the rules alone
(latest `updatedAt` wins; a deletion wins over every version not newer than it), whatever the order.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, BEN, add_users, auth, query
from tests.reliability.liveserver import ServerProcess

pytestmark = pytest.mark.slow  # a live server or crashes: CI runs it, `-m "not slow"` skips it

SEED = 20_251_130
CARA = ("user_CaraCaraCaraCaraCara00", "cara@example.com", "user")
DEVICES = {
    ADA: [f"dev_ada{n:013d}" for n in range(8)],
    BEN: [f"dev_ben{n:013d}" for n in range(3)],
    CARA: [f"dev_cara{n:012d}" for n in range(2)],
}
KEYS_PER_USER = {ADA: (80, 12), BEN: (24, 6), CARA: (16, 4)}  # (logbook entries, goals)
IN_FLIGHT = 24
START_MS = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Key:
    user: tuple[str, str, str]
    entity_type: str
    entity_id: str
    versions: list[int]  # updatedAt of each version (distinct); the label of version i is f"{id} v{i}"
    deletion_ms: int | None = None  # a deletedAt marker at this time
    native_delete: bool = False  # an id in the native API's deleted list

    @property
    def newest(self) -> int:
        return max(range(len(self.versions)), key=lambda i: self.versions[i])

    @property
    def deleted(self) -> bool:
        if self.native_delete:
            return True
        return self.deletion_ms is not None and self.deletion_ms >= self.versions[self.newest]

    def label(self, index: int) -> str:
        return f"{self.entity_id} v{index}"


def version_document(key: Key, index: int, rng: random.Random) -> dict[str, Any]:
    """Version `index` of the key, in one of the forms devices send (the stored form is the same)."""
    updated = key.versions[index]
    if key.entity_type == "goal":
        return {"id": key.entity_id, "title": key.label(index), "status": rng.choice(["active", "ACTIVE"]),
                "progress": index, "createdAt": iso(START_MS), "updatedAt": iso(updated)}
    return {
        "id": key.entity_id, "timestamp": "2025-02-01T08:00:00.000Z", "duration": 10 + index,
        "type": rng.choice(["practice", "PRACTICE"]), "instrument": "piano",
        "pieces": [{"title": "Étude", "composer": "Chopin"}], "notes": key.label(index), "tags": [],
        "createdAt": iso(START_MS), "updatedAt": rng.choice([iso(updated), updated]),
    }  # fmt: skip


def deletion_marker(key: Key, rng: random.Random) -> dict[str, Any]:
    assert key.deletion_ms is not None
    if key.entity_type == "logbook_entry" and rng.random() < 0.5:
        # The client's own form: an identical dummy entry with duration 0 and the deletion time.
        return {"id": key.entity_id, "timestamp": iso(key.deletion_ms), "duration": 0, "type": "practice",
                "instrument": "piano", "deletedAt": iso(key.deletion_ms)}
    return {"id": key.entity_id, "deletedAt": iso(key.deletion_ms)}


def build_keys(rng: random.Random) -> list[Key]:
    keys: list[Key] = []
    for user, (entries, goals) in KEYS_PER_USER.items():
        short = user[0][5:9].lower()
        for entity_type, count in (("logbook_entry", entries), ("goal", goals)):
            for n in range(count):
                times = rng.sample(range(START_MS, START_MS + 240 * 24 * 60 * MINUTE, MINUTE), rng.randint(1, 4))
                key = Key(user, entity_type, f"{short}-{entity_type[:4]}-{n}", times)
                roll = rng.random()
                if roll < 0.35:
                    key.deletion_ms = (max(times) if rng.random() < 0.15 else
                                       rng.randrange(START_MS, START_MS + 240 * 24 * 60 * MINUTE, MINUTE))
                elif roll < 0.5:
                    key.native_delete = True
                keys.append(key)
    return keys


@dataclass
class Send:
    """One HTTP request; a retry is another Send with the same body and key."""

    user: tuple[str, str, str]
    device: str
    path: str
    body: bytes
    idempotency_key: str | None
    received: int  # records in the body (live records + deleted ids)
    sent_keys: set[tuple[str, str]] = field(default_factory=set)


def build_sends(keys: list[Key], rng: random.Random) -> list[Send]:
    items: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)  # device -> (kind, type, payload)
    for key in keys:
        devices = DEVICES[key.user]
        for index in range(len(key.versions)):
            for device in rng.sample(devices, rng.randint(1, min(3, len(devices)))):
                items[device].append(("record", key.entity_type, version_document(key, index, rng)))
        if key.deletion_ms is not None:
            for device in rng.sample(devices, rng.randint(1, min(3, len(devices)))):
                items[device].append(("record", key.entity_type, deletion_marker(key, rng)))
        if key.native_delete:
            for device in rng.sample(devices, rng.randint(1, 2)):
                items[device].append(("deleted", key.entity_type, key.entity_id))
    user_of = {device: user for user, devices in DEVICES.items() for device in devices}
    sends: list[Send] = []
    for device in sorted(items):
        queue = items[device]
        rng.shuffle(queue)
        while queue:
            size = rng.randint(1, 12)
            batch, queue = queue[:size], queue[size:]
            send = _request(user_of[device], device, batch, rng)
            sends.append(send)
            roll = rng.random()
            if roll < 0.3:
                sends.append(send)  # retried later, at some shuffled point
            elif roll < 0.4:
                sends.append(send)
                sends.append(send)  # retried twice
    rng.shuffle(sends)
    return sends


def _request(user: tuple[str, str, str], device: str, batch: list[tuple[str, str, Any]], rng: random.Random) -> Send:
    native = any(kind == "deleted" for kind, _, _ in batch) or rng.random() < 0.5
    sent_keys = {(entity_type, payload if kind == "deleted" else payload["id"]) for kind, entity_type, payload in batch}
    if native:
        deleted: dict[str, list[str]] = defaultdict(list)
        records = []
        for kind, entity_type, payload in batch:
            if kind == "deleted":
                deleted[entity_type].append(payload)
            else:
                records.append({"entity_type": entity_type, "data": payload})
        document: dict[str, Any] = {"device_id": device, "records": records, "deleted": dict(deleted)}
        path = "/v1/recovery/uploads"
    else:
        document = {"changes": {
            "entries": [p for _, t, p in batch if t == "logbook_entry"],
            "goals": [p for _, t, p in batch if t == "goal"],
        }}  # fmt: skip
        path = "/api/sync/push"
    body = json.dumps(document).encode()
    digest = hashlib.sha256(body).hexdigest()
    key = f"{device}_POST_{digest[:16]}_{digest[16:32]}" if rng.random() < 0.6 else None
    return Send(user, device, path, body, key, len(batch), sent_keys)


async def send_all(base_url: str, sends: list[Send]) -> list[dict[str, Any]]:
    """Everything at once (bounded), one client per device; the answers in the order of `sends`."""
    clients = {device: httpx.AsyncClient(base_url=base_url, timeout=60) for devices in DEVICES.values()
               for device in devices}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(send: Send) -> dict[str, Any]:
        headers = auth(send.user, **{"Content-Type": "application/json", "X-Device-ID": send.device})
        if send.idempotency_key:
            headers["X-Idempotency-Key"] = send.idempotency_key
        async with gate:
            response = await clients[send.device].post(send.path, content=send.body, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    try:
        return list(await asyncio.gather(*(one(s) for s in sends)))
    finally:
        for client in clients.values():
            await client.aclose()


def upload_of(send: Send, answer: dict[str, Any]) -> tuple[str, int, dict[str, int]]:
    """(upload id, received, counts) of an answer of either API."""
    if send.path == "/api/sync/push":
        recovery = answer["recovery"]
        return recovery["uploadId"], sum(recovery["counts"].values()), recovery["counts"]
    return answer["upload_id"], answer["received"], answer["counts"]


def check_state(db_path: str, keys: list[Key]) -> None:
    """Each key stored once, in its winning version; deleted ones deleted (and out of logbook_entries)."""
    rows = query(db_path, "SELECT user_id, entity_type, entity_id, data, deleted_at, seq, version FROM sync_data")
    per_key = Counter((r["user_id"], r["entity_type"], r["entity_id"]) for r in rows)
    assert max(per_key.values()) == 1
    seqs = [r["seq"] for r in rows]
    assert None not in seqs and len(set(seqs)) == len(seqs)
    sequence = query(db_path, "SELECT current_value FROM sync_sequence")[0]["current_value"]
    assert max(seqs) <= sequence
    stored = {(r["user_id"], r["entity_type"], r["entity_id"]): r for r in rows}
    assert set(stored) == {(k.user[0], k.entity_type, k.entity_id) for k in keys}
    live_logbook = {r["id"] for r in query(db_path, "SELECT id FROM logbook_entries WHERE deleted_at IS NULL")}
    wrong = []
    for key in keys:
        row = stored[(key.user[0], key.entity_type, key.entity_id)]
        data = json.loads(row["data"])
        label = data["notes"] if key.entity_type == "logbook_entry" else data["title"]
        # ISO-Z with milliseconds, as the app writes it (CONTRACT section 6 item 6).
        expected_deleted_at = iso(key.deletion_ms) if key.deleted and key.deletion_ms is not None else None
        problems = []
        if label != key.label(key.newest):
            problems.append(f"holds {label!r}, not {key.label(key.newest)!r}")
        if (row["deleted_at"] is not None) != key.deleted:
            problems.append(f"deleted_at {row['deleted_at']} but deleted={key.deleted}")
        elif expected_deleted_at is not None and not key.native_delete and row["deleted_at"] != expected_deleted_at:
            problems.append(f"deleted_at {row['deleted_at']}, expected {expected_deleted_at}")
        if key.entity_type == "logbook_entry" and (key.entity_id in live_logbook) == key.deleted:
            problems.append("logbook_entries disagrees")
        if problems:
            wrong.append((key, problems))
    assert not wrong, "\n".join(f"{k.entity_id} {k.versions} del={k.deletion_ms} native={k.native_delete}: {p}"
                                for k, p in wrong)


async def check_pull(base_url: str, keys: list[Key]) -> None:
    """What each user's devices pull is exactly the live keys: no deleted entry came back."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for user in DEVICES:
            pulled = (await client.post("/api/sync/pull", headers=auth(user))).json()
            for group, entity_type in (("entries", "logbook_entry"), ("goals", "goal")):
                expected = {k.entity_id for k in keys if k.user == user and k.entity_type == entity_type
                            and not k.deleted}
                assert {d["id"] for d in pulled[group]} == expected, (user[0], group)


def check_counts(db_path: str, sends: list[Send], answers: list[dict[str, Any]]) -> None:
    """Every answer accounts for each record once; replays repeat the first answer; the ledger has one row
    per distinct upload with the answer's counts, and per user it adds up to recovery_progress."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    uploads: dict[str, tuple[str, int, dict[str, int]]] = {}
    for send, answer in zip(sends, answers, strict=True):
        upload_id, received, counts = upload_of(send, answer)
        assert received == send.received == sum(counts.values())
        if send.idempotency_key:
            by_key[(send.user[0], send.idempotency_key)].append(answer)
        assert uploads.setdefault(upload_id, (send.user[0], received, counts)) == (send.user[0], received, counts)
    for answers_for_key in by_key.values():
        assert all(a == answers_for_key[0] for a in answers_for_key)

    ledger = {r["upload_id"]: r
              for r in query(db_path, "SELECT upload_id, user_id, received, counts FROM recovery_ledger")}
    assert set(ledger) == set(uploads)
    for upload_id, (user_id, received, counts) in uploads.items():
        row = ledger[upload_id]
        assert (row["user_id"], row["received"], json.loads(row["counts"])) == (user_id, received, counts)
        assert sum(json.loads(row["counts"]).values()) == row["received"]
    received_per_user = {r["user_id"]: r["n"] for r in query(
        db_path, "SELECT user_id, SUM(received) AS n FROM recovery_ledger GROUP BY user_id")}
    progress_per_user = {r["user_id"]: r["n"] for r in query(
        db_path, "SELECT user_id, SUM(n) AS n FROM recovery_progress GROUP BY user_id")}
    assert received_per_user == progress_per_user
    assert set(received_per_user) == {u[0] for u in DEVICES}

    sent_by_device: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for send in sends:
        sent_by_device[send.device] |= send.sent_keys
    recorded: dict[str, set[tuple[str, str]]] = defaultdict(set)
    # A device's record of a key is its raw row, or a device row where no raw row of its says it.
    for r in query(db_path, "SELECT device_id, entity_type, entity_id FROM recovery_device_sent"):
        recorded[r["device_id"]].add((r["entity_type"], r["entity_id"]))
    assert recorded == sent_by_device
    # The running counts support reads agree with the records they count, whatever the interleaving.
    counted = {(r["device_id"], r["entity_type"]): r["received"]
               for r in query(db_path, "SELECT device_id, entity_type, received FROM recovery_device_counts")}
    assert counted == Counter((device, entity_type) for device, keys in recorded.items() for entity_type, _ in keys)


async def test_concurrent_devices_store_every_record_once_in_its_winning_version(server: ServerProcess) -> None:
    """13 devices of 3 users (8 of them Ada's) send overlapping versions, duplicates, edits, deletions
    and retries concurrently, in a seeded random order: every key ends stored once, in the version the
    rules pick, deleted keys stay deleted, and every upload's and user's counts add up. Then every old
    version of every deleted key is sent again: none comes back."""
    add_users(server.db_path, CARA)
    rng = random.Random(SEED)
    keys = build_keys(rng)
    sends = build_sends(keys, rng)
    assert len({s.device for s in sends}) == 13 and len(sends) > 100
    async with asyncio.timeout(120):
        answers = await send_all(server.base_url, sends)
    check_state(server.db_path, keys)
    await check_pull(server.base_url, keys)
    check_counts(server.db_path, sends, answers)

    # Stale devices re-send every old version of every deleted key: each is suppressed, nothing revives.
    stale = [
        _request(key.user, DEVICES[key.user][-1],
                 [("record", key.entity_type, version_document(key, i, rng)) for i in range(len(key.versions))], rng)
        for key in keys if key.deleted
    ]
    async with asyncio.timeout(60):
        stale_answers = await send_all(server.base_url, stale)
    for send, answer in zip(stale, stale_answers, strict=True):
        counts = upload_of(send, answer)[2]
        assert counts["suppressed"] == send.received, answer
    check_state(server.db_path, keys)
    await check_pull(server.base_url, keys)
    check_counts(server.db_path, sends + stale, answers + stale_answers)


async def test_two_deletions_of_one_entry_end_the_same_in_every_order(
    client: AsyncTestClient[Litestar], db_path: str
) -> None:
    """Versions at t10 and t30, deletions at t20 and t40: the deletion at t40 is newer than every version,
    so in every one of the 24 orders the entry ends deleted, holding the t30 version, in the same row."""
    base = datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000
    day = 24 * 60 * MINUTE

    def at(days: int) -> str:
        return iso(int(base + days * day))

    outcomes: dict[tuple[str, ...], tuple[str, str | None]] = {}
    for n, order in enumerate(itertools.permutations(["v10", "d20", "v30", "d40"])):
        entity_id = f"twice-deleted-{n}"
        records = {
            "v10": {**_entry(entity_id, "v10"), "updatedAt": at(10)},
            "v30": {**_entry(entity_id, "v30"), "updatedAt": at(30)},
            "d20": {"id": entity_id, "deletedAt": at(20)},
            "d40": {"id": entity_id, "deletedAt": at(40)},
        }
        for name in order:
            response = await client.post("/api/sync/push", json={"changes": {"entries": [records[name]]}},
                                         headers=auth(ADA))
            assert response.status_code == 200, response.text
        row = query(db_path, "SELECT data, deleted_at FROM sync_data WHERE entity_id = ?", (entity_id,))[0]
        outcomes[order] = (json.loads(row["data"])["notes"].split()[-1], row["deleted_at"])
    revived = {order: got for order, got in outcomes.items() if got[0] != "v30" or got[1] is None}
    assert not revived, f"{len(revived)} of 24 orders do not end deleted holding v30: {revived}"
    assert len(set(outcomes.values())) == 1, f"the orders end in different rows: {set(outcomes.values())}"


def _entry(entity_id: str, notes: str) -> dict[str, Any]:
    """A distinct document per id and version (no two ids share content: that would be a content duplicate)."""
    return {"id": entity_id, "timestamp": "2025-05-01T08:00:00.000Z", "duration": 20, "type": "practice",
            "instrument": "piano", "notes": f"{entity_id} {notes}", "createdAt": "2025-05-01T08:30:00.000Z"}
