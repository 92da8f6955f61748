"""The app's own sync endpoints: an unchanged device pushes, pulls and reads its status."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, ADMIN, BEN, SECRET, auth, load_fixture, query, token_for

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"


def export_changes(name: str) -> dict[str, Any]:
    export = load_fixture(f"exports/{name}")
    return {"entries": export.get("logbook", []), "goals": export.get("goals", [])}


async def push(client: Client, changes: dict[str, Any], user: tuple[str, str, str] = ADA, **headers: str) -> Any:
    return await client.post("/api/sync/push", json={"changes": changes}, headers=auth(user, **headers))


async def test_sample_export_entries_and_goals_are_stored_and_pulled_back(client: Client, db_path: str) -> None:
    changes = export_changes("mirubato-data-export-2025-11-30.json")
    response = await push(client, changes, **{"X-Device-ID": DEVICE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["stats"]["entriesProcessed"] == 12
    assert body["stats"]["goalsProcessed"] == 1
    assert body["recovery"]["counts"]["inserted"] == 13
    assert body["conflicts"] == []

    pulled = (await client.post("/api/sync/pull", headers=auth(ADA))).json()
    assert sorted(e["id"] for e in pulled["entries"]) == sorted(e["id"] for e in changes["entries"])
    assert pulled["goals"][0]["status"] == "active"  # paused is stored as active
    rows = query(db_path, "SELECT entity_type, seq, version, device_id FROM sync_data WHERE user_id = ?", (ADA[0],))
    assert len(rows) == 13
    assert len({r["seq"] for r in rows}) == 13
    assert all(r["version"] == 1 and r["device_id"] == DEVICE for r in rows)
    logbook = query(db_path, "SELECT COUNT(*) AS n FROM logbook_entries WHERE user_id = ?", (ADA[0],))
    assert logbook[0]["n"] == 12


async def test_pushing_the_same_records_again_writes_nothing(client: Client, db_path: str) -> None:
    changes = export_changes("mirubato-data-export-2025-09-01.json")
    await push(client, changes)
    before = query(db_path, "SELECT id, seq, version FROM sync_data ORDER BY id")
    again = (await push(client, changes)).json()
    assert again["recovery"]["counts"]["duplicate"] == 5
    assert again["stats"]["duplicatesPrevented"] == 5
    assert query(db_path, "SELECT id, seq, version FROM sync_data ORDER BY id") == before


async def test_an_older_export_does_not_overwrite_newer_edits(client: Client, db_path: str) -> None:
    entry = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    newer = {**entry, "notes": "edited later", "updatedAt": "2025-08-01T10:00:00.000Z"}
    await push(client, {"entries": [newer]})
    body = (await push(client, {"entries": [entry]})).json()
    assert body["recovery"]["counts"]["kept_existing"] == 1
    assert body["conflicts"] == [{"entityId": entry["id"], "entityType": "logbook_entry",
                                  "reason": "stored_version_newer"}]
    stored = query(db_path, "SELECT data FROM sync_data WHERE entity_id = ?", (entry["id"],))
    assert json.loads(stored[0]["data"])["notes"] == "edited later"
    archived = query(db_path, "SELECT reason FROM recovery_archive WHERE entity_id = ?", (entry["id"],))
    assert [a["reason"] for a in archived] == ["older than stored version"]


async def test_one_bad_record_is_quarantined_and_the_rest_stored(client: Client, db_path: str) -> None:
    good = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    bad = {**good, "id": "e-negative", "duration": -5}
    body = (await push(client, {"entries": [good, bad, "not an object"]})).json()
    assert body["recovery"]["counts"]["inserted"] == 1
    assert body["recovery"]["counts"]["quarantined"] == 2
    reasons = {c["entityId"]: c["reason"] for c in body["conflicts"]}
    assert reasons["e-negative"] == "invalid_value"
    kept = query(db_path, "SELECT entity_id, reason, field, raw FROM recovery_quarantine ORDER BY id")
    assert (kept[0]["entity_id"], kept[0]["reason"]) == ("e-negative", "invalid_value")
    assert json.loads(kept[1]["raw"]) == "not an object"


async def test_a_record_naming_another_user_is_quarantined(client: Client, db_path: str) -> None:
    entry = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    body = (await push(client, {"entries": [{**entry, "user_id": BEN[0]}]})).json()
    assert body["conflicts"][0]["reason"] == "user_mismatch"
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0


async def test_deletion_markers_soft_delete_and_are_not_revived(client: Client, db_path: str) -> None:
    entry = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    await push(client, {"entries": [entry]})
    marker = {"id": entry["id"], "deletedAt": "2025-07-02T09:15:00.000Z"}
    assert (await push(client, {"entries": [marker]})).json()["recovery"]["counts"]["deleted"] == 1
    again = (await push(client, {"entries": [entry]})).json()
    assert again["recovery"]["counts"]["suppressed"] == 1
    row = query(db_path, "SELECT deleted_at, version FROM sync_data WHERE entity_id = ?", (entry["id"],))[0]
    assert row["deleted_at"] is not None and row["version"] == 2
    pulled = (await client.post("/api/sync/pull", headers=auth(ADA))).json()
    assert pulled["entries"] == []


async def test_token_with_unknown_sub_but_known_email_is_mapped(client: Client, db_path: str) -> None:
    stranger = ("user_OldIdBeforeTheRebuild", ADA[1].upper(), "user")
    entry = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    body = (await push(client, {"entries": [entry]}, user=stranger)).json()
    assert body["recovery"]["userResolved"] is True
    assert query(db_path, "SELECT user_id FROM sync_data")[0]["user_id"] == ADA[0]
    alias = query(db_path, "SELECT token_sub, user_id FROM recovery_user_aliases")
    assert [(a["token_sub"], a["user_id"]) for a in alias] == [(stranger[0], ADA[0])]


async def test_unknown_user_records_are_kept_in_quarantine(client: Client, db_path: str) -> None:
    nobody = ("user_NobodyNobodyNobody00", "nobody@example.com", "user")
    entry = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    body = (await push(client, {"entries": [entry]}, user=nobody)).json()
    assert body["recovery"]["userResolved"] is False
    assert body["conflicts"][0]["reason"] == "unknown_user"
    kept = query(db_path, "SELECT owner, reason FROM recovery_quarantine")
    assert [(k["owner"], k["reason"]) for k in kept] == [(nobody[0], "unknown_user")]


async def test_cookie_auth_is_accepted(client: Client) -> None:
    client.cookies.set("auth-token", token_for(ADA))
    response = await client.get("/api/sync/status")
    client.cookies.clear()
    assert response.status_code == 200
    assert response.json()["userResolved"] is True


async def test_missing_expired_and_wrong_secret_tokens_get_401_problems(client: Client) -> None:
    expired = token_for(ADA, lifetime=timedelta(seconds=-60))
    wrong = token_for(ADA, secret=SECRET + "-not")
    for headers in ({}, {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {wrong}"},
                    {"Authorization": "Basic abc"}):
        response = await client.post("/api/sync/pull", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 401


async def test_idempotency_key_replays_the_first_answer(client: Client, db_path: str) -> None:
    changes = export_changes("mirubato-data-export-2025-09-01.json")
    headers = {"X-Idempotency-Key": f"{DEVICE}_POST_abc_def"}
    first = await push(client, changes, **headers)
    second = await push(client, changes, **headers)
    assert second.json() == first.json()
    assert query(db_path, "SELECT COUNT(*) AS n FROM recovery_ledger")[0]["n"] == 1
    other = await push(client, {"entries": changes["entries"][:1]}, **headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "X-Idempotency-Key"


async def test_bad_bodies_get_problem_details_and_write_nothing(client: Client, db_path: str) -> None:
    cases = [
        (b'{"changes": {"entries": [', 400),
        (b'{"changes": {"entries": 5}}', 422),
        (b'{"nochanges": true}', 422),
        (b"[]", 422),
    ]
    for body, status in cases:
        response = await client.post(
            "/api/sync/push", content=body, headers={**auth(ADA), "Content-Type": "application/json"}
        )
        assert response.status_code == status, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == status and problem["errors"][0]["field"]
    bad_header = await push(client, {"entries": []}, **{"X-Device-ID": "dev'; DROP TABLE users;--"})
    assert bad_header.status_code == 400
    assert bad_header.json()["errors"][0]["field"] == "X-Device-ID"
    assert query(db_path, "SELECT COUNT(*) AS n FROM recovery_ledger")[0]["n"] == 0


async def test_body_over_the_limit_gets_413(client: Client) -> None:
    big = {"entries": [{"id": "x", "notes": "a" * (3 * 1024 * 1024)}]}
    response = await push(client, big)
    assert response.status_code == 413
    assert response.json()["status"] == 413


async def test_status_reports_counts_and_devices(client: Client) -> None:
    await push(client, export_changes("mirubato-data-export-2025-09-01.json"), **{"X-Device-ID": DEVICE})
    status = (await client.get("/api/sync/status", headers=auth(ADA))).json()
    assert status["entityCounts"] == {"logbook_entry": 5}
    assert status["deviceCount"] == 1
    assert status["lastSyncToken"]
    assert (await client.get("/api/sync/status", headers=auth(ADMIN))).json()["entityCounts"] == {}


async def test_pull_takes_no_body_and_no_content_type(client: Client) -> None:
    """The app's client pulls with `POST` and nothing else: no body, no Content-Type (CONTRACT section 4)."""
    await push(client, export_changes("mirubato-data-export-2025-09-01.json"))
    response = await client.post("/api/sync/pull", headers={"Authorization": f"Bearer {token_for(ADA)}"})
    assert response.status_code == 200, response.text
    assert "content-type" not in {k.lower() for k in response.request.headers}
    assert len(response.json()["entries"]) == 5


