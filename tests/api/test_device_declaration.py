"""A device declaration that does not match (409) changes nothing but the record of the attempt: it never
switches a complete device back to in progress, and never stores counts that are not the device's."""

from __future__ import annotations

import json

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, auth, query

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
ENTRY = {"id": "e1", "timestamp": "2025-06-01T17:45:00.000Z", "duration": 20, "type": "practice",
         "instrument": "piano", "updatedAt": "2025-06-01T18:30:12.345Z"}


async def declare(client: Client, expected: dict[str, int]) -> int:
    response = await client.post(f"/v1/recovery/devices/{DEVICE}/complete", json={"expected": expected},
                                 headers=auth(ADA))
    return response.status_code


def device_row(db_path: str) -> tuple[object, ...]:
    row = query(db_path, "SELECT declared_at, expected, complete FROM recovery_devices WHERE device_id = ?",
                (DEVICE,))[0]
    return tuple(row)


async def test_a_mismatched_declaration_leaves_a_complete_device_complete(client: Client, db_path: str) -> None:
    pushed = await client.post("/v1/recovery/uploads", headers=auth(ADA), json={
        "device_id": DEVICE, "records": [{"entity_type": "logbook_entry", "data": ENTRY}]})
    assert pushed.status_code == 200, pushed.text
    before_any = device_row(db_path)
    assert await declare(client, {"logbook_entry": 5}) == 409
    assert device_row(db_path) == before_any  # nothing stored from a declaration that does not match

    assert await declare(client, {"logbook_entry": 1}) == 200
    complete = device_row(db_path)
    assert complete[2] == 1 and json.loads(str(complete[1])) == {"logbook_entry": 1}

    assert await declare(client, {"logbook_entry": 7, "goal": 2}) == 409
    assert device_row(db_path) == complete  # still complete, with the counts that matched
    me = (await client.get("/v1/recovery/me", headers=auth(ADA))).json()
    assert me["state"] == "complete" and me["devices"][0]["declared_complete"] is True

    attempts = query(db_path, "SELECT expected, matched FROM recovery_device_declarations ORDER BY id")
    assert [(json.loads(a["expected"]), a["matched"]) for a in attempts] == [
        ({"logbook_entry": 5}, 0), ({"logbook_entry": 1}, 1), ({"goal": 2, "logbook_entry": 7}, 0)]
