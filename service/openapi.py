"""The OpenAPI document as committed in `openapi/openapi.json` (a test fails when they drift)."""

from __future__ import annotations

import json

from service.app import create_app
from service.config import Settings


def render_openapi() -> str:
    # The secret only signs tokens; it does not appear in the schema.
    app = create_app(Settings(jwt_secret="schema-only", db_path=":memory:"))
    schema = app.openapi_schema.to_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
