"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, loopback and a unix socket in
that folder only, a free port, stopped (and its folder removed) by `stop`.

`scripts/test` starts one (`python -m tests.pgserver start`) and exports its superuser URL as
RESYNC_TEST_POSTGRES_URL; without that variable the test session starts one itself (tests/conftest.py).
PostgreSQL refuses to run as root, so under root (CI) the server runs as the unprivileged `nobody`.

    python -m tests.pgserver start        prints `URL DIR` (the server's superuser URL and its folder)
    python -m tests.pgserver stop DIR
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Tests want speed, not durability: a crash of the test server loses nothing that matters.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or the server would not start (the message says which)."""


@dataclass(frozen=True)
class Server:
    url: str  # the superuser's, over loopback TCP
    folder: Path  # data/, the socket and the log; removed by `stop`
    bin_dir: Path


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/N/bin (newest)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: `nobody` under root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _run(argv: list[str], run_as: tuple[int, int] | None, log: Path | None = None) -> None:
    kwargs: dict[str, object] = {}
    if run_as is not None:
        kwargs = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    if run_as is not None:
        env["HOME"] = "/"
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=False, cwd="/", timeout=START_TIMEOUT_S,
        **kwargs,  # type: ignore[arg-type]
    )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        raise PostgresUnavailable(
            f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{tail}".strip()
        )


def start(*, durable: bool = False) -> Server:
    """A new server on a free loopback port (its superuser `postgres`, a random password), C locale
    (text compares byte by byte and LOWER changes ASCII only, as in SQLite)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
    run_as = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="resync-pg-"))
    try:
        password = secrets.token_urlsafe(18)
        (folder / "pw").write_text(password + "\n")
        if run_as is not None:
            os.chown(folder, *run_as)
            os.chown(folder / "pw", *run_as)
        data = folder / "data"
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(folder / "pw"),
              "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
              "--no-sync"], run_as)
        (folder / "pw").unlink()
        settings = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{folder}'",
                    "max_connections": "300", "log_min_messages": "warning"}
        if not durable:
            settings.update(FAST_SETTINGS)
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        log = folder / "server.log"
        for attempt in range(3):  # another process may take the free port between our look and the bind
            port = _free_port()
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
                      "-o", f"-p {port}", "start"], run_as, log)
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        return Server(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", folder, bin_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def stop(folder: Path, bin_dir: Path | None = None) -> None:
    """Stop the server kept in `folder` (fast shutdown) and remove the folder."""
    bin_dir = bin_dir or find_bin_dir()
    data = folder / "data"
    try:
        if bin_dir is not None and (data / "postmaster.pid").exists():
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], _run_as())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        try:
            server = start(durable="--durable" in argv)
        except PostgresUnavailable as error:
            print(f"tests.pgserver: {error}", file=sys.stderr)
            return 1
        print(server.url, server.folder)
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        stop(Path(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
