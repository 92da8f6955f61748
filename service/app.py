"""The app factory: one Litestar app, its database opened in the lifespan and always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service.api.auth import make_jwt_auth
from service.api.errors import problem_details_plugin, unexpected_error_handlers
from service.api.exports import ExportController
from service.api.operations import health, prometheus_metrics
from service.api.recovery import RecoveryController
from service.api.support import SupportController
from service.api.sync import SyncController
from service.config import Settings
from service.memory import freeze_startup_objects, tune_garbage_collector
from service.store.database import Database
from service.workers import close_shared_pool

API_TITLE = "Mirubato recovery service"
API_VERSION = "1.0.0"
# Routes that need no token (operations, and the schema itself).
PUBLIC_PATHS = ["^/health$", "^/metrics$", "^/schema"]


def create_app(settings: Settings) -> Litestar:
    if not settings.jwt_secret:
        raise ValueError("a JWT secret is required (RESYNC_JWT_SECRET)")

    @asynccontextmanager
    async def open_database(app: Litestar) -> AsyncIterator[None]:
        db = await Database.open(settings.db_path)
        app.state.db = db
        try:
            yield
        finally:
            try:
                await db.close()
            finally:
                close_shared_pool()

    jwt_auth = make_jwt_auth(settings.jwt_secret, exclude=PUBLIC_PATHS)
    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Device-ID", "X-Idempotency-Key"],
            allow_credentials=True,
        )
        if settings.cors_origins
        else None
    )
    return Litestar(
        route_handlers=[
            SyncController,
            RecoveryController,
            ExportController,
            SupportController,
            health,
            prometheus_metrics,
        ],
        lifespan=[open_database],
        on_app_init=[jwt_auth.on_app_init],
        plugins=[problem_details_plugin()],
        exception_handlers=dict(unexpected_error_handlers),
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        openapi_config=OpenAPIConfig(
            title=API_TITLE,
            version=API_VERSION,
            description="Takes the practice-logbook app's synced history back from users' devices.",
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
            security=[{"BearerToken": []}],
        ),
        debug=False,
    )


def create_app_from_env() -> Litestar:
    """The app factory for worker processes (`serve --workers N`): settings from the environment."""
    tune_garbage_collector()  # a worker process is a fresh interpreter: `python -m service` did not run here
    app = create_app(Settings.from_env())
    freeze_startup_objects()
    return app
