"""`/api/user`: the app's web client reads `me` first on every page load and logs out on any error."""

from __future__ import annotations

from datetime import timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, ADMIN, SECRET, auth, query, token_for

Client = AsyncTestClient[Litestar]


async def test_me_answers_the_users_row_in_the_apps_shape(client: Client, db_path: str) -> None:
    response = await client.get("/api/user/me", headers=auth(ADA))
    assert response.status_code == 200, response.text
    body = response.json()
    created = query(db_path, "SELECT created_at FROM users WHERE id = ?", (ADA[0],))[0][0]
    assert body == {"id": ADA[0], "email": ADA[1], "displayName": "ada.pianist", "authProvider": "magic_link",
                    "role": "user", "createdAt": created}
    assert (await client.get("/api/user/me", headers=auth(ADMIN))).json()["role"] == "admin"


async def test_me_answers_the_user_a_known_email_maps_an_unknown_subject_to(client: Client) -> None:
    stranger = ("user_OldIdBeforeTheRebuild", ADA[1].upper(), "user")
    assert (await client.get("/api/user/me", headers=auth(stranger))).json()["id"] == ADA[0]


async def test_bad_tokens_get_401_and_unknown_users_404_problems(client: Client) -> None:
    expired = token_for(ADA, lifetime=timedelta(seconds=-60))
    wrong = token_for(ADA, secret=SECRET + "-not")
    for headers in ({}, {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {wrong}"},
                    {"Authorization": "Bearer not-a-jwt"}):
        response = await client.get("/api/user/me", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith("application/problem+json")
    nobody = ("user_NobodyNobodyNobody00", "nobody@example.com", "user")
    response = await client.get("/api/user/me", headers=auth(nobody))
    assert response.status_code == 404
    assert response.json()["detail"] == "User not found"


async def test_preferences_are_the_users_document_or_empty(client: Client) -> None:
    assert (await client.get("/api/user/preferences", headers=auth(ADA))).json() == {}
    prefs = {"id": ADA[0], "theme": "dark", "primaryInstrument": "piano"}
    upload = {"records": [{"entity_type": "user_preferences", "data": prefs}]}
    assert (await client.post("/v1/recovery/uploads", json=upload, headers=auth(ADA))).status_code == 200
    assert (await client.get("/api/user/preferences", headers=auth(ADA))).json() == prefs


async def test_saved_preferences_replace_the_document_and_the_latest_wins(client: Client, db_path: str) -> None:
    headers = auth(ADA, **{"X-Device-ID": "dev_a1B2c3D4e5F6g7H8"})
    saved = await client.put("/api/user/preferences", json={"theme": "dark", "customInstruments": ["oud"]},
                             headers=headers)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"success": True, "preferences": {"theme": "dark"}}  # the fields the app keeps
    again = await client.put("/api/user/preferences", json={"theme": "light", "primaryInstrument": "guitar"},
                             headers=headers)
    assert again.status_code == 200
    stored = (await client.get("/api/user/preferences", headers=auth(ADA))).json()
    assert stored["theme"] == "light" and stored["primaryInstrument"] == "guitar"
    rows = query(db_path, "SELECT entity_id, version FROM sync_data WHERE entity_type = 'user_preferences'")
    assert [(r["entity_id"], r["version"]) for r in rows] == [(ADA[0], 2)]
    bad = await client.put("/api/user/preferences", json={"theme": "neon"}, headers=headers)
    assert bad.status_code == 422
