"""A push with an idempotency key hashes its body once and renders its answer once: the bytes stored
with the key are the bytes sent, and a retry gets exactly them."""

from __future__ import annotations

from typing import Any

import pytest

from service.api import rendering, sync
from tests.conftest import ADA, auth
from tests.reliability.test_abuse import entry


async def test_a_keyed_push_hashes_once_and_renders_once(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[bytes] = []
    rendered: list[object] = []
    real_hash, real_render = sync.sha256_hex, sync.render_push

    def counting_hash(data: bytes) -> str:
        hashed.append(data)
        return real_hash(data)

    def counting_render(*args: Any) -> Any:
        rendered.append(args)
        return real_render(*args)

    for module in (sync, rendering):
        monkeypatch.setattr(module, "sha256_hex", counting_hash)
    monkeypatch.setattr(sync, "render_push", counting_render)
    headers = auth(ADA, **{"X-Idempotency-Key": "dev_a1B2c3D4e5F6g7H8_POST_once"})
    body = {"changes": {"entries": [entry("once-1")]}}
    first = await client.post("/api/sync/push", json=body, headers=headers)
    assert first.status_code == 200
    assert len(rendered) == 1
    assert len([h for h in hashed if h.startswith(b"{")]) == 1  # the body; records are hashed elsewhere
    again = await client.post("/api/sync/push", json=body, headers=headers)
    assert again.content == first.content and len(rendered) == 1
