"""Limits before authentication, against the real server (issue 13.8): a request's headers may be so
large and no larger, must arrive in time, and a body may not stall; every such connection is closed.

The server runs with small limits (16 KB of headers, 1.5 s for the headers, 1.5 s of body silence) so
the timeouts are measured in seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADA, add_users, query, token_for
from tests.reliability.liveserver import HOST, ServerProcess, live_server

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
LIMITS = {"RESYNC_MAX_HEADER_KB": "16", "RESYNC_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
          "RESYNC_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
# How much later than its timeout a connection may be closed (scheduling on 2 busy CPUs).
SLACK_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path: Path = tmp_path_factory.mktemp("limits") / "app.db"
    with live_server(path, env=LIMITS) as running:
        add_users(running.db_path, ADA)
        yield running


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def ok_request(server: ServerProcess) -> bytes:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock)


def test_a_one_megabyte_header_gets_431_and_the_connection_is_closed(server: ServerProcess) -> None:
    """32 MB of headers used to be read whole; now the request line and headers are counted as they
    arrive, and past the limit the answer is 431 and the connection is closed (the rest is not read)."""
    with connect(server) as sock:
        started = time.monotonic()
        # Closed while we are still sending: refused before it was read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        answer = read_until_closed(sock)
        assert time.monotonic() - started < SLACK_S
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    with connect(server) as sock:  # many headers that add up past the limit, each small
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    assert ok_request(server).startswith(b"HTTP/1.1 200 ")  # headers under the limit are fine


def test_slow_headers_are_closed_after_the_header_timeout(server: ServerProcess) -> None:
    """Slowloris: 20 connections that send a header line every 0.3 s (each well inside any idle timeout)
    are all answered 408 and closed once the header timeout has passed since they connected; one that
    sends nothing at all is closed too. The service still answers others meanwhile."""
    closed_after: list[float] = []
    answers: list[bytes] = []
    lock = threading.Lock()

    def slow_client() -> None:
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(0.3)
            received = b""
            for i in range(100):
                try:
                    sock.sendall(b"X-Slow-%d: b\r\n" % i)
                    chunk = sock.recv(1000)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                received += chunk
                if not chunk or received:
                    break
            with lock:
                closed_after.append(time.monotonic() - started)
                answers.append(received)

    threads = [threading.Thread(target=slow_client) for _ in range(20)]
    for thread in threads:
        thread.start()
    assert ok_request(server).startswith(b"HTTP/1.1 200 ")
    with connect(server) as idle:
        started = time.monotonic()
        assert read_until_closed(idle) == b""
        idle_after = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=30)
    assert len(closed_after) == 20
    assert all(HEADER_TIMEOUT_S - 0.2 <= t <= HEADER_TIMEOUT_S + SLACK_S for t in closed_after), closed_after
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
    assert HEADER_TIMEOUT_S - 0.2 <= idle_after <= HEADER_TIMEOUT_S + SLACK_S


def test_a_stalled_body_is_closed_and_writes_nothing_while_a_slow_steady_one_is_taken(server: ServerProcess) -> None:
    """After the headers, a body that stops arriving for longer than the body timeout is closed (nothing
    written); one that keeps arriving in pieces more often than that is read to the end and stored."""
    body = b'{"changes": {"entries": [{"id": "slow-1", "timestamp": "2025-06-01T17:45:00.000Z", "duration": 25,' \
           b' "type": "practice", "instrument": "piano", "createdAt": "2025-06-01T18:00:00.000Z"}]}}'
    head = (f"POST /api/sync/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_for(ADA)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head + body[:10])
        answer = read_until_closed(sock)
        stalled_after = time.monotonic() - started
    assert answer == b"" or not answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert BODY_TIMEOUT_S - 0.2 <= stalled_after <= BODY_TIMEOUT_S + SLACK_S
    assert query(server.db_path, "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0

    with connect(server) as sock:
        sock.sendall(head)
        pieces = [body[i : i + 40] for i in range(0, len(body), 40)]
        for piece in pieces:  # about 2 s in all, each pause under the timeout
            time.sleep(BODY_TIMEOUT_S / 3)
            sock.sendall(piece)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert query(server.db_path, "SELECT entity_id FROM sync_data")[0]["entity_id"] == "slow-1"
