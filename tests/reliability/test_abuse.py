"""Abuse corpus: hostile or broken requests get the right problem+json answer and change nothing.

Every refusal is RFC 9457 problem+json with `status`, `title` (the status phrase), `detail` and
`errors[].field/reason`. Where a request is refused outright, the service's tables hold exactly the rows
they held before. (The basic cases already in tests/api are not repeated here.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.domain.times import ms_to_iso_z, to_epoch_ms
from tests.conftest import ADA, ADMIN, BEN, SECRET, add_users, auth, query, token_for
from tests.pghelpers import is_postgres
from tests.reliability.liveserver import live_server

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
TEACHER = ("user_TeachTeachTeachTeach0", "teacher@example.com", "teacher")
NOBODY = ("user_NobodyNobodyNobody00", "nobody@example.com", "user")
WATCHED_TABLES = (
    "users", "sync_data", "sync_metadata", "logbook_entries", "recovery_ledger", "recovery_quarantine",
    "recovery_raw_records", "recovery_idempotency_keys", "recovery_archive", "recovery_progress",
    "recovery_entity_state", "recovery_device_records", "recovery_device_counts", "recovery_devices",
)  # fmt: skip
NESTING = 10_000


def entry(entity_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": entity_id, "timestamp": "2025-06-01T17:45:00.000Z", "duration": 25, "type": "practice",
        "instrument": "piano", "pieces": [{"title": "Prelude in C", "composer": "Bach"}], "notes": "scales",
        "createdAt": "2025-06-01T18:00:00.000Z", "updatedAt": "2025-06-01T18:00:00.000Z", **fields,
    }  # fmt: skip


def snapshot(db_path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a request could write to."""
    return {t: sorted(map(tuple, query(db_path, f"SELECT * FROM {t}")), key=repr)  # noqa: S608
            for t in WATCHED_TABLES}


