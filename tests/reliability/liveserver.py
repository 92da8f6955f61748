"""The real service in a subprocess (`python -m service serve`) on a free loopback port.

`live_server()` starts it, waits until `GET /health` answers 200 and always stops it on the way out,
whatever happens in between (a failing assertion, a timeout, Ctrl-C): no server outlives its test.
On Linux the child also gets `PR_SET_PDEATHSIG`, so even a test process that is killed outright takes
its server with it. `ServerProcess.kill()` is a `kill -9` for the crash tests; `start()` brings the
server back on the same database (and, when it is free, the same port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from tests.conftest import SECRET

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later; `start` retries if taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook asking the kernel to SIGKILL the server when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the hook runs between fork and exec
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


_DIE_WITH_PARENT = _parent_death_signal()


class ServerFailed(RuntimeError):
    """The server did not come up (or died); the message carries the tail of its log."""


class ServerProcess:
    """One service process on `db_path`; started, killed and restarted by the tests."""

    def __init__(self, db_path: str | os.PathLike[str], log_path: str | os.PathLike[str], *,
                 secret: str = SECRET, env: dict[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.db_path = str(db_path)
        self.extra_args = list(args)  # more `serve` options, e.g. ["--workers", "2"]
        self.log_path = Path(log_path)
        self.secret = secret
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- lifecycle --------------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the process (does not wait for it to be ready). Call from the main thread: the
        parent-death signal is tied to the thread that forks."""
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        assert threading.current_thread() is threading.main_thread()
        # The service's own settings come from this test only, never from the environment of the run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESYNC_")}
        env.update({**self.extra_env, "RESYNC_JWT_SECRET": self.secret})
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"---- start {self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--db", self.db_path, "--host", HOST,
             "--port", str(self.port), *self.extra_args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_DIE_WITH_PARENT,
        )
        self.starts += 1

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerFailed(f"server exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServerFailed(f"no healthy answer within {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    async def wait_ready_async(self, limit_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.base_url}/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServerFailed(f"no healthy answer within {limit_s}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def start(self, *, attempts: int = 3) -> None:
        """Spawn and wait until healthy; when the port was taken meanwhile, try again on another."""
        for attempt in range(attempts):
            self.spawn()
            try:
                self.wait_ready()
                return
            except ServerFailed:
                self.stop()
                if attempt == attempts - 1 or "address already in use" not in self.log_tail().lower():
                    raise
                self.port = free_port()

    async def start_async(self, *, attempts: int = 3) -> None:
        """`start` without blocking the event loop (for restarts while clients keep sending). The same
        port when it is free, so clients simply reconnect; another one (`base_url`) if it was taken."""
        for attempt in range(attempts):
            self.spawn()
            try:
                await self.wait_ready_async()
                return
            except ServerFailed:
                self.stop()
                if attempt == attempts - 1 or "address already in use" not in self.log_tail().lower():
                    raise
                self.port = free_port()

    def kill(self) -> None:
        """`kill -9`: no shutdown, no lifespan, no flush; whatever was in flight is cut off."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_log()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL; always reaps the process."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def live_server(
    db_path: str | os.PathLike[str], *, log_path: str | os.PathLike[str] | None = None, secret: str = SECRET,
    env: dict[str, str] | None = None, args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """A running, healthy server on `db_path`; stopped (and reaped) however the block ends."""
    log = Path(log_path) if log_path is not None else Path(db_path).with_suffix(".server.log")
    server = ServerProcess(db_path, log, secret=secret, env=env, args=args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
