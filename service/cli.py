"""`python -m service ...`: the one entry point (serve, replay, lint-migrations, export-d1, openapi)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

from service.config import DEFAULT_DB_PATH, Settings

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
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--db", help=f"app database file (env RESYNC_DB, default {DEFAULT_DB_PATH})")
    serve.add_argument("--host", default=os.environ.get("RESYNC_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RESYNC_PORT", "8000")))
    serve.add_argument("--dev", action="store_true",
                       help="make a secret if none is set, create a demo admin user and print a token for it")
    serve.set_defaults(run=_serve)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--out", default="openapi/openapi.json", help="file to write, or - for stdout")
    openapi.set_defaults(run=_openapi)

    lint = commands.add_parser("lint-migrations", help="find migrations that would cascade-delete app data")
    from service.migrations_lint import add_arguments

    add_arguments(lint)
    lint.set_defaults(run=_lint_migrations)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


__all__ = ["build_parser", "main"]
