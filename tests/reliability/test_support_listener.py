"""`serve --support-port` (service/support_listener.py): the same app on a second port, from a process of
its own, on the same database; it comes up with the server or the server does not start, it is started
again if it dies while the server runs, and it never outlives the server, however the server stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADA, ADMIN, SECRET, add_users, auth
from tests.reliability.liveserver import HOST, ROOT, ServerProcess, free_port, live_server

pytestmark = pytest.mark.slow  # live servers: CI runs them, `-m "not slow"` skips them

ENTRY = {"id": "entry_support_listener_1", "timestamp": "2025-03-01T10:00:00.000Z", "duration": 30,
         "type": "practice", "instrument": "piano", "pieces": [], "techniques": [], "goalIds": [],
         "tags": [], "notes": "scales", "createdAt": "2025-03-01T10:00:00.000Z",
         "updatedAt": "2025-03-01T10:00:00.000Z"}  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    support_port = free_port()
    with live_server(tmp_path / "app.db", args=["--support-port", str(support_port)]) as running:
        add_users(running.db_path, ADA, ADMIN)
        yield running, support_port


def support_pid(server: ServerProcess) -> int:
    """The support process the server started last."""
    found = re.findall(r"support listener: \S+ \(process (\d+)\)", server.log_path.read_text())
    assert found, server.log_tail()
    return int(found[-1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_support_staff_read_on_their_port_what_a_device_pushed_on_the_other(server: tuple[ServerProcess, int]) -> None:
    running, support_port = server
    pushed = httpx.post(f"{running.base_url}/api/sync/push", json={"changes": {"entries": [ENTRY]}},
                        headers=auth(ADA, **{"X-Device-ID": "dev_supportlistener1"}), timeout=30)
    assert pushed.status_code == 200, pushed.text
    answer = httpx.get(f"http://{HOST}:{support_port}/v1/support/users/{ADA[0]}", headers=auth(ADMIN), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["progress"]["counts"]["inserted"] == 1
    # The same tokens and rules: a user is not an admin there either.
    refused = httpx.get(f"http://{HOST}:{support_port}/v1/support/users/{ADA[0]}", headers=auth(ADA), timeout=30)
    assert refused.status_code == 403
    assert running.proc is not None and support_pid(running) != running.proc.pid


def test_stopping_the_server_stops_the_support_process(server: tuple[ServerProcess, int]) -> None:
    running, support_port = server
    pid = support_pid(running)
    assert alive(pid)
    running.stop()  # SIGTERM, as systemd or docker stop sends it; returns once the server has exited
    # The server stops it in order and waits for it: gone by the time the server is.
    assert not alive(pid), "the support process outlived the server"
    assert re.search(rf"Finished server process \[{pid}\]", running.log_path.read_text()), running.log_tail()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{HOST}:{support_port}/health", timeout=2)


def test_a_killed_server_does_not_leave_its_support_process_behind(server: tuple[ServerProcess, int]) -> None:
    running, _ = server
    pid = support_pid(running)
    running.kill()  # kill -9: the server cannot stop it
    assert wait_gone(pid), "the support process outlived a killed server"


def test_a_support_port_already_taken_is_one_clear_line_and_no_server(tmp_path: Path) -> None:
    with live_server(tmp_path / "app.db") as taken:
        started = subprocess.run(
            [sys.executable, "-m", "service", "serve", "--db", str(tmp_path / "other.db"), "--host", HOST,
             "--port", str(free_port()), "--support-port", str(taken.port)],
            cwd=ROOT, env={**os.environ, "RESYNC_JWT_SECRET": SECRET}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert started.returncode == 2
    assert f"error: --support-port {taken.port}: Address already in use" in started.stderr
    assert "Uvicorn running" not in started.stderr


def test_a_support_process_that_dies_is_started_again_and_a_request_made_meanwhile_is_answered(
    server: tuple[ServerProcess, int],
) -> None:
    running, support_port = server
    first = support_pid(running)
    os.kill(first, signal.SIGKILL)  # as an out-of-memory kill would
    assert wait_gone(first)
    # The server keeps the support socket open: a connection made before the new process is up waits in
    # its backlog and is answered by the new process, not refused.
    answer = httpx.get(f"http://{HOST}:{support_port}/v1/support/users/{ADA[0]}", headers=auth(ADMIN), timeout=60)
    assert answer.status_code == 200, answer.text
    log = running.log_path.read_text()
    assert re.search(rf"support listener: process {first} exited \(code -9\)", log), running.log_tail()
    second = support_pid(running)
    assert second != first and alive(second)
    assert running.proc is not None and running.proc.poll() is None  # the devices' port never went away
    # The restarted process is the server's like the first: it stops with it.
    running.stop()
    assert not alive(second), "the restarted support process outlived the server"
