"""Processes and databases for the benchmark: the real server in a subprocess, a measured child
process (wall time and peak RSS), and fresh app databases with the benchmark's users."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from workload import BenchUser

from service.store.sqlite.schema import APP_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel kill the child if the benchmark itself is killed."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def hook() -> None:  # runs in the child, between fork and exec
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


_PRE_EXEC = _die_with_parent()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go within STOP_TIMEOUT_S. Only ever our own child."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- databases ----------------------------------------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """A connection like the service's: WAL, foreign keys on, synchronous=FULL, autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def create_app_db(path: Path, users: Sequence[BenchUser]) -> None:
    """A fresh app database (the service's own APP_SCHEMA) holding `users`, as the rebuilt `users` table
    would after the incident. The service adds its `recovery_` tables when it opens the file."""
    conn = connect(path)
    try:
        conn.executescript(APP_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)",
            [(u.id, u.email, f"Bench {u.index}", u.role) for u in users],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


# --- the server -------------------------------------------------------------------------------------


class ServerProcess:
    """`python -m service serve` on a free loopback port, on the SQLite file `db` or (`database_url`) a
    PostgreSQL database; `with` stops it whatever happens."""

    def __init__(
        self, db: Path | None, secret: str, log: Path, database_url: str | None = None, *,
        support_listener: bool = False, launcher: list[str] | None = None,
    ) -> None:
        self.db = db
        # What runs instead of `-m service` (its arguments follow): a script that instruments the server.
        self.launcher = launcher or ["-m", "service"]
        self.database_url = database_url
        self.secret = secret
        self.log = log
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        # `serve --support-port`: the support listener, a process of its own (service/support_listener.py)
        self.support_port = free_port() if support_listener else None
        self.support_url = f"http://{HOST}:{self.support_port}" if support_listener else None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "RESYNC_JWT_SECRET": self.secret}
        where = ["--database-url", self.database_url] if self.database_url else ["--db", str(self.db)]
        cmd = [sys.executable, *self.launcher, "serve", *where, "--host", HOST, "--port", str(self.port)]
        if self.support_port is not None:
            cmd += ["--support-port", str(self.support_port)]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_PRE_EXEC,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health within {STARTUP_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- a measured child process -----------------------------------------------------------------------


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    peak_rss_bytes: int  # the child's own high-water mark (VmHWM), sampled while it runs
    workers_peak_rss_bytes: int  # the largest high-water mark among its own children (worker processes)
    stdout: str
    stderr: str


# How often a measured child's high-water mark is read. VmHWM only grows, so the last reading before the
# child exits holds its peak (short of whatever it allocates in its final interval).
RSS_SAMPLE_INTERVAL_S = 0.1


def run_measured(cmd: Sequence[str], out_dir: Path, name: str) -> ChildRun:
    """Run `cmd` to its end; its output goes to files (no pipe to fill).

    Its peak RSS is read from /proc while it runs, not from wait4: the child is forked from this process,
    and wait4's ru_maxrss keeps the high-water mark of the forked copy of the (large) benchmark process
    from before the exec, which is not the service's memory at all."""
    stdout_path, stderr_path = out_dir / f"{name}.stdout", out_dir / f"{name}.stderr"
    peak = workers_peak = 0
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_PRE_EXEC,
        )
        try:
            while True:
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid != 0:
                    break
                peak = max(peak, _high_water_mark(proc.pid))
                workers_peak = max([workers_peak, *map(_high_water_mark, _children(proc.pid))])
                time.sleep(RSS_SAMPLE_INTERVAL_S)
        except BaseException:
            stop_process(proc)
            raise
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    return ChildRun(
        returncode=proc.returncode,
        seconds=seconds,
        peak_rss_bytes=peak,
        workers_peak_rss_bytes=workers_peak,
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )


def _high_water_mark(pid: int) -> int:
    """VmHWM of a running process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as children:
            return [int(child) for child in children.read().split()]
    except (OSError, ValueError):
        return []


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 < pct <= 100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
