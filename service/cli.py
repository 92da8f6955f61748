"""`python -m service COMMAND`: the one entry point.

commands:
  serve            run the HTTP service
  replay           replay exported device files through the pipeline
  redrive          take quarantined records through the pipeline again (as the support API's re-drive)
  renormalise      re-normalise stored rows from their raw records under the current rules
  create-user      add a user to the app's users table and print a token for them
  token            issue an app token for a user
  lint-migrations  find migrations that would cascade-delete app data
  export-d1        write the recovered rows as SQL files for wrangler d1 execute
  postgres-setup   print the SQL that sets up PostgreSQL for the service (roles, app tables, grants)
  openapi          write the OpenAPI document

Every command that takes --db defaults to RESYNC_DB (or ./data/app.db).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec

from service import changefeed
from service.config import DEFAULT_DB_PATH, ServerLimits, Settings
from service.domain.accounts import Role
from service.memory import freeze_startup_objects, limit_malloc_arenas, tune_garbage_collector
from service.store import (
    DATABASE_URL_ENV,
    UnsupportedDatabaseUrl,
    add_database_url_argument,
    database_url_from_env,
    open_storage,
)
from service.store.interface import NotAnAppDatabase, Storage, StorageUnavailable, UserExists
from service.store.rows import NewUser
from service.store.sqlite.dbfile import INIT_FLAG, DatabaseFileError, check_database_file
from service.tokens import TOKEN_LIFETIME

DEMO_USER_ID = "user_demoDEMOdemoDEMOdemo0"
DEMO_EMAIL = "demo@example.com"
# `serve --dev` without RESYNC_JWT_SECRET keeps its secret here, next to the database, so that
# `create-user` and `token` in another terminal sign with the same one.
DEV_SECRET_FILE = ".resync-dev-secret"
EXIT_USAGE = 2
EXIT_FAILURE = 1

SERVE_EPILOG = """environment:
  RESYNC_JWT_SECRET    the app's HS256 secret (required; --dev keeps a dev secret next to the database instead)
  RESYNC_DB            app database file (default ./data/app.db); --db overrides it
  RESYNC_HOST, RESYNC_PORT, RESYNC_WORKERS, RESYNC_SUPPORT_PORT   defaults of --host, --port, --workers
                       and --support-port
  RESYNC_MAX_BODY_MB   larger request bodies get 413 (default 64)
  RESYNC_CORS_ORIGINS  comma-separated origins allowed to call with credentials
  RESYNC_MAX_HEADER_KB, RESYNC_HEADER_TIMEOUT_S, RESYNC_BODY_TIMEOUT_S, RESYNC_KEEP_ALIVE_S,
  RESYNC_MAX_CONNECTIONS   defaults of the limits below"""


def _db_path(args: argparse.Namespace) -> str:
    return str(getattr(args, "db", None) or os.environ.get("RESYNC_DB", DEFAULT_DB_PATH))


async def _open(db_path: str) -> Storage:
    return await open_storage(db_path, url=database_url_from_env())


def _serve(args: argparse.Namespace) -> int:
    from service.http_server import LimitedHttpToolsProtocol

    env = Settings.from_env()
    db_path = _db_path(args)
    check_database_file(db_path, init_app_schema=args.init_app_schema)
    given = {name: getattr(args, name) for name in ServerLimits.__struct_fields__ if getattr(args, name) is not None}
    limits = msgspec.structs.replace(env.server_limits, **given)
    settings = msgspec.structs.replace(env, db_path=db_path, server_limits=limits)
    if not settings.jwt_secret:
        if not args.dev:
            print("error: set RESYNC_JWT_SECRET to the app's JWT secret (or use --dev to try the service)",
                  file=sys.stderr)
            return EXIT_USAGE
        secret_file = _keep_dev_secret(db_path)
        settings = msgspec.structs.replace(settings, jwt_secret=secret_file.read_text().strip())
        print(f"dev mode: RESYNC_JWT_SECRET is not set: signing with the dev secret kept in {secret_file} "
              "(create-user and token find it there); elsewhere:", file=sys.stderr)
        print(f'  export RESYNC_JWT_SECRET="$(cat {secret_file})"', file=sys.stderr)
    if args.dev:
        token = asyncio.run(_create_demo_user(settings))
        print(f"dev mode: database {settings.db_path}", file=sys.stderr)
        print(f"dev mode: demo user {DEMO_USER_ID} <{DEMO_EMAIL}> (role admin)", file=sys.stderr)
        print(f"dev mode: token (valid 30 days):\n{token}", file=sys.stderr)
    else:
        asyncio.run(_open_and_close(settings.db_path))  # a database it cannot use: one line, before uvicorn
    # Header size and read timeouts before any authentication (see service/http_server.py).
    os.environ.update(limits.to_env())
    LimitedHttpToolsProtocol.limits = limits
    server_options: dict[str, Any] = {
        "host": args.host, "port": args.port, "log_level": "info",
        "timeout_keep_alive": limits.keep_alive_s, "limit_concurrency": limits.max_connections,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }
    support = None
    if args.support_port is not None:
        from service import support_listener

        try:
            sock = support_listener.bind(args.host, args.support_port)
        except OSError as exc:
            print(f"error: --support-port {args.support_port}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            # It keeps the socket open while the server runs: a support process that dies is started again on it.
            support = support_listener.SupportListener(settings, sock, {**server_options, "port": args.support_port})
        except support_listener.SupportListenerFailed as exc:
            sock.close()
            print(f"error: --support-port {args.support_port}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"support listener: http://{args.host}:{args.support_port} (process {support.process.pid}); the "
              "same routes, for support staff", file=sys.stderr)
        # uvicorn stops on SIGTERM, then raises it again for the usual exit: by default that would end this
        # process at once, before the `finally` below stops the support process in order.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _run_uvicorn(args, settings, server_options)
    finally:
        if support is not None:
            support.stop()
    return 0


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _run_uvicorn(args: argparse.Namespace, settings: Settings, server_options: dict[str, Any]) -> None:
    import uvicorn

    from service.app import create_app
    from service.http_server import LimitedHttpToolsProtocol

    if args.workers > 1:
        # Each worker process opens its own writer; SQLite's BEGIN IMMEDIATE serialises them, so uploads
        # stay one transaction each while normalisation runs on every core.
        os.environ.update(
            RESYNC_DB=settings.db_path,
            RESYNC_JWT_SECRET=settings.jwt_secret,
            RESYNC_MAX_BODY_MB=str(settings.max_body_bytes / (1024 * 1024)),
            RESYNC_SERVER_PROCESSES=str(args.workers),  # their normalising pools share the cores
        )
        from service.metrics import multiprocess_directory

        with multiprocess_directory():  # every worker's metrics in one scrape (see service/metrics.py)
            uvicorn.run("service.app:create_app_from_env", factory=True, workers=args.workers,
                        http="service.http_server:LimitedHttpToolsProtocol", **server_options)
    else:
        app = create_app(settings)
        freeze_startup_objects()
        uvicorn.run(app, http=LimitedHttpToolsProtocol, **server_options)


async def _open_and_close(db_path: str) -> None:
    await (await _open(db_path)).close()


def dev_secret_path(db_path: str) -> Path:
    return Path(db_path).absolute().parent / DEV_SECRET_FILE


def _keep_dev_secret(db_path: str) -> Path:
    """The dev secret next to the database: made once (mode 0600), then reused by every command."""
    path = dev_secret_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return path


def _signing_secret(db_path: str) -> tuple[str | None, str]:
    """RESYNC_JWT_SECRET, else the dev secret `serve --dev` keeps next to the database; and where from."""
    secret = os.environ.get("RESYNC_JWT_SECRET")
    if secret:
        return secret, "RESYNC_JWT_SECRET"
    path = dev_secret_path(db_path)
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept, f"the dev secret in {path}"
    return None, ""


def _no_secret_reason(db_path: str) -> str:
    return (f"RESYNC_JWT_SECRET is not set and there is no dev secret at {dev_secret_path(db_path)} "
            "(`serve --dev` keeps one there)")


async def _create_demo_user(settings: Settings) -> str:
    from service.tokens import issue_token
    from service.usecases.users import add_user

    db = await _open(settings.db_path)
    try:
        await add_user(db, NewUser(DEMO_USER_ID, DEMO_EMAIL, "Demo", Role.ADMIN), if_absent=True)
    finally:
        await db.close()
    return issue_token(settings.jwt_secret, DEMO_USER_ID, DEMO_EMAIL)


def _create_user(args: argparse.Namespace) -> int:
    """Add a user to the app's users table (as the app would on sign-up) and print a token for it."""
    from service.tokens import issue_token
    from service.usecases.users import add_user

    user_id = args.id or f"user_{secrets.token_urlsafe(16)[:21]}"
    if not re.fullmatch(r"user_[A-Za-z0-9_-]{21}", user_id):
        print("error: --id must be 'user_' followed by 21 characters of A-Z a-z 0-9 _ -", file=sys.stderr)
        return EXIT_USAGE
    db_path = _db_path(args)
    check_database_file(db_path, init_app_schema=args.init_app_schema)

    async def insert() -> None:
        db = await _open(db_path)
        try:
            await add_user(db, NewUser(user_id, args.email, args.name, Role(args.role)))
        finally:
            await db.close()

    try:
        asyncio.run(insert())
    except UserExists as exc:
        print(f"error: cannot add {args.email}: {exc}", file=sys.stderr)
        return 1
    print(user_id)
    secret, source = _signing_secret(db_path)
    if secret:
        print(issue_token(secret, user_id, args.email))
        if source != "RESYNC_JWT_SECRET":
            print(f"token signed with {source}", file=sys.stderr)
    else:
        print(f"no token printed: {_no_secret_reason(db_path)}; set it, then run "
              f"`python -m service token {user_id} {args.email}`", file=sys.stderr)
    print("if the replay quarantined records for this user before they existed, bring them in with "
          f"`python -m service redrive --user {user_id}`", file=sys.stderr)
    return 0


