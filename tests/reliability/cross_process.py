"""The one check that a change committed through one service process reaches a user's socket held by
another (two SQLite processes through the polling feed; two PostgreSQL replicas through LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import ADA, BEN, auth, token_for
from tests.e2e.app_client import AppClient
from tests.reliability.liveserver import ServerProcess


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": "2025-06-01T10:00:00.000Z", "duration": 30, "type": "practice",
            "instrument": "piano", "notes": entry_id, "updatedAt": "2025-06-01T10:00:00.000Z", **fields}


async def assert_changes_cross_processes(first: ServerProcess, second: ServerProcess, *, within_s: float) -> None:
    """A push through `first` reaches Ada's socket on `second` within `within_s`, and so does a socket
    change sent through `first`, exactly once; Ben's socket on `second` hears nothing of Ada's."""
    on_second = AppClient(second.base_url, token_for(ADA), ADA[0], "dev_a1B2c3D4e5F6g7H8")
    on_first = AppClient(first.base_url, token_for(ADA), ADA[0], "dev_b1B2c3D4e5F6g7H8")
    ben = AppClient(second.base_url, token_for(BEN), BEN[0], "dev_c1B2c3D4e5F6g7H8")
    try:
        async with on_second.socket() as socket, on_first.socket() as sender, ben.socket() as bens:
            for s in (socket, sender, bens):
                assert (await s.receive())["type"] == "WELCOME"
            async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
                pushed = await http.post("/api/sync/push", json={"changes": {"entries": [entry("e1"), entry("e2")]}},
                                         headers=auth(ADA, **{"X-Device-ID": "dev_d1B2c3D4e5F6g7H8"}))
            answered = time.monotonic()
            assert pushed.status_code == 200, pushed.text
            bulk = await asyncio.wait_for(socket.receive(), within_s)
            assert time.monotonic() - answered < within_s
            assert bulk["type"] == "BULK_SYNC" and [e["id"] for e in bulk["entries"]] == ["e1", "e2"]
            assert bulk["lastSeq"] == int(pushed.json()["syncToken"])

            # A socket change through the first process: the second's socket hears it once.
            await sender.send({"type": "ENTRY_DELETED", "entryId": "e1"})
            assert (await sender.until("SYNC_RESPONSE"))[-1]["message"] == "Mutation applied"
            deleted = await asyncio.wait_for(socket.receive(), within_s)
            assert (deleted["type"], deleted["entryId"]) == ("ENTRY_DELETED", "e1")
            assert await socket.quiet(0.8) == [] and await bens.quiet(0.1) == []
    finally:
        for client in (on_second, on_first, ben):
            await client.close()
