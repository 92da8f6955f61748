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