def _issue_token(args: argparse.Namespace) -> int:
    from service.tokens import issue_token

    db_path = _db_path(args)
    secret, source = _signing_secret(db_path)
    if not secret:
        print(f"error: {_no_secret_reason(db_path)}", file=sys.stderr)
        return EXIT_USAGE
    if source != "RESYNC_JWT_SECRET":
        print(f"token signed with {source}", file=sys.stderr)
    print(issue_token(secret, args.user_id, args.email, lifetime=args.expires_in))
    return 0


def _duration(text: str) -> timedelta:
    """`90`, `90s`, `45m`, `12h`, `30d`: how long a token is valid."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError("must be a positive duration: seconds, or a number with s, m, h or d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return timedelta(seconds=int(match[1]) * unit)


def _redrive(args: argparse.Namespace) -> int:
    """`redrive`: the support API's re-drive (`service.usecases.redrive.redrive_user`) for one user, or everyone."""
    db_path = _db_path(args)
    check_database_file(db_path, must_exist=True, init_app_schema=args.init_app_schema)
    try:
        done = asyncio.run(_redrive_users(db_path, args))
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        from service.workers import close_shared_pool

        close_shared_pool()
    if args.json:
        print(json.dumps({"users": done}, indent=2))
    elif not done:
        print("nothing to re-drive: no quarantined record waits for an existing user")
    for user in [] if args.json else done:
        print(f"{user['user_id']}: re-drove {user['redriven']:,} records: {user['resolved']:,} went in, "
              f"{user['still_quarantined']:,} still quarantined" + (f" ({user['error']})" if user["error"] else ""))
    return 1 if any(user["error"] for user in done) else 0


