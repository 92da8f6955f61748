"""`/api/goals` and `/api/repertoire`: the app's shapes answered from recovered rows; repertoire writes are
uploads through the pipeline, and a removal is a tombstone."""

from __future__ import annotations

import json
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, BEN, auth, query

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
PIECE = "clair de lune-claude debussy"


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": "2025-06-01T10:00:00.000Z", "duration": 30, "type": "practice",
            "instrument": "piano", "pieces": [{"title": "Clair de Lune", "composer": "Claude Debussy"}],
            "techniques": [], "tags": [], "createdAt": "2025-06-01T10:00:00.000Z",
            "updatedAt": "2025-06-01T10:00:00.000Z", **fields}


async def push(client: Client, changes: dict[str, Any]) -> None:
    response = await client.post("/api/sync/push", json={"changes": changes}, headers=auth(ADA))
    assert response.status_code == 200, response.text


async def test_goals_are_listed_in_the_apps_shape_with_related_sessions(client: Client) -> None:
    goal = {"id": "goal_1", "title": "Learn the nocturne", "status": "ACTIVE", "type": "repertoire",
            "target_date": "2025-12-01", "created_at": "2025-06-01T10:00:00.000Z",
            "updated_at": "2025-06-02T10:00:00.000Z"}
    await push(client, {"goals": [goal, {**goal, "id": "goal_2", "status": "completed"}],
                        "entries": [entry("e1", goalIds=["goal_1"]), entry("e2", goal_ids=["goal_1"], notes="x")]})
    goals = (await client.get("/api/goals", headers=auth(ADA))).json()["goals"]
    by_id = {g["id"]: g for g in goals}
    assert set(by_id) == {"goal_1", "goal_2"}
    first = by_id["goal_1"]
    assert first["status"] == "active" and first["targetDate"] == "2025-12-01"
    assert first["relatedSessions"] == 2
    assert first["createdAt"] == 1748772000  # epoch seconds, as the app's goals table holds them
    assert set(first) >= {"id", "title", "description", "type", "targetValue", "currentValue", "targetDate",
                          "status", "scoreId", "measures", "practicePlan", "milestones", "relatedSessions",
                          "createdAt", "updatedAt"}
    filtered = (await client.get("/api/goals?status=completed", headers=auth(ADA))).json()["goals"]
    assert [g["id"] for g in filtered] == ["goal_2"]
    assert (await client.get("/api/goals", headers=auth(BEN))).json() == {"goals": []}


async def test_repertoire_add_list_update_and_remove_as_the_client_does(client: Client, db_path: str) -> None:
    headers = auth(ADA, **{"X-Device-ID": DEVICE, "X-Idempotency-Key": "rep_add_1"})
    added = await client.post("/api/repertoire", json={"scoreId": "  Clair de Lune-Claude Debussy "},
                              headers=headers)
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["scoreId"] == PIECE and body["status"] == "planned" and body["referenceLinks"] == []
    again = await client.post("/api/repertoire", json={"scoreId": "  Clair de Lune-Claude Debussy "},
                              headers=headers)
    assert again.json() == body  # the same idempotency key: the first answer, nothing written
    assert query(db_path, "SELECT COUNT(*) AS n FROM recovery_ledger WHERE source = 'repertoire'")[0]["n"] == 1

    await push(client, {"entries": [entry("e1", scoreId=PIECE), entry("e2", scoreId=PIECE, duration=15)]})
    items = (await client.get("/api/repertoire", headers=auth(ADA))).json()["items"]
    assert len(items) == 1
    item = items[0]
    assert item["scoreId"] == PIECE and item["id"] == body["id"]
    assert item["practiceCount"] == 2 and item["totalPracticeTime"] == 45
    assert item["lastPracticed"] == 1748772000000

    updated = await client.put(f"/api/repertoire/{PIECE}", json={"status": "learning", "personalNotes": "slow"},
                               headers=auth(ADA, **{"X-Device-ID": DEVICE}))
    assert updated.status_code == 200, updated.text
    assert updated.json() == {"message": "Repertoire updated successfully"}
    item = (await client.get("/api/repertoire", headers=auth(ADA))).json()["items"][0]
    assert item["status"] == "learning"
    assert item["personalNotes"].startswith("slow") and ":planned:learning]" in item["personalNotes"]
    stats = (await client.get(f"/api/repertoire/{PIECE}/stats", headers=auth(ADA))).json()
    assert stats["stats"]["practiceCount"] == 2 and len(stats["stats"]["recentSessions"]) == 2

    removed = await client.delete(f"/api/repertoire/{PIECE}", headers=auth(ADA))
    assert removed.status_code == 200 and removed.json() == {"message": "Removed from repertoire"}
    assert (await client.get("/api/repertoire", headers=auth(ADA))).json() == {"items": []}
    row = query(db_path, "SELECT deleted_at, version FROM sync_data WHERE entity_type = 'repertoire_item'")
    assert len(row) == 1 and row[0]["deleted_at"] is not None  # a tombstone, never a SQL DELETE
    assert (await client.delete(f"/api/repertoire/{PIECE}", headers=auth(ADA))).status_code == 404


async def test_unknown_pieces_and_bad_bodies_get_problems(client: Client) -> None:
    missing = await client.put("/api/repertoire/nothing-here", json={"status": "learning"}, headers=auth(ADA))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = await client.post("/api/repertoire", json={"scoreId": "x-y", "status": "mastered"}, headers=auth(ADA))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"].startswith("status") or "status" in bad.text
    plain = await client.post("/api/repertoire", content=b'{"scoreId": "x-y"}',
                              headers=auth(ADA, **{"Content-Type": "text/plain"}))
    assert plain.status_code == 415


async def test_dissociate_keeps_the_logs_with_the_pieces_title_and_removes_the_piece(
    client: Client, db_path: str
) -> None:
    await client.post("/api/repertoire", json={"scoreId": PIECE}, headers=auth(ADA))
    await push(client, {"entries": [entry("e1", scoreId=PIECE)]})
    response = await client.delete(f"/api/repertoire/{PIECE}/dissociate", headers=auth(ADA))
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Piece dissociated from repertoire", "preservedLogs": 1,
                               "pieceTitle": "Clair de Lune", "pieceComposer": "Claude Debussy"}
    stored = json.loads(query(db_path, "SELECT data FROM sync_data WHERE entity_id = 'e1'")[0]["data"])
    assert stored["pieces"][0]["title"] == "Clair de Lune"  # the log is kept, naming the piece
    assert (await client.get("/api/repertoire", headers=auth(ADA))).json() == {"items": []}
