"""`python -m service ...`: the one entry point (serve, replay, renormalise, lint-migrations, export-d1, openapi)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

from service.config import DEFAULT_DB_PATH, Settings
from service.memory import freeze_startup_objects, limit_malloc_arenas, tune_garbage_collector

DEMO_USER_ID = "user_demoDEMOdemoDEMOdemo0"
DEMO_EMAIL = "demo@example.com"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    env = Settings.from_env()
    settings = Settings(
        db_path=args.db or env.db_path,
        jwt_secret=env.jwt_secret,
        max_body_bytes=env.max_body_bytes,
        cors_origins=env.cors_origins,
    )
    if not settings.jwt_secret:
        if not args.dev:
            print("error: set RESYNC_JWT_SECRET to the app's JWT secret (or use --dev to try the service)",
                  file=sys.stderr)
            return 2
        settings = Settings(settings.db_path, secrets.token_urlsafe(32), settings.max_body_bytes,
                            settings.cors_origins)
    if args.dev:
        token = asyncio.run(_create_demo_user(settings))
        print(f"dev mode: database {settings.db_path}", file=sys.stderr)
        print(f"dev mode: demo user {DEMO_USER_ID} <{DEMO_EMAIL}> (role admin)", file=sys.stderr)
        print(f"dev mode: token (valid 30 days):\n{token}", file=sys.stderr)
    if args.workers > 1:
        # Each worker process opens its own writer; SQLite's BEGIN IMMEDIATE serialises them, so uploads
        # stay one transaction each while normalisation runs on every core.
        os.environ.update(
            RESYNC_DB=settings.db_path,
            RESYNC_JWT_SECRET=settings.jwt_secret,
            RESYNC_MAX_BODY_MB=str(settings.max_body_bytes / (1024 * 1024)),
        )
        uvicorn.run("service.app:create_app_from_env", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level="info")
    else:
        app = create_app(settings)
        freeze_startup_objects()
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


async def _create_demo_user(settings: Settings) -> str:
    from service.store.database import Database
    from service.tokens import issue_token

    db = await Database.open(settings.db_path)
    try:
        async with db.write() as conn:
            await conn.execute(
                "INSERT INTO users (id, email, display_name, role) VALUES (?, ?, 'Demo', 'admin')"
                " ON CONFLICT DO NOTHING",
                (DEMO_USER_ID, DEMO_EMAIL),
            )
    finally:
        await db.close()
    return issue_token(settings.jwt_secret, DEMO_USER_ID, DEMO_EMAIL)


def _create_user(args: argparse.Namespace) -> int:
    """Add a user to the app's users table (as the app would on sign-up) and print a token for it."""
    import re
    import sqlite3

    from service.store.database import Database
    from service.tokens import issue_token

    user_id = args.id or f"user_{secrets.token_urlsafe(16)[:21]}"
    if not re.fullmatch(r"user_[A-Za-z0-9_-]{21}", user_id):
        print("error: --id must be 'user_' followed by 21 characters of A-Z a-z 0-9 _ -", file=sys.stderr)
        return 2

    async def insert() -> None:
        db = await Database.open(args.db or Settings.from_env().db_path)
        try:
            async with db.write() as conn:
                await conn.execute(
                    "INSERT INTO users (id, email, display_name, role) VALUES (?, ?, ?, ?)",
                    (user_id, args.email, args.name, args.role),
                )
        finally:
            await db.close()

    try:
        asyncio.run(insert())
    except sqlite3.IntegrityError as exc:
        print(f"error: cannot add {args.email}: {exc}", file=sys.stderr)
        return 1
    print(user_id)
    secret = os.environ.get("RESYNC_JWT_SECRET")
    if secret:
        print(issue_token(secret, user_id, args.email))
    return 0


def _issue_token(args: argparse.Namespace) -> int:
    from service.tokens import issue_token

    secret = os.environ.get("RESYNC_JWT_SECRET")
    if not secret:
        print("error: set RESYNC_JWT_SECRET", file=sys.stderr)
        return 2
    print(issue_token(secret, args.user_id, args.email))
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--db", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    serve.add_argument("--host", default=os.environ.get("RESYNC_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RESYNC_PORT", "8000")))
    serve.add_argument("--dev", action="store_true",
                       help="make a secret if none is set, create a demo admin user and print a token for it")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("RESYNC_WORKERS", "1")),
                       help="worker processes (default 1; one per core speeds up large uploads)")
    serve.set_defaults(run=_serve)

    create_user = commands.add_parser("create-user", help="add a user to the app's users table")
    create_user.add_argument("--db", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--id", help="users.id (default: a new user_ id)")
    create_user.add_argument("--name", default=None, help="display name")
    create_user.add_argument("--role", default="user", choices=["user", "teacher", "admin"])
    create_user.set_defaults(run=_create_user)

    token = commands.add_parser("token", help="issue an app token (needs RESYNC_JWT_SECRET)")
    token.add_argument("user_id")
    token.add_argument("email")
    token.set_defaults(run=_issue_token)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--out", default="openapi/openapi.json", help="file to write, or - for stdout")
    openapi.set_defaults(run=_openapi)

    replay = commands.add_parser("replay", help="replay exported device data through the pipeline")
    from service.replay import add_arguments as add_replay_arguments

    add_replay_arguments(replay)
    replay.set_defaults(run=_replay)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread starts
    tune_garbage_collector()
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


__all__ = ["build_parser", "main"]
