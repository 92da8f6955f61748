"""The support process's keeper (service/support_listener.py `SupportListener`): a support process that dies
while the server runs is started again, after a wait that grows while the restarts fail, and `stop()` ends
both the process and any restart on the way. The processes here are stand-ins (a sleeping child); the live
server's own support process is tested in tests/reliability/test_support_listener.py."""

from __future__ import annotations

import multiprocessing
import re
import socket
import time
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from typing import Any

import pytest

from service import support_listener
from service.config import Settings
from service.support_listener import SupportListener, SupportListenerFailed


def _child(seconds: float) -> SpawnProcess:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(seconds,), daemon=True)
    process.start()
    return process


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    listening = socket.create_server(("127.0.0.1", 0))
    yield listening
    listening.close()


def _wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_process_that_dies_is_started_again_and_failed_starts_wait_longer_each_time(
    monkeypatch: pytest.MonkeyPatch, sock: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(support_listener, "RESTART_DELAY_S", 0.01)
    outcomes: list[float | None] = [0.2, None, None, 60.0]  # exits soon; two starts fail; stays up
    started: list[SpawnProcess] = []

    def fake_start(settings: Settings, given: socket.socket, options: dict[str, Any]) -> SpawnProcess:
        assert given is sock  # every process serves the one socket the server keeps
        seconds = outcomes.pop(0)
        if seconds is None:
            raise SupportListenerFailed("the support process stopped (exit code 1)")
        started.append(_child(seconds))
        return started[-1]

    monkeypatch.setattr(support_listener, "start", fake_start)
    keeper = SupportListener(Settings(db_path=":memory:", jwt_secret="x" * 32), sock, {})
    try:
        _wait_for(lambda: keeper.restarts == 1)
        assert keeper.process is started[1] and keeper.process.is_alive()
        err = capsys.readouterr().err
        assert re.search(rf"process {started[0].pid} exited \(code 0\); starting another in 0.01 s", err), err
        assert [float(d) for d in re.findall(r"trying again in ([\d.]+) s", err)] == [0.02, 0.04]
        assert f"(process {started[1].pid}); restarted" in err
    finally:
        keeper.stop()
    assert not started[1].is_alive()
    assert sock.fileno() == -1  # the keeper owns the socket from then on, and closes it


def test_stop_ends_a_restart_loop_that_never_succeeds(
    monkeypatch: pytest.MonkeyPatch, sock: socket.socket
) -> None:
    monkeypatch.setattr(support_listener, "RESTART_DELAY_S", 0.01)
    attempts: list[int] = []

    def fake_start(settings: Settings, given: socket.socket, options: dict[str, Any]) -> SpawnProcess:
        attempts.append(1)
        if len(attempts) > 1:
            raise SupportListenerFailed("the support process stopped (exit code 1)")
        return _child(0.0)

    monkeypatch.setattr(support_listener, "start", fake_start)
    keeper = SupportListener(Settings(db_path=":memory:", jwt_secret="x" * 32), sock, {})
    _wait_for(lambda: len(attempts) >= 3)
    began = time.monotonic()
    keeper.stop()
    assert time.monotonic() - began < 5
    tried = len(attempts)
    time.sleep(0.3)
    assert len(attempts) == tried  # no start after stop()
