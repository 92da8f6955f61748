"""A stand-in for the app's web client (pezware/mirubato `frontendv2`) as CONTRACT section 4 describes
it, written from that description: the calls it makes, their headers and bodies, its CORS preflights
and its live-sync socket. None of the app's code is used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

APP_ORIGIN = "https://mirubato.example"
RECEIVE_TIMEOUT_S = 10.0


class PreflightRefused(AssertionError):
    pass


class AppClient:
    """One browser tab of one device, signed in: every cross-origin call is preflighted first, as a
    browser does, and refused if the service does not allow its method and headers."""

    def __init__(self, base_url: str, token: str, user_id: str, device_id: str) -> None:
        self.base_url = base_url
        self.token = token
        self.user_id = user_id
        self.device_id = device_id
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30.0)
        self.preflights: list[tuple[str, str]] = []

    async def close(self) -> None:
        await self.http.aclose()

    async def preflight(self, method: str, path: str, headers: list[str]) -> None:
        response = await self.http.options(path, headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ", ".join(headers),
        })
        allowed = response.headers.get("access-control-allow-headers", "")
        allowed_headers = {h.strip().lower() for h in allowed.split(",")}
        if (
            response.status_code not in (200, 204)
            or response.headers.get("access-control-allow-origin") != APP_ORIGIN
            or response.headers.get("access-control-allow-credentials") != "true"
            or method not in response.headers.get("access-control-allow-methods", "")
            or not set(headers) <= allowed_headers
        ):
            raise PreflightRefused(f"{method} {path}: {response.status_code} {dict(response.headers)}")
        self.preflights.append((method, path))

    async def call(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> httpx.Response:
        """A call as the client's axios instance makes it: Bearer token; on writes `X-Device-ID` (and a key
        where the client adds one); a JSON body with its Content-Type only when there is a body."""
        headers = {"Authorization": f"Bearer {self.token}", "Origin": APP_ORIGIN}
        if method in ("POST", "PUT"):
            headers["X-Device-ID"] = self.device_id
        if idempotency_key is not None:
            headers["X-Idempotency-Key"] = idempotency_key
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        await self.preflight(method, path, sorted(h.lower() for h in headers if h != "Origin"))
        response = await self.http.request(method, path, content=content, headers=headers)
        assert response.headers.get("access-control-allow-origin") == APP_ORIGIN, (method, path)
        return response

    async def me(self) -> httpx.Response:
        return await self.call("GET", "/api/user/me")

    def push_key(self, body: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return f"{self.device_id}_POST_{digest[:8]}_{digest[8:16]}"

    async def push(self, entries: list[dict[str, Any]], goals: list[dict[str, Any]] | None = None) -> httpx.Response:
        body = {"changes": {"entries": entries, "goals": goals or []}}
        return await self.call("POST", "/api/sync/push", body, idempotency_key=self.push_key(body))

    async def pull(self) -> httpx.Response:
        return await self.call("POST", "/api/sync/pull")  # no body, no Content-Type

    @asynccontextmanager
    async def socket(self) -> AsyncIterator[LiveSocket]:
        url = (self.base_url.replace("http://", "ws://", 1)
               + f"/sync/ws?userId={quote(self.user_id)}&token={quote(self.token)}")
        async with websockets.connect(url, additional_headers={"Origin": APP_ORIGIN}) as connection:
            yield LiveSocket(connection)


class LiveSocket:
    """The client's live-sync socket: messages kept in arrival order, read by type."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.seen: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps({"timestamp": "2025-07-01T10:00:00.000Z", **message}))

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(self.connection.recv(), RECEIVE_TIMEOUT_S))
        self.seen.append(message)
        return message

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Every message up to and including the next one of `kind`."""
        got = []
        while True:
            message = await self.receive()
            got.append(message)
            if message["type"] == kind:
                return got

    async def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """What arrives within `seconds` (to show that nothing does)."""
        got = []
        try:
            while True:
                got.append(json.loads(await asyncio.wait_for(self.connection.recv(), seconds)))
        except TimeoutError:
            return got
