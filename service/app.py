"""The app factory: one Litestar app, its database opened in the lifespan and always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service import changefeed, metrics
from service.api.app_data import GoalsController, RepertoireController
from service.api.auth import make_jwt_auth, refuse_cross_site_cookie_writes
from service.api.errors import problem_details_plugin, unexpected_error_handlers
from service.api.exports import ExportController
from service.api.live import LiveHub, live_sync_handler, redact_tokens_in_server_logs
from service.api.operations import health
from service.api.recovery import RecoveryController
from service.api.rendering import AppResponse
from service.api.support import SupportController
from service.api.sync import SyncController
from service.api.user import UserController
from service.config import Settings
from service.memory import freeze_startup_objects, tune_garbage_collector
from service.store import open_storage
from service.web import PAGE_PATHS, support_pages, template_config
from service.workers import close_shared_pool

API_TITLE = "Mirubato recovery service"
API_VERSION = "1.0.0"
# Routes the token middleware does not check: operations, the schema itself, and the live-sync socket,
# which takes its token as a query parameter and checks it itself (as the app's sync worker does), and the
# support page, which signs its visitors in itself.
PUBLIC_PATHS = ["^/health$", "^/metrics$", "^/schema", "^/sync/ws$", PAGE_PATHS]
# Everything the app's web client sends cross-origin (CONTRACT section 4).
CORS_METHODS: list[Any] = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
CORS_HEADERS = ["Authorization", "Content-Type", "X-Device-ID", "X-Idempotency-Key"]


def create_app(settings: Settings) -> Litestar:
    if not settings.jwt_secret:
        raise ValueError("a JWT secret is required (RESYNC_JWT_SECRET)")

    @asynccontextmanager
    async def open_database(app: Litestar) -> AsyncIterator[None]:
        db = await open_storage(settings.db_path, url=settings.database_url)
        app.state.db = db
        feed = await changefeed.open_feed(db)  # every committed change reaches the user's sockets
        assert feed is not None
        changefeed.attach(db, feed)
        stop_listening = hub.listen(db, feed)
        try:
            yield
        finally:
            try:
                stop_listening()
                changefeed.detach(db)
                await feed.close()
                await db.close()
            finally:
                close_shared_pool()
                metrics.process_exiting()

    jwt_auth = make_jwt_auth(settings.jwt_secret, exclude=PUBLIC_PATHS)
    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            allow_credentials=True,
        )
        if settings.cors_origins
        else None
    )
    hub = LiveHub()  # the sockets this process holds
    redact_tokens_in_server_logs()
    return Litestar(
        route_handlers=[
            SyncController,
            UserController,
            GoalsController,
            RepertoireController,
            live_sync_handler(settings.jwt_secret, hub),
            RecoveryController,
            ExportController,
            SupportController,
            health,
            metrics.MetricsController,
            support_pages(settings.jwt_secret),
        ],
        template_config=template_config(),
        lifespan=[open_database],
        on_app_init=[jwt_auth.on_app_init],
        guards=[refuse_cross_site_cookie_writes],  # CSRF, on every route (see the guard)
        plugins=[problem_details_plugin()],
        middleware=[metrics.http_metrics().middleware],
        exception_handlers=dict(unexpected_error_handlers),
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        response_class=AppResponse,
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
