"""The native recovery API: per-record answers, dry runs, device completion, one's own progress."""

from __future__ import annotations

import json
import random
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, BEN, auth, load_fixture, query

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"


def export_records() -> list[dict[str, Any]]:
    export = load_fixture("exports/mirubato-data-export-2025-11-30.json")
    return [{"entity_type": "logbook_entry", "data": e} for e in export["logbook"]] + [
        {"entity_type": "goal", "data": g} for g in export["goals"]
    ] + [{"entity_type": "repertoire_item", "data": r} for r in export["repertoire"]]


async def upload(client: Client, body: dict[str, Any], user: tuple[str, str, str] = ADA) -> Any:
    response = await client.post("/v1/recovery/uploads", json=body, headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()


async def test_upload_answers_every_record(client: Client, db_path: str) -> None:
    records = export_records()
    records.append({"entity_type": "sheet_music", "data": {"id": "x"}})
    records.append({"entity_type": "logbook_entry", "data": {"id": "e-bad", "duration": 5}})
    body = await upload(client, {"device_id": DEVICE, "records": records, "deleted": {"logbook_entry": ["gone-1"]}})
    assert body["received"] == len(records) + 1
    assert sum(body["counts"].values()) == body["received"]
    assert body["counts"]["inserted"] == 14
    outcomes = {(r["entity_type"], r["entity_id"]): r for r in body["results"]}
    assert outcomes[("repertoire_item", "nocturne op. 9 no. 2-chopin")]["outcome"] == "inserted"
    assert outcomes[("sheet_music", "x")]["reason"] == "unknown_entity_type"
    assert outcomes[("logbook_entry", "e-bad")]["reason"] == "missing_field"
    assert outcomes[("logbook_entry", "gone-1")]["outcome"] == "deleted"
    ledger = query(db_path, "SELECT source, device_id, received, counts FROM recovery_ledger")
    assert [(r["source"], r["device_id"], r["received"]) for r in ledger] == [("recovery", DEVICE, 17)]
    assert json.loads(ledger[0]["counts"]) == body["counts"]


async def test_dry_run_answers_like_the_upload_and_writes_nothing(client: Client, db_path: str) -> None:
    records = export_records()
    dry = await upload(client, {"device_id": DEVICE, "records": records, "dry_run": True})
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0
    assert query(db_path, "SELECT COUNT(*) AS n FROM recovery_ledger")[0]["n"] == 0
    real = await upload(client, {"device_id": DEVICE, "records": records})
    assert dry["dry_run"] is True and real["dry_run"] is False
    assert (dry["counts"], dry["results"]) == (real["counts"], real["results"])


async def test_legacy_check_refusal_is_reported_not_failed(client: Client, db_path: str) -> None:
    entry = load_fixture("exports/mirubato-data-export-2025-09-01.json")["logbook"][0]
    body = await upload(client, {"records": [
        {"entity_type": "logbook_entry", "data": {**entry, "type": "masterclass", "instrument": "cello"}}
    ]})
    result = body["results"][0]
    assert result["outcome"] == "inserted"
    assert "logbook_entries" in result["note"]
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 1
    assert query(db_path, "SELECT COUNT(*) AS n FROM logbook_entries")[0]["n"] == 0


async def test_content_duplicate_is_kept_once(client: Client, db_path: str) -> None:
    entry = load_fixture("exports/mirubato-data-export-2025-09-01.json")["logbook"][0]
    twin = {**entry, "id": "another-id", "createdAt": "2025-06-01T19:00:00.000Z"}
    body = await upload(client, {"records": [{"entity_type": "logbook_entry", "data": entry},
                                             {"entity_type": "logbook_entry", "data": twin}]})
    assert [r["outcome"] for r in body["results"]] == ["inserted", "content_duplicate"]
    assert body["results"][1]["duplicate_of"] == entry["id"]
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 1


async def test_device_completion_matches_or_lists_differences(client: Client) -> None:
    records = export_records()
    await upload(client, {"device_id": DEVICE, "records": records})
    await upload(client, {"device_id": DEVICE, "records": records[:3]})  # re-sent records count once
    mismatch = await client.post(
        f"/v1/recovery/devices/{DEVICE}/complete", json={"expected": {"logbook_entry": 13, "goal": 1}},
        headers=auth(ADA),
    )
    assert mismatch.status_code == 409
    problem = mismatch.json()
    assert problem["differences"] == {
        "logbook_entry": {"expected": 13, "received": 12},
        "repertoire_item": {"expected": 0, "received": 1},
    }
    assert (await client.get("/v1/recovery/me", headers=auth(ADA))).json()["state"] == "in_progress"
    match = await client.post(
        f"/v1/recovery/devices/{DEVICE}/complete",
        json={"expected": {"logbook_entry": 12, "goal": 1, "repertoire_item": 1}}, headers=auth(ADA),
    )
    assert match.status_code == 200, match.text
    assert match.json()["complete"] is True and match.json()["state"] == "complete"
    me = (await client.get("/v1/recovery/me", headers=auth(ADA))).json()
    assert me["state"] == "complete"
    assert me["devices"][0]["declared_complete"] is True
    assert me["counts"]["inserted"] == 14


async def test_bad_declarations_are_refused(client: Client) -> None:
    for body, status in (({"expected": {"logbook_entry": -1}}, 422), ({"expected": {"nope": 1}}, 422),
                         ({"expected": "all"}, 422)):
        response = await client.post(f"/v1/recovery/devices/{DEVICE}/complete", json=body, headers=auth(ADA))
        assert response.status_code == status, response.text
        assert response.json()["errors"]


async def test_me_before_any_upload_is_not_started(client: Client) -> None:
    me = (await client.get("/v1/recovery/me", headers=auth(BEN))).json()
    assert me["state"] == "not_started" and me["exists"] is True


async def test_received_equals_the_sum_of_outcomes_after_random_workloads(client: Client, db_path: str) -> None:
    rng = random.Random(7)
    base = load_fixture("exports/mirubato-data-export-2025-11-30.json")["logbook"]
    for round_no in range(25):
        user = rng.choice([ADA, BEN])
        records: list[dict[str, Any]] = []
        for _ in range(rng.randint(0, 12)):
            entry = dict(rng.choice(base))
            kind = rng.random()
            if kind < 0.2:
                entry["notes"] = f"edit {round_no}"
                entry["updatedAt"] = f"2025-07-{rng.randint(1, 28):02d}T10:00:00.000Z"
            elif kind < 0.3:
                entry = {"id": entry["id"], "deletedAt": "2025-06-15T10:00:00.000Z"}
            elif kind < 0.4:
                entry["duration"] = -1
            elif kind < 0.45:
                entry["user_id"] = ADA[0] if user == BEN else BEN[0]
            records.append({"entity_type": rng.choice(["logbook_entry", "logbook_entry", "goal"]), "data": entry})
        deleted = {"logbook_entry": [rng.choice(base)["id"]]} if rng.random() < 0.2 else {}
        body = await upload(client, {"device_id": rng.choice([DEVICE, "dev_0000000000000002"]),
                                     "records": records, "deleted": deleted}, user=user)
        assert sum(body["counts"].values()) == body["received"] == len(records) + sum(map(len, deleted.values()))
    for row in query(db_path, "SELECT received, counts FROM recovery_ledger"):
        assert sum(json.loads(row["counts"]).values()) == row["received"]
    per_user_received = {r["user_id"]: r["n"] for r in query(
        db_path, "SELECT user_id, SUM(received) AS n FROM recovery_ledger GROUP BY user_id")}
    per_user_outcomes = {r["user_id"]: r["n"] for r in query(
        db_path, "SELECT user_id, SUM(n) AS n FROM recovery_progress GROUP BY user_id")}
    assert per_user_received == per_user_outcomes
