"""Support staff views: progress at a glance, search, summary, quarantine, redrive; admins only."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADA, ADMIN, BEN, add_users, auth, load_fixture, query

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
LATECOMER = ("user_LateLateLateLateLate0", "late@example.com", "user")


def entries() -> list[dict[str, Any]]:
    return load_fixture("exports/mirubato-data-export-2025-09-01.json")["logbook"]


async def push(client: Client, user: tuple[str, str, str], changes: dict[str, Any]) -> Any:
    response = await client.post("/api/sync/push", json={"changes": changes},
                                 headers=auth(user, **{"X-Device-ID": DEVICE}))
    assert response.status_code == 200, response.text
    return response.json()


async def test_support_routes_need_an_admin(client: Client) -> None:
    for path in ("/v1/support/summary", f"/v1/support/users/{ADA[0]}", "/v1/support/users",
                 f"/v1/support/users/{ADA[0]}/quarantine"):
        response = await client.get(path, headers=auth(ADA))
        assert response.status_code == 403, path
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.post(f"/v1/support/users/{ADA[0]}/redrive", headers=auth(ADA))).status_code == 403


async def test_role_is_read_from_the_database_on_every_request(client: Client, db_path: str) -> None:
    assert (await client.get("/v1/support/summary", headers=auth(ADMIN))).status_code == 200
    query(db_path, "UPDATE users SET role = 'user' WHERE id = ?", (ADMIN[0],))
    assert (await client.get("/v1/support/summary", headers=auth(ADMIN))).status_code == 403


async def test_user_detail_shows_progress_and_latest_uploads(client: Client) -> None:
    await push(client, ADA, {"entries": entries()})
    detail = (await client.get(f"/v1/support/users/{ADA[0]}", headers=auth(ADMIN))).json()
    assert detail["progress"]["state"] == "in_progress"
    assert detail["progress"]["counts"]["inserted"] == 5
    assert detail["progress"]["counts_by_entity_type"] == {"logbook_entry": {"inserted": 5}}
    assert detail["progress"]["devices"][0]["device_id"] == DEVICE
    assert detail["latest_uploads"][0]["source"] == "push"
    assert detail["latest_uploads"][0]["received"] == 5
    missing = await client.get("/v1/support/users/user_doesNotExist000000000", headers=auth(ADMIN))
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


async def test_list_users_searches_filters_and_pages(client: Client, db_path: str) -> None:
    add_users(db_path, *[(f"user_Page{i:017d}", f"page{i}@example.com", "user") for i in range(7)])
    await push(client, ADA, {"entries": entries()})
    found = (await client.get("/v1/support/users", params={"email": "GUITAR"}, headers=auth(ADMIN))).json()
    assert [u["user_id"] for u in found["items"]] == [BEN[0]]
    active = (await client.get("/v1/support/users", params={"state": "in_progress"}, headers=auth(ADMIN))).json()
    assert [u["user_id"] for u in active["items"]] == [ADA[0]]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/support/users", params=params, headers=auth(ADMIN))).json()
        seen += [u["user_id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 10
    bad = await client.get("/v1/support/users", params={"cursor": "%%%"}, headers=auth(ADMIN))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"
    bad_state = await client.get("/v1/support/users", params={"state": "done"}, headers=auth(ADMIN))
    assert bad_state.status_code == 400


async def test_summary_counts_states_outcomes_and_recent_uploads(client: Client) -> None:
    await push(client, ADA, {"entries": entries()})
    await push(client, BEN, {"entries": [{**entries()[0], "id": "ben-1", "duration": -3}]})
    summary = (await client.get("/v1/support/summary", headers=auth(ADMIN))).json()
    assert summary["users_by_state"] == {"not_started": 1, "in_progress": 1, "complete": 0, "needs_review": 1}
    assert summary["records_by_outcome"]["inserted"] == 5
    assert summary["records_by_outcome"]["quarantined"] == 1
    assert summary["uploads_last_hour"] == 2


async def test_quarantine_is_listed_and_redriven_once_the_user_exists(client: Client, db_path: str) -> None:
    records = entries()
    body = await push(client, LATECOMER, {"entries": records})
    assert body["recovery"]["counts"]["quarantined"] == 5
    listed = (await client.get(f"/v1/support/users/{LATECOMER[0]}/quarantine", params={"limit": 2},
                               headers=auth(ADMIN))).json()
    assert [q["reason"] for q in listed["items"]] == ["unknown_user", "unknown_user"]
    assert listed["items"][0]["raw"] == records[0]  # kept verbatim
    assert listed["next_cursor"]
    assert (await client.post(f"/v1/support/users/{LATECOMER[0]}/redrive", headers=auth(ADMIN))).status_code == 404

    add_users(db_path, LATECOMER)
    result = (await client.post(f"/v1/support/users/{LATECOMER[0]}/redrive", headers=auth(ADMIN))).json()
    assert (result["redriven"], result["resolved"], result["still_quarantined"]) == (5, 5, 0)
    assert result["uploads"][0]["counts"]["inserted"] == 5
    rows = query(db_path, "SELECT COUNT(*) AS n FROM sync_data WHERE user_id = ?", (LATECOMER[0],))
    assert rows[0]["n"] == 5
    waiting = (await client.get(f"/v1/support/users/{LATECOMER[0]}/quarantine", headers=auth(ADMIN))).json()
    assert waiting["items"] == []
    history = (await client.get(f"/v1/support/users/{LATECOMER[0]}/quarantine",
                                params={"include_resolved": "true"}, headers=auth(ADMIN))).json()
    assert len(history["items"]) == 5 and all(q["resolved_at"] for q in history["items"])
    again = (await client.post(f"/v1/support/users/{LATECOMER[0]}/redrive", headers=auth(ADMIN))).json()
    assert again["redriven"] == 0


async def test_archived_conflicts_hold_needs_review_until_reviewed(client: Client) -> None:
    entry = entries()[0]
    await push(client, ADA, {"entries": [{**entry, "notes": "new", "updatedAt": "2025-08-01T00:00:00.000Z"}]})
    await push(client, ADA, {"entries": [entry]})
    detail = (await client.get(f"/v1/support/users/{ADA[0]}", headers=auth(ADMIN))).json()
    assert detail["progress"]["state"] == "needs_review"
    assert detail["progress"]["archived_waiting"] == 1
    review = (await client.post(f"/v1/support/users/{ADA[0]}/review", headers=auth(ADMIN))).json()
    assert review == {"reviewed": 1, "state": "in_progress"}


async def test_health_and_metrics_need_no_token(client: Client) -> None:
    await push(client, ADA, {"entries": entries()})
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'resync_records_total{entity_type="logbook_entry",outcome="inserted"}' in text
    assert 'resync_uploads_total{source="push"}' in text
    assert "resync_upload_duration_seconds_bucket" in text


async def test_metrics_count_http_requests_by_route_template_never_by_raw_path(client: Client) -> None:
    """Litestar's Prometheus plugin counts every request by method, route template and status; ids in a
    path never become label values (a series each), and the scrape does not count itself."""

    async def requests() -> dict[tuple[str, str, str], float]:
        families = {f.name: f for f in text_string_to_metric_families((await client.get("/metrics")).text)}
        samples = families["resync_requests"].samples if "resync_requests" in families else []
        return {(s.labels["method"], s.labels["path"], s.labels["status_code"]): s.value
                for s in samples if s.name == "resync_requests_total"}

    detail = ("GET", "/v1/support/users/{user_id}", "200")
    before = (await requests()).get(detail, 0.0)
    for user in (ADA, BEN):
        assert (await client.get(f"/v1/support/users/{user[0]}", headers=auth(ADMIN))).status_code == 200
    after = await requests()
    assert after[detail] == before + 2
    assert not any(ADA[0] in path or BEN[0] in path or path == "/metrics" for _, path, _ in after)


async def test_list_and_detail_agree_on_every_users_state(client: Client, db_path: str) -> None:
    """The list computes states in SQL, the detail in Python: they must never disagree."""
    await push(client, ADA, {"entries": entries()})
    await push(client, BEN, {"entries": [{**entries()[0], "id": "ben-1", "duration": -3}]})
    await client.post(f"/v1/recovery/devices/{DEVICE}/complete", json={"expected": {"logbook_entry": 5}},
                      headers=auth(ADA))
    listed = (await client.get("/v1/support/users", headers=auth(ADMIN))).json()["items"]
    assert {u["state"] for u in listed} == {"complete", "needs_review", "not_started"}
    for user in listed:
        detail = await client.get(f"/v1/support/users/{user['user_id']}", headers=auth(ADMIN))
        if detail.status_code == 404:
            assert user["state"] == "not_started"
            continue
        assert detail.json()["progress"]["state"] == user["state"], user
