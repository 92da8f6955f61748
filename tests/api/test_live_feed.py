"""The change feed: a change committed by any front end reaches the user's open sockets unasked, as the
rows changed after what each socket was last sent; a socket change reaches the others once."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient, WebSocketTestSession

from service.changefeed import LocalFeed, announce, attach, detach
from tests.conftest import ADA, BEN, add_users, auth, token_for

DEVICE = "dev_a1B2c3D4e5F6g7H8"


def entry(entry_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": "2025-06-01T10:00:00.000Z", "duration": 30, "type": "practice",
            "instrument": "piano", "notes": entry_id, "updatedAt": "2025-06-01T10:00:00.000Z", **fields}


@pytest.fixture
def client(app: Litestar, db_path: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=app) as client:
        add_users(db_path, ADA, BEN)
        yield client


def connect(client: TestClient[Litestar], user: tuple[str, str, str]) -> WebSocketTestSession:
    socket = client.websocket_connect(f"/sync/ws?userId={user[0]}&token={token_for(user)}")
    socket.__enter__()
    assert socket.receive_json(timeout=5)["type"] == "WELCOME"
    return socket


def quiet(socket: WebSocketTestSession, seconds: float = 0.4) -> list[dict[str, Any]]:
    """What the socket is sent within `seconds` (nothing, when all is well)."""
    seen: list[dict[str, Any]] = []
    while True:
        try:
            seen.append(socket.receive_json(timeout=seconds))
        except queue.Empty:
            return seen


def push(client: TestClient[Litestar], *entries: dict[str, Any]) -> int:
    response = client.post("/api/sync/push", json={"changes": {"entries": list(entries)}},
                           headers=auth(ADA, **{"X-Device-ID": DEVICE}))
    assert response.status_code == 200, response.text
    return int(response.json()["syncToken"])


def test_an_http_push_reaches_the_users_open_socket(client: TestClient[Litestar]) -> None:
    ada, ben = connect(client, ADA), connect(client, BEN)
    try:
        token = push(client, entry("e1"), entry("e2", duration=45))
        bulk = ada.receive_json(timeout=5)
        assert bulk["type"] == "BULK_SYNC" and [e["id"] for e in bulk["entries"]] == ["e1", "e2"]
        assert bulk["lastSeq"] == token

        # A deletion through the native API, then a piece through the repertoire route: each once, in order.
        deleted = client.post("/v1/recovery/uploads", headers=auth(ADA),
                              json={"device_id": DEVICE, "records": [], "deleted": {"logbook_entry": ["e1"]}})
        assert deleted.status_code == 200, deleted.text
        gone = ada.receive_json(timeout=5)
        assert (gone["type"], gone["entryId"]) == ("ENTRY_DELETED", "e1") and gone["lastSeq"] > token
        added = client.post("/api/repertoire", json={"scoreId": "clair de lune-debussy"}, headers=auth(ADA))
        assert added.status_code == 201, added.text
        piece = ada.receive_json(timeout=5)
        assert piece["type"] == "REPERTOIRE_BULK_SYNC" and piece["pieces"][0]["scoreId"] == "clair de lune-debussy"

        # The same push again changes nothing: nothing is sent. Ben hears nothing of Ada's.
        push(client, entry("e2", duration=45))
        assert quiet(ada) == [] and quiet(ben) == []
    finally:
        ada.__exit__(None, None, None)
        ben.__exit__(None, None, None)


def test_a_socket_change_reaches_the_users_other_sockets_once(client: TestClient[Litestar]) -> None:
    first, second = connect(client, ADA), connect(client, ADA)
    try:
        first.send_json({"type": "ENTRY_CREATED", "entry": entry("live-1")})
        applied = first.receive_json(timeout=5)
        created = second.receive_json(timeout=5)
        assert applied["type"] == "SYNC_RESPONSE" and created["type"] == "ENTRY_CREATED"
        assert created["seq"] == applied["lastSeq"]
        # Not again as a catch-up, to either socket.
        assert quiet(first) == [] and quiet(second) == []
        # And an HTTP push after it reaches both, once. Waited for, not sampled: the test client's socket
        # threads can hold a message back for a second on a loaded machine (a real server sends in ms).
        push(client, entry("e3"))
        assert first.receive_json(timeout=5)["type"] == second.receive_json(timeout=5)["type"] == "BULK_SYNC"
        assert quiet(first) == [] and quiet(second) == []
    finally:
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)


def test_a_socket_that_asked_gets_later_changes_after_its_answer(client: TestClient[Litestar]) -> None:
    push(client, entry("old"))
    ada = connect(client, ADA)
    try:
        ada.send_json({"type": "SYNC_REQUEST", "lastSeq": 0})
        answered = [ada.receive_json(timeout=5) for _ in range(2)]
        assert [m["type"] for m in answered] == ["BULK_SYNC", "SYNC_RESPONSE"]
        token = push(client, entry("new"))
        later = ada.receive_json(timeout=5)
        assert [e["id"] for e in later["entries"]] == ["new"] and later["lastSeq"] == token
        assert quiet(ada) == []
    finally:
        ada.__exit__(None, None, None)


def test_announce_publishes_one_notice_per_user_with_its_highest_seq() -> None:
    heard: list[tuple[str | None, int]] = []
    feed = LocalFeed()
    unsubscribe = feed.subscribe(lambda user, seq: heard.append((user, seq)))
    storage = object.__new__(type("Storage", (), {}))
    attach(storage, feed)
    try:
        announce(storage, [("a", 3), ("b", 2), ("a", 5), ("a", 4)])
        assert heard == [("a", 5), ("b", 2)]
        unsubscribe()
        announce(storage, [("a", 9)])
        assert heard == [("a", 5), ("b", 2)]
    finally:
        detach(storage)
    announce(storage, [("a", 10)])  # no feed: nothing, no error
