"""`serve --support-port`: the same app, on a second port, from a process of its own, for support staff.

Why a process: the writer's Python work holds the server process's GIL for most of a large upload, and
sqlite3 lets go of it and takes it back around every statement, so a waiting thread (the event loop, a
reader) is woken only to find it taken again; CPython forces a switch only after a whole interval with no
switch at all. Measured (#17, 200k entries in pushes of 1,000, 2 cores): a support page's reader waited
13-28 ms for the GIL around a `BEGIN` that touches nothing, and GET /v1/support/users/{id} had a p99 of
70-90 ms on the devices' port; the switch interval, a lower priority for the writer thread, the writer
yielding between statements, and one body decode fewer on the event loop each left it there. The same
GETs from a second process on the same database: p99 16.6 ms during the same ingest.

The process opens the database as every server process does (WAL: its readers never wait for the other
process's writer; its own writes, a review or a re-drive, take SQLite's write lock in turn), checks the
same tokens, and serves every route; support staff point their browsers and scripts at its port. It stops
with the server: the server stops it when it stops, and it stops itself should the server die. Should it
die while the server runs (a crash, an out-of-memory kill), the server starts another on the same socket,
which it keeps open meanwhile: connections made in the gap wait in its backlog instead of being refused.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.context import SpawnProcess
from typing import Any

from service.config import Settings

STOP_TIMEOUT_S = 15.0  # the time a graceful stop gets (requests in flight finish) before SIGKILL
START_TIMEOUT_S = 60.0  # the time it gets to open the database and answer GET /health
# Waits before restarting a support process that died, doubled after each restart that did not come up or
# did not stay up for RESTART_RESET_S: a process that dies at once is not restarted in a tight loop.
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
RESTART_RESET_S = 60.0


class SupportListenerFailed(RuntimeError):
    """The support process did not come up."""


# Sockets cross to a spawned process by pickling (as uvicorn's own workers get theirs).
multiprocessing.allow_connection_pickling()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port already taken is the caller's error, at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def start(settings: Settings, sock: socket.socket, server_options: dict[str, Any]) -> SpawnProcess:
    """The support process, serving the app on `sock`, once it answers GET /health (SupportListenerFailed
    if it stops or does not answer in time: a server whose support port is dead must not look healthy)."""
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(settings, sock, server_options), name="support-listener", daemon=False
    )
    process.start()
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers_health(host, port):
        if not process.is_alive():
            raise SupportListenerFailed(f"the support process stopped (exit code {process.exitcode}); its log says why")
        if time.monotonic() > deadline:
            stop(process)
            raise SupportListenerFailed(f"the support process did not answer GET /health in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    return process


class SupportListener:
    """The support process, kept running while the server runs: started once it answers GET /health, and
    started again on the same socket if it dies before `stop()`. Restarts are told on stderr."""

    def __init__(self, settings: Settings, sock: socket.socket, server_options: dict[str, Any]) -> None:
        self._settings, self._sock, self._options = settings, sock, server_options
        self.process = start(settings, sock, server_options)
        self._url = "http://{}:{}".format(*sock.getsockname()[:2])
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # `process` is replaced by the watcher and stopped by `stop()`
        self.restarts = 0
        self._watcher = threading.Thread(target=self._watch, name="support-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        delay = RESTART_DELAY_S
        while not self._stopping.is_set():
            process = self.process
            started = time.monotonic()
            multiprocessing.connection.wait([process.sentinel])  # stop() ends it too: the same wake-up
            if self._stopping.is_set():
                return
            process.join()
            if time.monotonic() - started > RESTART_RESET_S:
                delay = RESTART_DELAY_S
            print(f"support listener: process {process.pid} exited (code {process.exitcode}); starting another "
                  f"in {delay:g} s", file=sys.stderr, flush=True)
            while not self._stopping.wait(delay):
                delay = min(delay * 2, RESTART_DELAY_MAX_S)
                try:
                    replacement = start(self._settings, self._sock, self._options)
                except (SupportListenerFailed, OSError) as exc:  # OSError: the process could not be spawned
                    print(f"support listener: {exc}; trying again in {delay:g} s", file=sys.stderr, flush=True)
                    continue
                with self._lock:
                    if self._stopping.is_set():  # stop() came while it started: it stops here
                        stop(replacement)
                        return
                    self.process = replacement
                    self.restarts += 1
                print(f"support listener: {self._url} (process {replacement.pid}); restarted", file=sys.stderr,
                      flush=True)
                break

    def stop(self) -> None:
        """Stops the support process in order (and any restart on the way), then closes the socket."""
        self._stopping.set()  # before the process ends, so the watcher, woken by its end, does not restart it
        with self._lock:
            stop(self.process)
        self._watcher.join(STOP_TIMEOUT_S + START_TIMEOUT_S)
        self._sock.close()


def _answers_health(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: SpawnProcess) -> None:
    """A graceful stop (uvicorn finishes what is in flight), then SIGKILL if it does not come."""
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(STOP_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()


def _serve(settings: Settings, sock: socket.socket, server_options: dict[str, Any]) -> None:
    """The child's body."""
    import uvicorn

    from service.app import create_app
    from service.http_server import LimitedHttpToolsProtocol
    from service.memory import freeze_startup_objects

    # Out of the server's process group: a Ctrl-C at the terminal reaches the server only, which stops this
    # process in order (one signal: a second one makes uvicorn drop the requests in flight).
    with contextlib.suppress(OSError):
        os.setpgrp()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_stop_with, args=(parent.sentinel,), name="parent-watch", daemon=True).start()
    LimitedHttpToolsProtocol.limits = settings.server_limits
    app = create_app(settings)
    freeze_startup_objects()
    config = uvicorn.Config(app, http=LimitedHttpToolsProtocol, **server_options)
    uvicorn.Server(config).run(sockets=[sock])


def _stop_with(parent_sentinel: int) -> None:
    """The server died without stopping this process (kill -9, an out-of-memory kill): stop gracefully."""
    multiprocessing.connection.wait([parent_sentinel])
    os.kill(os.getpid(), signal.SIGTERM)