async def test_status_has_the_shape_the_apps_client_declares(client: Client) -> None:
    await push(client, export_changes("mirubato-data-export-2025-09-01.json"), **{"X-Device-ID": DEVICE})
    status = (await client.get("/api/sync/status", headers=auth(ADA))).json()
    assert {"lastSyncTime", "syncToken", "pendingChanges", "deviceCount", "entityCount"} <= status.keys()
    assert status["syncToken"] == status["lastSyncToken"]
    assert status["pendingChanges"] == 0
    assert status["entityCount"] == 5
    assert status["lastSyncTime"] is not None


async def test_success_true_is_given_only_with_every_record_kept_even_all_quarantined(
    client: Client, db_path: str
) -> None:
    """On `success: true` the client forgets its pending deletions: right only because every record is
    kept. A push whose records are all quarantined still answers `success: true`, and keeps them all."""
    good = export_changes("mirubato-data-export-2025-09-01.json")["entries"][0]
    records = [{**good, "id": "bad-duration", "duration": -1}, {**good, "id": "bad-type", "type": "juggling"},
               {"id": "no-fields"}, {"deletedAt": "2025-07-02T09:15:00.000Z"}]
    body = (await push(client, {"entries": records})).json()
    assert body["success"] is True
    assert body["recovery"]["counts"]["quarantined"] == len(records)
    kept = query(db_path, "SELECT entity_id, raw FROM recovery_quarantine WHERE owner = ?", (ADA[0],))
    assert len(kept) == len(records)
    assert sorted(json.loads(k["raw"]).get("id", "") for k in kept) == sorted(r.get("id", "") for r in records)
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0
