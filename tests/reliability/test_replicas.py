"""Several replicas, for real: two service processes (`python -m service serve` on two ports) against one
PostgreSQL server, and two `replay --shard` processes against it.

- the concurrency workload (13 devices of 3 users, overlapping versions, deletions, retries with and
  without idempotency keys) spread over both replicas: no record lost, none twice, distinct seq, the
  newest version wins, counts add up;
- a change committed through one replica reaches the user's socket held by the other (the change feed:
  NOTIFY/LISTEN);
- two shards of one replay at once write what one run writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADA, ADMIN, BEN, add_users, auth, query, token_for
from tests.e2e.app_client import AppClient
from tests.pgfixtures import PgDatabase
from tests.reliability.cross_process import assert_changes_cross_processes, entry
from tests.reliability.liveserver import ServerProcess, free_port
from tests.reliability.test_concurrency import (
    CARA,
    DEVICES,
    IN_FLIGHT,
    Send,
    _request,
    build_keys,
    build_sends,
    check_counts,
    check_pull,
    check_state,
    upload_of,
    version_document,
)
from tests.replay.helpers import USERS, app_database, batch_file, replay
from tests.replay.test_shards import assert_same_database

pytestmark = pytest.mark.slow  # live servers on PostgreSQL: CI runs it, `-m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[2]
SEED = 20_251_202


@pytest.fixture
def replicas(pg_database: PgDatabase, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two service processes on one PostgreSQL database holding Ada, Ben, Cara and an admin."""
    add_users(pg_database.url, ADA, BEN, CARA, ADMIN)
    servers = [ServerProcess(tmp_path / f"unused-{n}.db", tmp_path / f"replica-{n}.log",
                             env={"RESYNC_DATABASE_URL": pg_database.url}) for n in (1, 2)]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


async def send_spread(base_urls: list[str], sends: list[Send]) -> list[dict[str, Any]]:
    """Every send at once (bounded), send i through replica i mod n: retries and repeats of one key land on
    both replicas. The answers in the order of `sends`."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in base_urls]
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int, send: Send) -> dict[str, Any]:
        headers = auth(send.user, **{"Content-Type": "application/json", "X-Device-ID": send.device})
        if send.idempotency_key:
            headers["X-Idempotency-Key"] = send.idempotency_key
        async with gate:
            response = await clients[index % len(clients)].post(send.path, content=send.body, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    try:
        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(sends))))
    finally:
        for client in clients:
            await client.aclose()


async def test_two_replicas_store_every_record_once_in_its_winning_version(
    replicas: tuple[ServerProcess, ServerProcess], pg_database: PgDatabase
) -> None:
    urls = [server.base_url for server in replicas]
    db = pg_database.url
    rng = random.Random(SEED)
    keys = build_keys(rng)
    sends = build_sends(keys, rng)
    keyed = [s for s in sends if s.idempotency_key]
    assert len({s.device for s in sends}) == 13 and len(sends) > 100 and keyed
    async with asyncio.timeout(180):
        answers = await send_spread(urls, sends)
    check_state(db, keys)
    for url in urls:
        await check_pull(url, keys)
    check_counts(db, sends, answers)
    assert len({s.idempotency_key for s in keyed}) < len(keyed)  # some keys were sent more than once

    # Stale devices re-send every old version of every deleted key, through both: nothing revives.
    stale = [
        _request(key.user, DEVICES[key.user][-1],
                 [("record", key.entity_type, version_document(key, i, rng)) for i in range(len(key.versions))], rng)
        for key in keys if key.deleted
    ]
    async with asyncio.timeout(120):
        stale_answers = await send_spread(urls, stale)
    for send, answer in zip(stale, stale_answers, strict=True):
        assert upload_of(send, answer)[2]["suppressed"] == send.received, answer
    check_state(db, keys)
    check_counts(db, sends + stale, answers + stale_answers)
    rows = query(db, "SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS d FROM sync_data")[0]
    print(f"two replicas: {len(sends) + len(stale)} requests, {rows['n']} rows, {rows['d']} distinct seq")


async def test_a_change_through_one_replica_reaches_a_socket_held_by_the_other(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    await assert_changes_cross_processes(*replicas, within_s=5.0)  # NOTIFY is prompt; 5 s is the load margin


def start_replay(url: str, *args: str | Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESYNC_")}
    command = [sys.executable, "-m", "service.replay", "--json", "--batch-size", "500", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "RESYNC_DATABASE_URL": url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_shard_processes_against_one_postgresql_write_what_one_run_writes(
    pg_database: PgDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, units = batch_file(tmp_path / "devices.ndjson")
    whole = app_database(tmp_path / "whole.db", *USERS)  # the reference: one unsharded run on SQLite
    one_run = replay(capsys, whole, "--batch-size", "500", source)
    assert one_run.exit_code == 0

    add_users(pg_database.url, *USERS)
    processes = [start_replay(pg_database.url, "--shard", f"{i}/2", source) for i in (1, 2)]
    summaries = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        summaries.append(json.loads(out))
    assert [s["shard"] for s in summaries] == [{"index": 1, "count": 2}, {"index": 2, "count": 2}]
    assert sum(s["records"] for s in summaries) == one_run.summary["records"] == units
    assert "***" in summaries[0]["database"] or "@" not in summaries[0]["database"]  # no password shown
    assert_same_database(pg_database.url, whole)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here (docker compose brings it)")
async def test_the_compose_balancer_config_passes_pushes_and_sockets_to_the_replicas(
    replicas: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    """deploy/nginx/replicas.conf, with the compose hosts pointed at the two local replicas: pushes and the
    live-sync socket through it, and every change reaches every socket whichever replica holds it."""
    port = free_port()
    config = (ROOT / "deploy/nginx/replicas.conf").read_text()
    for name, server in zip(("resync-pg-1", "resync-pg-2"), replicas, strict=True):
        config = config.replace(f"{name}:8000", f"127.0.0.1:{server.port}")
    config = config.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/nginx.log; daemon off;\n"
        f"events {{}}\nhttp {{ access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};\n"
        f"{config}\n}}\n"
    )
    # Popen returns at once (the balancer runs beside the test until it is stopped).
    balancer = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    devices = [AppClient(base, token_for(ADA), ADA[0], f"dev_{n}1B2c3D4e5F6g7H8") for n in "abc"]
    try:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await devices[0].http.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        async with devices[0].socket() as one, devices[1].socket() as two:
            for s in (one, two):
                assert (await s.receive())["type"] == "WELCOME"
            for n in range(4):  # least_conn spreads the pushes over both replicas
                pushed = await devices[2].http.post(
                    "/api/sync/push", json={"changes": {"entries": [entry(f"lb{n}")]}},
                    headers=auth(ADA, **{"X-Device-ID": "dev_c1B2c3D4e5F6g7H8"}))
                assert pushed.status_code == 200, pushed.text
                for s in (one, two):
                    assert [e["id"] for e in (await s.until("BULK_SYNC"))[-1]["entries"]] == [f"lb{n}"]
    finally:
        for device in devices:
            await device.close()
        balancer.terminate()
        balancer.wait(timeout=10)