async def _redrive_users(db_path: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from service.domain.records import AMBIGUOUS_EMAIL
    from service.usecases.redrive import NoSuchUser, RedriveRaced, redrive_user, users_to_redrive
    from service.usecases.users import owner_for
    db = await _open(db_path)
    announcing = changefeed.publishing(db)  # on PostgreSQL, the replicas' sockets hear what it writes
    await announcing.__aenter__()
    try:
        if args.all:
            user_ids = await users_to_redrive(db)
        elif args.email is not None:
            owner = await owner_for(db, None, args.email)
            if owner.user is None:
                several = f" ({owner.detail}; give --user)" if owner.problem is AMBIGUOUS_EMAIL else ""
                raise LookupError(f"no user has the email {args.email}{several}")
            user_ids = [owner.user.id]
        else:
            user_ids = [args.user]
        done: list[dict[str, Any]] = []
        for user_id in user_ids:
            try:
                outcome = await redrive_user(db, user_id)
            except NoSuchUser:
                raise LookupError(f"no user {user_id}: create the user first, then re-drive") from None
            except RedriveRaced:
                done.append({"user_id": user_id, "redriven": 0, "resolved": 0, "still_quarantined": 0,
                             "error": "another re-drive took the same records first; nothing written, run it again"})
                continue
            done.append({"user_id": outcome.user_id, "redriven": outcome.redriven, "resolved": outcome.resolved,
                         "still_quarantined": outcome.still_quarantined, "error": None})
        return done
    finally:
        try:
            await announcing.__aexit__(None, None, None)
        finally:
            await db.close()


def _openapi(args: argparse.Namespace) -> int:
    from service.openapi import render_openapi

    text = render_openapi()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _lint_migrations(args: argparse.Namespace) -> int:
    from service.migrations_lint import run

    return run(args)


def _replay(args: argparse.Namespace) -> int:
    from service.replay import run

    return run(args)


def _renormalise(args: argparse.Namespace) -> int:
    from service.renormalise import run

    return run(args)


def _export_d1(args: argparse.Namespace) -> int:
    from service.d1_export import run

    return run(args)


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    """--db (default RESYNC_DB) and the flag that allows adding the app schema to another SQLite file."""
    parser.add_argument("--db", metavar="PATH", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    add_database_url_argument(parser)
    parser.add_argument(INIT_FLAG, action="store_true",
                        help="add the app's tables to a SQLite file that holds other tables but not the app's "
                        "(refused without it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service", epilog=SERVE_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_db_arguments(serve)
    serve.add_argument("--host", default=os.environ.get("RESYNC_HOST", "127.0.0.1"),
                       help="address to listen on (env RESYNC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("RESYNC_PORT", "8000")),
                       help="port (env RESYNC_PORT, default 8000)")
    serve.add_argument("--dev", action="store_true",
                       help="without RESYNC_JWT_SECRET, sign with a dev secret kept next to the database "
                       f"({DEV_SECRET_FILE}, mode 0600); create a demo admin user and print a token for it")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("RESYNC_WORKERS", "1")),
                       help="worker processes (env RESYNC_WORKERS, default 1; one per core speeds up large uploads)")
    support_port = os.environ.get("RESYNC_SUPPORT_PORT")
    serve.add_argument("--support-port", type=int, default=int(support_port) if support_port else None,
                       help="also serve on this port, from a process of its own, for support staff: their pages "
                       "and API stay quick while large uploads are written (env RESYNC_SUPPORT_PORT; "
                       "default: none)")
    limits = serve.add_argument_group("limits before authentication")
    limits.add_argument("--max-header-kb", type=lambda v: int(float(v) * 1024), dest="max_header_bytes",
                        help="request line and headers larger than this get 431 (RESYNC_MAX_HEADER_KB, default 32)")
    limits.add_argument("--header-timeout", type=float, dest="header_timeout_s",
                        help="seconds a client has to send a request's headers (RESYNC_HEADER_TIMEOUT_S, default 10)")
    limits.add_argument("--body-timeout", type=float, dest="body_timeout_s",
                        help="seconds a request body may pause (RESYNC_BODY_TIMEOUT_S, default 30)")
    limits.add_argument("--keep-alive", type=int, dest="keep_alive_s",
                        help="seconds an idle connection is kept between requests (RESYNC_KEEP_ALIVE_S, default 5)")
    limits.add_argument("--max-connections", type=int, dest="max_connections",
                        help="connections and requests at once; beyond: 503 (RESYNC_MAX_CONNECTIONS, default 1000)")
    serve.set_defaults(run=_serve)

    replay = commands.add_parser("replay", help="replay exported device files through the pipeline")
    from service.replay import add_arguments as add_replay_arguments

    add_replay_arguments(replay)
    replay.set_defaults(run=_replay)

    redrive = commands.add_parser(
        "redrive", help="take quarantined records through the pipeline again (e.g. once their user exists)",
        description="The same re-drive as POST /v1/support/users/{id}/redrive: the user's quarantined records, "
        "and those kept for an unknown owner whose email is the user's, go through the pipeline again.")
    add_db_arguments(redrive)
    who = redrive.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="users.id of the user")
    who.add_argument("--email", metavar="ADDR", help="the user's email")
    who.add_argument("--all", action="store_true", help="every user with quarantined records waiting")
    redrive.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    redrive.set_defaults(run=_redrive)

    create_user = commands.add_parser("create-user", help="add a user to the app's users table and print a token")
    add_db_arguments(create_user)
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--id", help="users.id (default: a new user_ id)")
    create_user.add_argument("--name", default=None, help="display name")
    create_user.add_argument("--role", default=Role.USER.value, choices=[r.value for r in Role])
    create_user.set_defaults(run=_create_user)

    token = commands.add_parser("token", help="issue an app token (RESYNC_JWT_SECRET, or the dev secret)")
    token.add_argument("user_id")
    token.add_argument("email")
    token.add_argument("--db", metavar="PATH",
                       help="where `serve --dev` keeps its dev secret, next to this database (env RESYNC_DB)")
    token.add_argument("--expires-in", metavar="DURATION", type=_duration, default=TOKEN_LIFETIME,
                       help="how long the token is valid: seconds, or 45m, 12h, 30d (default 30d)")
    token.set_defaults(run=_issue_token)

    renormalise = commands.add_parser(
        "renormalise", help="re-normalise stored rows from their raw records under the current rules"
    )
    from service.renormalise import add_arguments as add_renormalise_arguments

    add_renormalise_arguments(renormalise)
    renormalise.set_defaults(run=_renormalise)

    lint = commands.add_parser("lint-migrations", help="find migrations that would cascade-delete app data")
    from service.migrations_lint import add_arguments

    add_arguments(lint)
    lint.set_defaults(run=_lint_migrations)

    export = commands.add_parser("export-d1", help="write the recovered rows as SQL files for wrangler d1 execute")
    from service.d1_export import add_arguments as add_export_d1_arguments

    add_export_d1_arguments(export)
    export.set_defaults(run=_export_d1)

    postgres = commands.add_parser(
        "postgres-setup", help="print the SQL that sets up PostgreSQL for the service: roles, app tables, grants")
    from service.store.postgres import setup as postgres_setup

    postgres_setup.add_arguments(postgres)
    postgres.set_defaults(run=postgres_setup.run)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--out", default="openapi/openapi.json", help="file to write, or - for stdout")
    openapi.set_defaults(run=_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread starts
    tune_garbage_collector()
    args = build_parser().parse_args(argv)
    if getattr(args, "database_url", None):
        # Every command (and every server worker process) opens the engine the URL names.
        os.environ[DATABASE_URL_ENV] = args.database_url
    try:
        result: int = args.run(args)
    except (DatabaseFileError, NotAnAppDatabase, StorageUnavailable, UnsupportedDatabaseUrl) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as error:
        # A database that passed the checks and still failed (a lock, a full disk): one line, not a traceback.
        print(f"error: the database at {_db_path(args)} cannot be used: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result


__all__ = ["build_parser", "main"]
