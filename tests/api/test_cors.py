"""Browsers on the app's own origin call the service with credentials: preflights are answered for the
configured origins only."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import SECRET

APP_ORIGIN = "https://app.mirubato.com"


async def test_preflight_from_the_configured_origin_is_allowed(tmp_path: Path) -> None:
    app = create_app(Settings(db_path=str(tmp_path / "app.db"), jwt_secret=SECRET, cors_origins=(APP_ORIGIN,)))
    async with AsyncTestClient(app=app) as client:
        allowed = await client.options(
            "/api/sync/push",
            headers={
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-device-id, x-idempotency-key",
            },
        )
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "x-idempotency-key" in allowed.headers["access-control-allow-headers"].lower()

        other = await client.options(
            "/api/sync/push",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


# Every cross-origin call the app's web client makes, with the headers its preflight asks for.
CLIENT_CALLS = [
    ("GET", "/api/user/me", "authorization"),
    ("POST", "/api/sync/push", "authorization, content-type, x-device-id, x-idempotency-key"),
    ("POST", "/api/sync/pull", "authorization, x-device-id"),
    ("GET", "/api/sync/status", "authorization"),
    ("GET", "/api/goals", "authorization"),
    ("GET", "/api/repertoire", "authorization"),
    ("GET", "/api/user/preferences", "authorization"),
    ("PUT", "/api/user/preferences", "authorization, content-type, x-device-id"),
    ("POST", "/api/repertoire", "authorization, content-type, x-device-id, x-idempotency-key"),
    ("PUT", "/api/repertoire/clair%20de%20lune-debussy", "authorization, content-type, x-device-id, x-idempotency-key"),
    ("DELETE", "/api/repertoire/clair%20de%20lune-debussy", "authorization"),
    ("DELETE", "/api/repertoire/clair%20de%20lune-debussy/dissociate", "authorization"),
]


async def test_preflights_allow_every_method_and_header_the_client_uses(tmp_path: Path) -> None:
    app = create_app(Settings(db_path=str(tmp_path / "app.db"), jwt_secret=SECRET, cors_origins=(APP_ORIGIN,)))
    async with AsyncTestClient(app=app) as client:
        for method, path, headers in CLIENT_CALLS:
            response = await client.options(path, headers={
                "Origin": APP_ORIGIN, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            })
            assert response.status_code in (200, 204), (method, path, response.text)
            assert response.headers["access-control-allow-origin"] == APP_ORIGIN, (method, path)
            assert response.headers["access-control-allow-credentials"] == "true"
            assert method in response.headers["access-control-allow-methods"], (method, path)
            allowed = {h.strip() for h in response.headers["access-control-allow-headers"].lower().split(",")}
            assert {h.strip() for h in headers.split(",")} <= allowed, (method, path)
