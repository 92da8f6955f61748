"""`openapi/openapi.json` is exactly what the app generates: regenerate it with
`python -m service openapi` whenever a route or schema changes."""

from __future__ import annotations

from pathlib import Path

from service.openapi import render_openapi

COMMITTED = Path(__file__).parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_openapi(), (
        "openapi/openapi.json is stale: run `python -m service openapi`"
    )


def test_operations_are_documented_and_secured() -> None:
    import json

    schema = json.loads(render_openapi())
    assert "/api/sync/push" in schema["paths"]
    assert "/health" not in schema["paths"] and "/metrics" not in schema["paths"]
    push = schema["paths"]["/api/sync/push"]["post"]
    assert {p["name"] for p in push["parameters"]} >= {"X-Device-ID", "X-Idempotency-Key"}