def table_names(db_path: str) -> list[str]:
    if is_postgres(db_path):  # tables, indexes, sequences, triggers and functions of the public schema
        return [r["name"] for r in query(db_path, """
            SELECT relname AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace
            UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal
            UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
            ORDER BY name""")]
    return [r["name"] for r in query(db_path, "SELECT name FROM sqlite_master ORDER BY type, name")]


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 answer with this status, its phrase as title, a detail, and field errors."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] == HTTPStatus(status).phrase
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["errors"], body
    assert all(isinstance(e["field"], str) and isinstance(e["reason"], str) and e["reason"] for e in body["errors"])
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_with(header: dict[str, Any], claims: dict[str, Any], *, key: bytes | None = None,
             digest: Any = hashlib.sha256) -> str:
    """A JWT signed by hand (HMAC with `digest`), or unsigned when `key` is None."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(user: tuple[str, str, str] = ADA, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": user[0], "email": user[1], "iat": now, "exp": now + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def tampered() -> str:
    """Ada's genuine token with Ben's id swapped into the payload, signature kept."""
    header, _, signature = token_for(ADA).split(".")
    return f"{header}.{b64url(json.dumps(claims(BEN)).encode())}.{signature}"


HS256 = {"alg": "HS256", "typ": "JWT"}
KEY = SECRET.encode()
BAD_AUTHORIZATION = {
    "missing": None,
    "basic scheme": "Basic YWRhOnNlY3JldA==",
    "bearer without token": "Bearer ",
    "not a jwt": "Bearer not-a-jwt",
    "three garbage parts": "Bearer a.b.c",
    "expired": f"Bearer {token_for(ADA, lifetime=timedelta(seconds=-60))}",
    "wrong secret": f"Bearer {token_for(ADA, secret=SECRET + '-other')}",
    "alg none, unsigned": f"Bearer {jwt_with({'alg': 'none', 'typ': 'JWT'}, claims())}",
    "alg None, unsigned": f"Bearer {jwt_with({'alg': 'None'}, claims())}",
    "alg none, signed anyway": f"Bearer {jwt_with({'alg': 'none'}, claims(), key=KEY)}",
    "HS512 with the right secret": f"Bearer {jwt_with({'alg': 'HS512'}, claims(), key=KEY, digest=hashlib.sha512)}",
    "signature of another payload": f"Bearer {tampered()}",
    "no sub": f"Bearer {jwt_with(HS256, claims(sub=None), key=KEY)}",
    "no exp": f"Bearer {jwt_with(HS256, claims(exp=None), key=KEY)}",
    "exp not a number": f"Bearer {jwt_with(HS256, claims(exp='tomorrow'), key=KEY)}",
    "not valid yet (nbf)": f"Bearer {jwt_with(HS256, claims(nbf=int(time.time()) + 86400), key=KEY)}",
    "sub not a string": f"Bearer {jwt_with(HS256, claims(sub=12345), key=KEY)}",
    "huge token": "Bearer " + "x" * 100_000,
}


@pytest.fixture
async def filled(client: Client, db_path: str) -> Client:
    """The shared client, with some of Ada's and Ben's history already stored."""
    for user, ids in ((ADA, ["ada-1", "ada-2"]), (BEN, ["ben-1"])):
        response = await client.post("/api/sync/push", json={"changes": {"entries": [entry(i, notes=i) for i in ids]}},
                                     headers=auth(user, **{"X-Device-ID": DEVICE}))
        assert response.status_code == 200, response.text
    return client


# ---- tokens -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
async def test_invalid_unsigned_and_forged_tokens_get_401_and_write_nothing(
    filled: Client, db_path: str, case: str
) -> None:
    """No token, a wrong scheme, a forged, unsigned (`alg: none`), re-signed, expired or incomplete token
    never authenticates: 401 on a push (nothing stored) and on a support route (not 403: no identity)."""
    value = BAD_AUTHORIZATION[case]
    headers = {} if value is None else {"Authorization": value}
    before = snapshot(db_path)
    push = await filled.post("/api/sync/push", json={"changes": {"entries": [entry("forged-1")]}}, headers=headers)
    assert_problem(push, 401, "Authorization")
    assert_problem(await filled.get("/v1/support/summary", headers=headers), 401, "Authorization")
    assert_problem(await filled.post(f"/v1/support/users/{ADA[0]}/redrive", headers=headers), 401, "Authorization")
    assert snapshot(db_path) == before


async def test_a_bad_cookie_token_gets_401(filled: Client, db_path: str) -> None:
    """The `auth-token` cookie is checked like the header: a forged one is 401 and stores nothing."""
    before = snapshot(db_path)
    filled.cookies.set("auth-token", jwt_with({"alg": "none"}, claims()))
    try:
        response = await filled.post("/api/sync/push", json={"changes": {"entries": [entry("cookie-1")]}})
    finally:
        filled.cookies.clear()
    assert_problem(response, 401, "Authorization")
    assert snapshot(db_path) == before


async def test_a_token_for_another_user_reaches_only_that_users_data(filled: Client, db_path: str) -> None:
    """Ben's valid token cannot read, replay, delete or overwrite Ada's data: the same idempotency key and
    body as Ada's push are Ben's own upload, Ben's deletion of Ada's id is Ben's key, his pull and
    progress show only his records, and a device declaration counts only his records."""
    ada_rows = query(db_path, "SELECT * FROM sync_data WHERE user_id = ? ORDER BY entity_id", (ADA[0],))
    body = {"changes": {"entries": [entry("shared-id", notes="Ada's own")]}}
    key = {"X-Idempotency-Key": f"{DEVICE}_POST_same_key", "X-Device-ID": DEVICE}
    first = await filled.post("/api/sync/push", json=body, headers=auth(ADA, **key))
    assert first.status_code == 200
    second = await filled.post("/api/sync/push", json=body, headers=auth(BEN, **key))
    assert second.status_code == 200
    assert second.json()["recovery"]["uploadId"] != first.json()["recovery"]["uploadId"]  # not Ada's replay
    assert second.json()["recovery"]["counts"]["inserted"] == 1

    deletion = {"changes": {"entries": [{"id": "ada-1", "deletedAt": "2025-12-01T00:00:00.000Z"}]}}
    assert (await filled.post("/api/sync/push", json=deletion, headers=auth(BEN))).status_code == 200
    ada_after = query(db_path, "SELECT * FROM sync_data WHERE user_id = ? AND entity_id != 'shared-id'"
                      " ORDER BY entity_id", (ADA[0],))
    assert [tuple(r) for r in ada_after] == [tuple(r) for r in ada_rows]

    pulled = (await filled.post("/api/sync/pull", headers=auth(BEN))).json()
    assert sorted(e["id"] for e in pulled["entries"]) == ["ben-1", "shared-id"]
    assert all(e["user_id"] == BEN[0] for e in pulled["entries"])
    me = (await filled.get("/v1/recovery/me", headers=auth(BEN))).json()
    assert me["user_id"] == BEN[0] and me["counts"]["inserted"] == 2
    declared = await filled.post(f"/v1/recovery/devices/{DEVICE}/complete",
                                 json={"expected": {"logbook_entry": 2}}, headers=auth(BEN))
    assert declared.status_code == 200, declared.text  # ben-1 and shared-id, not Ada's three
    assert declared.json()["received"] == {"logbook_entry": 2}


# ---- records that name another user -------------------------------------------------------------


async def test_records_naming_another_user_are_quarantined_and_touch_nobody(filled: Client, db_path: str) -> None:
    """`user_id` or `userId` naming someone else, in a live record or a deletion marker, through either
    API: quarantined as user_mismatch under the uploader, kept verbatim; neither user's rows change,
    even when the other user already has a row with that id."""
    before = query(db_path, "SELECT * FROM sync_data ORDER BY id")
    records = [
        entry("ben-1", user_id=BEN[0], notes="overwrite Ben's entry"),
        entry("new-for-ben", userId=BEN[0]),
        {"id": "ben-1", "deletedAt": "2025-12-01T00:00:00.000Z", "user_id": BEN[0]},
    ]
    push = await filled.post("/api/sync/push", json={"changes": {"entries": records}}, headers=auth(ADA))
    assert push.status_code == 200, push.text
    assert [c["reason"] for c in push.json()["conflicts"]] == ["user_mismatch"] * 3
    upload = await filled.post(
        "/v1/recovery/uploads",
        json={"records": [{"entity_type": "goal", "data": {"id": "g-ben", "title": "x", "user_id": BEN[0]}}]},
        headers=auth(ADA),
    )
    result = upload.json()["results"][0]
    assert (result["outcome"], result["reason"], result["field"]) == ("quarantined", "user_mismatch", "user_id")

    assert query(db_path, "SELECT * FROM sync_data ORDER BY id") == before
    kept = query(db_path, "SELECT owner, entity_id, reason, field, raw FROM recovery_quarantine ORDER BY id")
    assert [(k["owner"], k["entity_id"], k["reason"]) for k in kept] == [
        (ADA[0], "ben-1", "user_mismatch"), (ADA[0], "new-for-ben", "user_mismatch"),
        (ADA[0], "ben-1", "user_mismatch"), (ADA[0], "g-ben", "user_mismatch"),
    ]  # fmt: skip
    assert [k["field"] for k in kept] == ["user_id", "userId", "user_id", "user_id"]
    assert json.loads(kept[0]["raw"]) == records[0]


# ---- support routes -----------------------------------------------------------------------------


SUPPORT_ROUTES = [
    ("GET", "/v1/support/summary"),
    ("GET", "/v1/support/users"),
    ("GET", f"/v1/support/users/{BEN[0]}"),
    ("GET", f"/v1/support/users/{BEN[0]}/quarantine"),
    ("POST", f"/v1/support/users/{BEN[0]}/redrive"),
    ("POST", f"/v1/support/users/{BEN[0]}/review"),
]


@pytest.mark.parametrize("caller", [ADA, TEACHER, NOBODY], ids=["user", "teacher", "unknown user"])
async def test_support_routes_are_403_for_anyone_but_an_admin(
    filled: Client, db_path: str, caller: tuple[str, str, str]
) -> None:
    """A valid token of a user, a teacher, or a token whose user does not exist gets 403 on every support
    route, and a refused redrive or review changes nothing (quarantine stays waiting, archive unreviewed)."""
    add_users(db_path, TEACHER)
    await filled.post("/api/sync/push", json={"changes": {"entries": [entry("bad", duration=-1)]}},
                      headers=auth(BEN))
    await filled.post("/api/sync/push", json={"changes": {"entries": [entry("ben-1", updatedAt="2025-01-01T00:00:00Z",
                                                                            notes="older")]}}, headers=auth(BEN))
    before = snapshot(db_path)
    for method, path in SUPPORT_ROUTES:
        response = await filled.request(method, path, headers=auth(caller))
        assert_problem(response, 403, "Authorization")
    assert snapshot(db_path) == before
    # The admin is let through on the same routes.
    for method, path in SUPPORT_ROUTES:
        assert (await filled.request(method, path, headers=auth(ADMIN))).status_code == 200, path


async def test_options_and_unknown_methods_on_support_routes_are_not_server_errors(filled: Client) -> None:
    """OPTIONS (no token, as browsers send it) lists the methods instead of crashing in the admin guard;
    a method a route does not have is a 405 problem."""
    for _, path in SUPPORT_ROUTES:
        options = await filled.options(path)
        assert options.status_code == 204, (path, options.text)
        assert "OPTIONS" in options.headers["allow"]
    assert_problem(await filled.delete(f"/v1/support/users/{BEN[0]}", headers=auth(ADMIN)), 405, "method")
    assert_problem(await filled.put("/api/sync/push", headers=auth(ADA)), 405, "method")


# ---- bodies -------------------------------------------------------------------------------------

_DEEP_ARRAYS = "[" * NESTING + "]" * NESTING
_RECORD = json.dumps(entry("deep"))[:-1]
MALFORMED: dict[str, tuple[bytes, int, str]] = {
    # name: (push body, status, field)
    "trailing garbage": (b'{"changes": {}} trailing', 400, "body"),
    "NaN literal": (b'{"changes": {"entries": [NaN]}}', 400, "body"),
    "single quotes": (b"{'changes': {}}", 400, "body"),
    "byte order mark": (b'\xef\xbb\xbf{"changes": {}}', 400, "body"),
    "invalid UTF-8": (b'{"changes": {"entries": [{"id": "\xff\xfe"}]}}', 400, "body"),
    # A lone surrogate escape is JSON the app reads: accepted (tests/reliability/test_lone_surrogates.py).
    "empty body": (b"", 400, "body"),
    "only whitespace": (b"  \n ", 400, "body"),
    "number out of range": (b'{"changes": {"entries": [{"id": "n", "duration": 1e400}]}}', 400, "body"),
    "10k nested arrays as the body": (_DEEP_ARRAYS.encode(), 400, "body"),
    "10k nested objects as the body": (('{"a":' * NESTING + "1" + "}" * NESTING).encode(), 400, "body"),
    "10k nested arrays in a record": (
        ('{"changes": {"entries": [' + _RECORD + ', "metadata": ' + _DEEP_ARRAYS + "}]}}").encode(), 400, "body"
    ),
    "null": (b"null", 422, "body"),
    "a string": (b'"changes"', 422, "body"),
    "changes is a list": (b'{"changes": []}', 422, "changes"),
    "entries is an object": (b'{"changes": {"entries": {"id": "x"}}}', 422, "changes.entries"),
    "goals is a string": (b'{"changes": {"goals": "all"}}', 422, "changes.goals"),
    "lastSyncToken is a number": (b'{"changes": {}, "lastSyncToken": 5}', 422, "lastSyncToken"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_push_bodies_are_refused_with_nothing_written(filled: Client, db_path: str, case: str) -> None:
    """Unreadable bodies (bad JSON, bad UTF-8, 10 000 levels of nesting) are 400, readable ones of the
    wrong shape 422, each pointing at the field; never a 500, and nothing is written."""
    body, status, field = MALFORMED[case]
    before = snapshot(db_path)
    response = await filled.post("/api/sync/push", content=body,
                                 headers=auth(ADA, **{"Content-Type": "application/json"}))
    assert_problem(response, status, field)
    assert snapshot(db_path) == before


UPLOAD_SHAPES: dict[str, tuple[Any, str]] = {
    "records is an object": ({"records": {}}, "records"),
    "entity_type is a number": ({"records": [{"entity_type": 5, "data": {}}]}, "records[0].entity_type"),
    "record without data": ({"records": [{"entity_type": "goal"}]}, "records[0]"),
    "dry_run is a string": ({"records": [], "dry_run": "yes"}, "dry_run"),
    "device_id is a number": ({"records": [], "device_id": 5}, "device_id"),
    "deleted is a list": ({"deleted": ["a"]}, "deleted"),
    "deleted ids are a string": ({"deleted": {"logbook_entry": "a"}}, "deleted[...]"),
}


@pytest.mark.parametrize("case", list(UPLOAD_SHAPES))
async def test_native_uploads_of_the_wrong_shape_are_422_with_nothing_written(
    filled: Client, db_path: str, case: str
) -> None:
    """The native upload refuses a body of the wrong shape as a whole, naming the field."""
    body, field = UPLOAD_SHAPES[case]
    before = snapshot(db_path)
    assert_problem(await filled.post("/v1/recovery/uploads", json=body, headers=auth(ADA)), 422, field)
    assert snapshot(db_path) == before


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", ["/api/sync/push", "/v1/recovery/uploads", f"/v1/recovery/devices/{DEVICE}/complete"])
async def test_bodies_not_declared_as_json_are_415(
    filled: Client, db_path: str, path: str, content_type: str | None
) -> None:
    """A body a browser could send cross-site without a CORS preflight (no type, text/plain, a form) is
    refused before it is read, so a page elsewhere cannot push records, or deletions, with the user's
    `auth-token` cookie. `application/json` with a charset is fine."""
    body = b'{"changes": {"entries": [{"id": "ada-1", "deletedAt": "2025-12-01T00:00:00.000Z"}]}}'
    before = snapshot(db_path)
    headers = {} if content_type is None else {"Content-Type": content_type}
    filled.cookies.set("auth-token", token_for(ADA))
    try:
        response = await filled.post(path, content=body, headers=headers)
    finally:
        filled.cookies.clear()
    assert_problem(response, 415, "Content-Type")
    assert snapshot(db_path) == before
    ok = await filled.post("/api/sync/push", content=b'{"changes": {}}',
                           headers=auth(ADA, **{"Content-Type": "application/json; charset=utf-8"}))
    assert ok.status_code == 200, ok.text


async def test_a_streamed_body_over_the_limit_is_413_without_a_content_length(tmp_path: Path) -> None:
    """Against the real server (uvicorn, chunked transfer; limit set to 1 MB by RESYNC_MAX_BODY_MB): the
    limit holds for a body with no Content-Length to refuse it by: 413, nothing written."""
    chunk = b" " * (256 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"changes": {"entries": [{"id": "big", "notes": "'
        for _ in range(8):  # 2 MB
            yield chunk
        yield b'"}]}}'

    with live_server(tmp_path / "app.db", env={"RESYNC_MAX_BODY_MB": "1"}) as server:
        add_users(server.db_path, ADA)
        before = snapshot(server.db_path)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            for path in ("/api/sync/push", "/v1/recovery/uploads"):
                response = await client.post(path, content=chunks(),
                                             headers=auth(ADA, **{"Content-Type": "application/json"}))
                assert response.request.headers.get("transfer-encoding") == "chunked"
                assert "content-length" not in response.request.headers
                assert_problem(response, 413, "body")
            small = await client.post("/api/sync/push", json={"changes": {"entries": [entry("small")]}},
                                      headers=auth(ADA))
            assert small.status_code == 200, small.text
        after = snapshot(server.db_path)
    assert after["sync_data"] != before["sync_data"]  # the small push went in ...
    assert [r[3] for r in after["sync_data"]] == ["small"]  # ... and only it


async def test_huge_strings_under_the_limit_are_stored_and_documents_over_2mb_quarantined(tmp_path: Path) -> None:
    """A 1.5 MB note goes in intact; a 2.5 MB document (over D1's row limit, under the body limit) is
    quarantined as too_large with its raw record kept; an over-long header is a 400."""
    db_path = str(tmp_path / "app.db")
    app = create_app(Settings(db_path=db_path, jwt_secret=SECRET, max_body_bytes=8 * 1024 * 1024))
    async with AsyncTestClient(app=app) as client:
        add_users(db_path, ADA)
        notes = "♪" * (512 * 1024)  # 1.5 MB of UTF-8
        too_big = "x" * (2_500_000)
        response = await client.post(
            "/api/sync/push", json={"changes": {"entries": [entry("long", notes=notes), entry("huge", notes=too_big)]}},
            headers=auth(ADA),
        )
        assert response.status_code == 200, response.text
        assert response.json()["conflicts"] == [{"entityId": "huge", "entityType": "logbook_entry",
                                                 "reason": "too_large"}]
        stored = query(db_path, "SELECT entity_id, data FROM sync_data")
        assert [r["entity_id"] for r in stored] == ["long"]
        assert json.loads(stored[0]["data"])["notes"] == notes
        kept = query(db_path, "SELECT entity_id, reason, length(raw) AS n FROM recovery_quarantine")
        assert [(k["entity_id"], k["reason"]) for k in kept] == [("huge", "too_large")]
        assert kept[0]["n"] > 2_500_000
        long_header = await client.post("/api/sync/push", json={"changes": {}},
                                        headers=auth(ADA, **{"X-Device-ID": "dev_" + "a" * 10_000}))
        assert_problem(long_header, 400, "X-Device-ID")


async def test_records_nested_deep_but_readable_are_stored_or_quarantined_never_a_500(
    filled: Client, db_path: str
) -> None:
    """200 levels of nesting in a record are data like any other (stored, pulled back intact); 700 levels
    are readable but too deep to store, so the record is quarantined, and the support views and a
    redrive of it still answer."""
    shallow = entry("nested-200", metadata={"x": json.loads("[" * 200 + "]" * 200)})
    deep_text = json.dumps(entry("nested-700"))[:-1] + ', "metadata": ' + "[" * 700 + "]" * 700 + "}"
    body = '{"changes": {"entries": [' + json.dumps(shallow) + ", " + deep_text + "]}}"
    response = await filled.post("/api/sync/push", content=body,
                                 headers=auth(ADA, **{"Content-Type": "application/json"}))
    assert response.status_code == 200, response.text
    assert response.json()["recovery"]["counts"]["inserted"] == 1
    assert [(c["entityId"], c["reason"]) for c in response.json()["conflicts"]] == [("nested-700", "invalid_value")]
    pulled = (await filled.post("/api/sync/pull", headers=auth(ADA))).json()
    assert next(e for e in pulled["entries"] if e["id"] == "nested-200")["metadata"] == shallow["metadata"]
    for method, path in (("GET", f"/v1/support/users/{ADA[0]}/quarantine"), ("GET", f"/v1/support/users/{ADA[0]}"),
                         ("POST", f"/v1/support/users/{ADA[0]}/redrive")):
        assert (await filled.request(method, path, headers=auth(ADMIN))).status_code == 200, path


# ---- ids, headers, paths and queries with quotes and SQL ------------------------------------------

HOSTILE_IDS = [
    "x'); DROP TABLE sync_data;--",
    "Robert'); DELETE FROM users WHERE ('a'='a",
    '" OR "1"="1',
    "' UNION SELECT id, email, role FROM users --",
    "1; PRAGMA writable_schema = ON",
    "INSERT OR REPLACE INTO users (id, email) VALUES ('u', 'e')",
    "%", "_", "\\", "--", "/*", "NULL", "",
    "nul\u0000byte",
    "名前 💥 \u202e",
]  # fmt: skip


async def test_ids_with_quotes_and_sql_are_stored_literally_and_harmlessly(
    filled: Client, db_path: str, engine: str
) -> None:
    """Hostile ids in entries, goals, deletion markers and deleted lists are plain values: stored and
    pulled back byte for byte (an empty id is quarantined as missing), every table is still there and
    every user row intact. On PostgreSQL, whose text cannot hold NUL, an upload holding one is refused
    whole with a 422 naming the reason, and nothing of it is written."""
    tables = table_names(db_path)
    users = query(db_path, "SELECT * FROM users ORDER BY id")
    hostile = HOSTILE_IDS
    if engine == "postgresql":
        before = query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"]
        refused = await filled.post("/api/sync/push", json={"changes": {
            "entries": [entry(i, notes=i) for i in HOSTILE_IDS]}}, headers=auth(ADA))
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "U+0000" in refused.json()["errors"][0]["reason"]
        assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == before
        hostile = [i for i in HOSTILE_IDS if "\u0000" not in i]
    storable = [i for i in hostile if i]
    push = await filled.post("/api/sync/push", json={"changes": {
        "entries": [entry(i, notes=i) for i in hostile],
        "goals": [{"id": i, "title": i, "status": "active", "createdAt": "2025-06-01T18:00:00.000Z"} for i in storable],
    }}, headers=auth(ADA))
    assert push.status_code == 200, push.text
    counts = push.json()["recovery"]["counts"]
    assert (counts["inserted"], counts["quarantined"]) == (2 * len(storable), 1)
    stored = query(db_path, "SELECT entity_type, entity_id, data FROM sync_data WHERE user_id = ?", (ADA[0],))
    by_type: dict[str, set[str]] = {}
    for r in stored:
        by_type.setdefault(r["entity_type"], set()).add(r["entity_id"])
        if r["entity_type"] == "logbook_entry" and r["entity_id"] not in ("ada-1", "ada-2"):
            assert json.loads(r["data"])["notes"] == r["entity_id"]
    assert by_type["logbook_entry"] == {"ada-1", "ada-2", *storable}
    assert by_type["goal"] == set(storable)

    pulled = (await filled.post("/api/sync/pull", headers=auth(ADA))).json()
    assert {e["id"] for e in pulled["entries"]} == {"ada-1", "ada-2", *storable}

    half = storable[: len(storable) // 2]
    deletions = await filled.post("/v1/recovery/uploads", json={
        "records": [{"entity_type": "logbook_entry", "data": {"id": i, "deletedAt": "2025-12-01T00:00:00.000Z"}}
                    for i in half],
        "deleted": {"goal": half, "x'); DROP TABLE users;--": ["a"]},
    }, headers=auth(ADA))
    assert deletions.status_code == 200, deletions.text
    assert deletions.json()["counts"]["deleted"] == 2 * len(half)
    assert deletions.json()["results"][-1]["reason"] == "unknown_entity_type"
    deleted = query(db_path, "SELECT entity_id FROM sync_data WHERE deleted_at IS NOT NULL AND user_id = ?", (ADA[0],))
    assert sorted(r["entity_id"] for r in deleted) == sorted(half * 2)

    assert table_names(db_path) == tables
    assert query(db_path, "SELECT * FROM users ORDER BY id") == users
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data WHERE user_id = ?", (BEN[0],))[0]["n"] == 1


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/support/users?email=' OR 1=1 --", None),
    ("/v1/support/users?email=%25", None),
    ("/v1/support/users?state=' OR 1=1 --", "state"),
    ("/v1/support/users?limit=1 OR 1=1", "limit"),
    ("/v1/support/users?limit=0", "limit"),
    ("/v1/support/users?limit=501", "limit"),
    ("/v1/support/users?cursor=' OR 1=1 --", "cursor"),
    (f"/v1/support/users/{ADA[0]}/quarantine?cursor=InVzZXJfeCI", "cursor"),
    (f"/v1/support/users/{ADA[0]}/quarantine?include_resolved=1 OR 1=1", "include_resolved"),
    ("/v1/support/users/' OR '1'='1", "path"),
])  # fmt: skip
async def test_hostile_query_and_path_values_are_400_or_match_nothing(
    filled: Client, db_path: str, path: str, field: str | None
) -> None:
    """Query and path values are parameters, never SQL: an email pattern matches literally (so nothing),
    a bad limit, state, cursor or flag is a 400 naming it, an unknown user a 404; nothing changes."""
    before = snapshot(db_path)
    response = await filled.get(path, headers=auth(ADMIN))
    if field is None:
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []
    elif field == "path":
        assert_problem(response, 404, "path")
    else:
        assert_problem(response, 400, field)
    assert snapshot(db_path) == before


@pytest.mark.parametrize(("header", "value"), [
    ("X-Idempotency-Key", "k" * 65),
    ("X-Idempotency-Key", "key'; DROP TABLE recovery_idempotency;--"),
    ("X-Idempotency-Key", "key with spaces"),
    ("X-Device-ID", "dev_a1B2c3D4e5F6g7H8' OR '1'='1"),
])  # fmt: skip
async def test_hostile_headers_are_400_with_nothing_written(
    filled: Client, db_path: str, header: str, value: str
) -> None:
    """Device ids and idempotency keys outside `[A-Za-z0-9_-]{1,64}` are refused before anything is read."""
    before = snapshot(db_path)
    for path, body in (("/api/sync/push", {"changes": {"entries": [entry("h-1")]}}),
                       ("/v1/recovery/uploads", {"records": [{"entity_type": "goal", "data": {"id": "g"}}]})):
        response = await filled.post(path, json=body, headers=auth(ADA, **{header: value}))
        assert_problem(response, 400, header)
    assert snapshot(db_path) == before


async def test_hostile_device_ids_in_paths_are_400_with_nothing_written(filled: Client, db_path: str) -> None:
    """A device id with quotes or SQL in the completion path is a 400 on `device_id`, not a declaration."""
    before = snapshot(db_path)
    for device in ("dev' OR '1'='1", "dev_x; DROP TABLE recovery_devices"):
        response = await filled.post(f"/v1/recovery/devices/{device}/complete", json={"expected": {}},
                                     headers=auth(ADA))
        assert_problem(response, 400, "device_id")
    assert snapshot(db_path) == before


# ---- identity: email claims never move data between known users, never carry a role ---------------


def token_as(sub: str, email: str) -> dict[str, str]:
    """A genuine token (the app's secret) whose `sub` and `email` are chosen by the test."""
    return {"Authorization": f"Bearer {jwt_with(HS256, claims(sub=sub, email=email), key=KEY)}"}


async def test_a_token_carrying_another_users_email_never_plants_records_through_redrive(
    filled: Client, db_path: str
) -> None:
    """Attack (issue 13.1): Ada's token carries Ben's email. Her records that are quarantined (here: ones
    naming Ben's id, and an invalid one) keep that email; an admin re-driving Ben must not take them into
    Ben's account. They stay Ada's: re-driving Ada takes them (and quarantines them again for their own
    reasons), and Ben's rows never change."""
    ben_rows = query(db_path, "SELECT * FROM sync_data WHERE user_id = ? ORDER BY id", (BEN[0],))
    planted = {"changes": {"entries": [entry("planted-1", user_id=BEN[0]), entry("planted-2", userId=BEN[0]),
                                       entry("bad-1", duration=-5)]}}
    push = await filled.post("/api/sync/push", json=planted, headers=token_as(ADA[0], BEN[1]))
    assert push.status_code == 200, push.text
    kept = query(db_path, "SELECT owner, email, owner_known FROM recovery_quarantine")
    assert [tuple(k) for k in kept] == [(ADA[0], BEN[1], 1)] * 3  # the email is kept, and ignored

    redrive_ben = await filled.post(f"/v1/support/users/{BEN[0]}/redrive", headers=auth(ADMIN))
    assert redrive_ben.status_code == 200, redrive_ben.text
    assert redrive_ben.json()["redriven"] == 0
    assert query(db_path, "SELECT * FROM sync_data WHERE user_id = ? ORDER BY id", (BEN[0],)) == ben_rows
    waiting = query(db_path, "SELECT owner FROM recovery_quarantine WHERE resolved_at IS NULL")
    assert [w["owner"] for w in waiting] == [ADA[0]] * 3

    redrive_ada = (await filled.post(f"/v1/support/users/{ADA[0]}/redrive", headers=auth(ADMIN))).json()
    assert (redrive_ada["redriven"], redrive_ada["still_quarantined"]) == (3, 3)
    assert query(db_path, "SELECT * FROM sync_data WHERE user_id = ? ORDER BY id", (BEN[0],)) == ben_rows
    again = query(db_path, "SELECT owner, reason FROM recovery_quarantine WHERE resolved_at IS NULL ORDER BY id")
    assert [tuple(r) for r in again] == [(ADA[0], "user_mismatch"), (ADA[0], "user_mismatch"),
                                         (ADA[0], "invalid_value")]


async def test_records_of_an_unknown_subject_follow_their_email_only_to_the_one_user_it_names(
    filled: Client, db_path: str
) -> None:
    """The recovery case the email is for: a token subject that is no user, quarantined with its email,
    goes into the account that email names once it exists; if the subject itself becomes a user, the
    records are that user's and no longer follow the email."""
    first = ("user_OldSubjectOldSubject0", "carla@example.com", "user")
    second = ("user_OtherOldSubjectOther", "dora@example.com", "user")
    for sub, email, _ in (first, second):
        pushed = await filled.post("/api/sync/push", json={"changes": {"entries": [entry(f"{sub}-1")]}},
                                   headers=token_as(sub, email))
        assert pushed.json()["conflicts"][0]["reason"] == "unknown_user"
    carla = ("user_CarlaNewIdCarlaNewId0", "Carla@Example.com", "user")  # differs only in case: the one match
    dora = ("user_DoraNewIdDoraNewIdDo0", "dora@example.com", "user")
    add_users(db_path, carla, dora, (second[0], "dora.new@example.com", "user"))  # the subject is a user now
    carla_redrive = (await filled.post(f"/v1/support/users/{carla[0]}/redrive", headers=auth(ADMIN))).json()
    assert (carla_redrive["redriven"], carla_redrive["resolved"]) == (1, 1)
    assert (await filled.post(f"/v1/support/users/{dora[0]}/redrive", headers=auth(ADMIN))).json()["redriven"] == 0
    owner_redrive = (await filled.post(f"/v1/support/users/{second[0]}/redrive", headers=auth(ADMIN))).json()
    assert owner_redrive["resolved"] == 1
    stored = query(db_path, "SELECT user_id, entity_id FROM sync_data WHERE entity_id LIKE 'user_%' ORDER BY 1")
    assert [tuple(r) for r in stored] == [(carla[0], f"{first[0]}-1"), (second[0], f"{second[0]}-1")]


async def test_an_email_alias_never_carries_the_admin_role(filled: Client, db_path: str) -> None:
    """Issue 13.4: a token with an unknown `sub` and the admin's email is mapped to the admin for its own
    data, but every support route answers 403 and nothing changes; the admin's own token still works."""
    await filled.post("/api/sync/push", json={"changes": {"entries": [entry("bad", duration=-1)]}},
                      headers=auth(BEN))
    alias = token_as("user_UnknownUnknownUnknown", ADMIN[1])
    before = snapshot(db_path)
    for method, path in SUPPORT_ROUTES:
        response = await filled.request(method, path, headers=alias)
        body = assert_problem(response, 403, "Authorization")
        assert "subject" in body["detail"]
    assert snapshot(db_path) == before
    assert (await filled.get("/v1/support/summary", headers=auth(ADMIN))).status_code == 200


async def test_mixed_case_duplicate_emails_take_the_exact_match_else_are_ambiguous(
    filled: Client, db_path: str
) -> None:
    """Issue 13.5: two users whose emails differ only in case. A token with an unknown `sub` and one of the
    two exact addresses is that user; with a third spelling (no exact match) it is an ambiguity: every
    record quarantined as ambiguous_email, nobody's account touched, and no re-drive guesses either."""
    upper = ("user_DanaUpperDanaUpper00", "Dana@Example.com", "user")
    lower = ("user_DanaLowerDanaLower00", "dana@example.com", "user")
    add_users(db_path, upper, lower)
    exact = await filled.post("/api/sync/push", json={"changes": {"entries": [entry("dana-exact")]}},
                              headers=token_as("user_DanaOldIdDanaOldId0", upper[1]))
    assert exact.json()["recovery"]["counts"]["inserted"] == 1
    assert [r["user_id"] for r in query(db_path, "SELECT user_id FROM sync_data WHERE entity_id = 'dana-exact'")] \
        == [upper[0]]

    ambiguous = await filled.post("/api/sync/push", json={"changes": {"entries": [entry("dana-which")]}},
                                  headers=token_as("user_DanaOldIdDanaOldId1", "DANA@example.com"))
    assert ambiguous.status_code == 200, ambiguous.text
    assert ambiguous.json()["recovery"]["userResolved"] is False
    assert [c["reason"] for c in ambiguous.json()["conflicts"]] == ["ambiguous_email"]
    upload = await filled.post("/v1/recovery/uploads", json={"records": [{"entity_type": "goal", "data": {"id": "g"}}]},
                               headers=token_as("user_DanaOldIdDanaOldId1", "DANA@example.com"))
    assert upload.json()["results"][0]["reason"] == "ambiguous_email"
    assert query(db_path, "SELECT COUNT(*) AS n FROM sync_data WHERE entity_id IN ('dana-which', 'g')")[0]["n"] == 0
    for user in (upper, lower):
        redrive = await filled.post(f"/v1/support/users/{user[0]}/redrive", headers=auth(ADMIN))
        assert redrive.json()["redriven"] == 0


# ---- CSRF: cookie-authenticated changes must be JSON --------------------------------------------


STATE_CHANGING_ROUTES = [  # (method, route as declared, a request path, caller)
    ("POST", "/v1/support/users/{user_id}/redrive", f"/v1/support/users/{BEN[0]}/redrive", ADMIN),
    ("POST", "/v1/support/users/{user_id}/review", f"/v1/support/users/{BEN[0]}/review", ADMIN),
    ("POST", "/api/sync/push", "/api/sync/push", ADA),
    ("POST", "/v1/recovery/uploads", "/v1/recovery/uploads", ADA),
    ("POST", "/v1/recovery/exports", "/v1/recovery/exports", ADA),
    ("POST", "/v1/recovery/devices/{device_id}/complete", f"/v1/recovery/devices/{DEVICE}/complete", ADA),
    ("POST", "/api/repertoire", "/api/repertoire", ADA),
    ("PUT", "/api/repertoire/{score_id}", "/api/repertoire/some-piece", ADA),
    ("DELETE", "/api/repertoire/{score_id}", "/api/repertoire/some-piece", ADA),
    ("DELETE", "/api/repertoire/{score_id}/dissociate", "/api/repertoire/some-piece/dissociate", ADA),
    ("PUT", "/api/user/preferences", "/api/user/preferences", ADA),
]


@pytest.mark.parametrize(("content_type", "body"), [
    (None, b""), ("application/x-www-form-urlencoded", b"a=1"), ("text/plain", b"{}"),
    ("multipart/form-data; boundary=x", b"--x--"),
], ids=["bodiless", "form", "text/plain", "multipart"])  # fmt: skip
@pytest.mark.parametrize(("method", "route", "path", "caller"), STATE_CHANGING_ROUTES,
                         ids=[f"{r[0]} {r[1]}" for r in STATE_CHANGING_ROUTES])
async def test_cookie_authenticated_changes_without_json_are_refused_on_every_route(
    filled: Client, db_path: str, method: str, route: str, path: str, caller: tuple[str, str, str],
    content_type: str | None, body: bytes,
) -> None:
    """Issue 13.6: what a page of another origin can send with the victim's cookie and no CORS preflight
    (no body, a form, text/plain) is 415 on every state-changing route, the bodiless admin POSTs included,
    and changes nothing. The same request with an Authorization header (no page can add one cross-site)
    or as application/json is let through."""
    await filled.post("/api/sync/push", json={"changes": {"entries": [entry("bad", duration=-1)]}},
                      headers=auth(BEN))
    await filled.post("/api/sync/push", json={"changes": {"entries": [entry("ben-1", updatedAt="2025-01-01T00:00:00Z",
                                                                            notes="older")]}}, headers=auth(BEN))
    before = snapshot(db_path)
    filled.cookies.set("auth-token", token_for(caller))
    try:
        headers = {} if content_type is None else {"Content-Type": content_type}
        assert_problem(await filled.request(method, path, content=body, headers=headers), 415, "Content-Type")
        assert snapshot(db_path) == before
        if path.endswith(("/redrive", "/review")):
            as_json = await filled.request(method, path, headers={"Content-Type": "application/json"})
            assert as_json.status_code == 200, as_json.text
    finally:
        filled.cookies.clear()
    if path.endswith(("/redrive", "/review")):
        assert (await filled.request(method, path, headers=auth(caller))).status_code == 200


async def test_the_csrf_rule_covers_every_state_changing_route_of_the_app(app: Litestar) -> None:
    """Every POST/PUT/PATCH/DELETE route is in STATE_CHANGING_ROUTES above or declared read-only, so a route
    added later without thinking of cookies fails here instead of shipping unprotected."""
    from service.api.auth import OWN_CSRF_CHECK, READS_ONLY, STATE_CHANGING_METHODS, refuse_cross_site_cookie_writes

    assert refuse_cross_site_cookie_writes in app.guards
    tested = {(method, route) for method, route, _, _ in STATE_CHANGING_ROUTES}
    for app_route in app.routes:
        for handler in getattr(app_route, "route_handlers", []):
            if handler.opt.get(READS_ONLY) or handler.opt.get(OWN_CSRF_CHECK):  # the page's: tests/web
                continue
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", app_route.path)
            for method in set(getattr(handler, "http_methods", ())) & STATE_CHANGING_METHODS:
                assert (method, path) in tested, f"{method} {path}: add it to STATE_CHANGING_ROUTES"


# ---- tokens: what a 401 says, odd claims ---------------------------------------------------------


@pytest.mark.parametrize(("case", "said"), [
    ("expired", "token expired"),
    ("wrong secret", "signature invalid"),
    ("signature of another payload", "signature invalid"),
    ("HS512 with the right secret", "signature invalid"),
    ("alg none, unsigned", "signature invalid"),
    ("not a jwt", "malformed token"),
    ("three garbage parts", "malformed token"),
    ("no sub", "malformed token"),
    ("exp not a number", "malformed token"),
])  # fmt: skip
async def test_a_401_says_whether_the_token_expired_is_wrongly_signed_or_malformed(
    filled: Client, case: str, said: str
) -> None:
    """Issue 15: an operator (or a client) can tell a stale token from a wrong secret from garbage."""
    assert BAD_AUTHORIZATION[case] is not None
    response = await filled.get("/v1/recovery/me", headers={"Authorization": str(BAD_AUTHORIZATION[case])})
    body = assert_problem(response, 401, "Authorization")
    assert body["detail"].startswith(said), body


@pytest.mark.parametrize("extras", [5, "text", [1, 2], None, True, {"email": ADMIN[1]}])
async def test_a_signed_token_with_an_odd_extras_claim_is_an_ordinary_token(filled: Client, extras: Any) -> None:
    """Issue 13.10: a claim named `extras` that is not an object was a 500. It is just another claim the
    service does not read: the token is Ada's, by its `sub` and `email`, and it gets nothing more."""
    token = jwt_with(HS256, {**claims(), "extras": extras}, key=KEY)
    me = await filled.get("/v1/recovery/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["user_id"] == ADA[0]
    assert (await filled.get("/v1/support/summary", headers={"Authorization": f"Bearer {token}"})).status_code == 403


# ---- idempotency keys are per route ---------------------------------------------------------------


async def test_an_idempotency_key_is_scoped_to_its_route(filled: Client, db_path: str) -> None:
    """Issue 13.13: the same key (and the same bytes) on /v1/recovery/uploads after /api/sync/push is a new
    request to another route, answered by that route, not the push's stored answer; each route still
    replays its own first answer."""
    key = {"X-Idempotency-Key": "dev_a1B2c3D4e5F6g7H8_POST_shared", "X-Device-ID": DEVICE}
    body = (b'{"changes": {"entries": []}, "records": [{"entity_type": "goal", "data": {"id": "g-1", "title": "t",'
            b' "status": "active", "createdAt": "2025-06-01T18:00:00.000Z"}}]}')
    headers = auth(ADA, **key, **{"Content-Type": "application/json"})
    push = await filled.post("/api/sync/push", content=body, headers=headers)
    assert push.status_code == 200 and "success" in push.json(), push.text
    upload = await filled.post("/v1/recovery/uploads", content=body, headers=headers)
    assert upload.status_code == 200, upload.text
    assert "success" not in upload.json() and upload.json()["counts"]["inserted"] == 1
    assert (await filled.post("/api/sync/push", content=body, headers=headers)).json() == push.json()
    assert (await filled.post("/v1/recovery/uploads", content=body, headers=headers)).json() == upload.json()
    rows = query(db_path, "SELECT route FROM recovery_idempotency_keys ORDER BY route")
    assert [r["route"] for r in rows] == ["POST /api/sync/push", "POST /v1/recovery/uploads"]


# ---- odd values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("updated", "deleted"), [
    ("0000-01-01T00:00:00.000Z", "0000-06-01T00:00:00.000Z"),  # year 0: before datetime's year 1
    (-62_230_000_000_000, -62_200_000_000_000),  # epoch ms in year -1, as a JavaScript Date holds them
])  # fmt: skip
async def test_a_deletion_dated_before_year_1_that_wins_a_merge_is_stored_not_a_500(
    filled: Client, db_path: str, updated: Any, deleted: Any
) -> None:
    """Issue 13.10: a deletion that beats an even older version, both before year 1, soft-deletes the row
    (deleted_at in the app's ISO form, the expanded year JavaScript writes), and pull, status and the
    support views still answer."""
    live = entry("ancient", createdAt=updated, updatedAt=updated)
    assert (await filled.post("/api/sync/push", json={"changes": {"entries": [live]}}, headers=auth(ADA))).json()[
        "recovery"]["counts"]["inserted"] == 1
    marker = {"id": "ancient", "deletedAt": deleted}
    deletion = await filled.post("/api/sync/push", json={"changes": {"entries": [marker]}}, headers=auth(ADA))
    assert deletion.status_code == 200, deletion.text
    assert deletion.json()["recovery"]["counts"]["deleted"] == 1
    row = query(db_path, "SELECT deleted_at FROM sync_data WHERE entity_id = 'ancient'")[0]
    assert row["deleted_at"] == ms_to_iso_z(to_epoch_ms(deleted) or 0)
    for method, path, who in (("POST", "/api/sync/pull", ADA), ("GET", "/api/sync/status", ADA),
                              ("GET", f"/v1/support/users/{ADA[0]}", ADMIN)):
        assert (await filled.request(method, path, headers=auth(who))).status_code == 200, path
    again = await filled.post("/api/sync/push", json={"changes": {"entries": [live]}}, headers=auth(ADA))
    assert again.json()["recovery"]["counts"]["suppressed"] == 1  # the old version does not come back


@pytest.mark.parametrize("cursor", [
    str(2**63), str(-(2**63) - 1), str(10**30), "[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000,
], ids=["2**63", "-2**63-1", "10**30", "5000 nested arrays", "5000 nested objects"])  # fmt: skip
async def test_support_cursors_beyond_int64_or_deeply_nested_are_400(filled: Client, cursor: str) -> None:
    """Issue 13.10: a cursor is decoded by the service, so whatever is in it is a 400 naming `cursor`."""
    encoded = base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
    for path in (f"/v1/support/users/{ADA[0]}/quarantine", "/v1/support/users"):
        assert_problem(await filled.get(path, params={"cursor": encoded}, headers=auth(ADMIN)), 400, "cursor")


def test_a_replay_line_whose_email_is_ambiguous_is_quarantined_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13.5, for replays: an NDJSON line naming only an email that two users share in different cases
    (neither exactly) is quarantined as ambiguous_email; the exact spelling goes to its user."""
    from tests.replay.helpers import app_database, replay

    upper = ("user_DanaUpperDanaUpper00", "Dana@Example.com", "user")
    lower = ("user_DanaLowerDanaLower00", "dana@example.com", "user")
    db = app_database(tmp_path / "app.db", upper, lower)
    lines = tmp_path / "batch.ndjson"
    lines.write_text("\n".join(json.dumps({"email": email, "device_id": DEVICE,
                                           "changes": {"entries": [entry(f"r-{i}")]}})
                               for i, email in enumerate(["DANA@example.com", "dana@example.com"])) + "\n")
    assert replay(capsys, db, lines).exit_code == 0
    kept = query(db, "SELECT owner, reason FROM recovery_quarantine")
    assert [tuple(k) for k in kept] == [("DANA@example.com", "ambiguous_email")]
    assert [tuple(r) for r in query(db, "SELECT user_id, entity_id FROM sync_data")] == [(lower[0], "r-1")]


async def test_a_live_sync_change_from_an_ambiguous_email_is_quarantined_as_such(filled: Client, db_path: str) -> None:
    """Issue 13.5, for the live-sync socket: a change sent by a token whose email two users share in
    different cases (none exactly) is quarantined as ambiguous_email, and the socket is told why."""
    from service.api.live import LiveHub, LiveSession
    from service.usecases.users import owner_for

    add_users(db_path, ("user_DanaUpperDanaUpper00", "Dana@Example.com", "user"),
              ("user_DanaLowerDanaLower00", "dana@example.com", "user"))
    db = filled.app.state.db
    principal = await owner_for(db, "user_DanaOldIdDanaOldId1", "DANA@example.com")
    sent: list[dict[str, Any]] = []

    class Peer:
        user_id = principal.owner

        async def send(self, message: dict[str, Any]) -> bool:
            sent.append(message)
            return True

    session = LiveSession(db, LiveHub(), Peer(), principal)  # type: ignore[arg-type]
    await session.handle(json.dumps({"type": "ENTRY_CREATED", "entry": entry("live-1")}))
    assert [tuple(r) for r in query(db_path, "SELECT entity_id, reason FROM recovery_quarantine")] == [
        ("live-1", "ambiguous_email")]
    assert "ambiguous_email" in sent[-1]["error"]
