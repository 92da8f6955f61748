"""Guards run on the event loop: Litestar sends a plain `def` guard to a thread pool on every request,
an extra hop that, while uploads are written in the same process, waits for the GIL twice (#17:
the support page's p99 under ingest)."""

from __future__ import annotations

import inspect

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler


def test_every_guard_of_every_route_is_a_coroutine_function(app: Litestar) -> None:
    checked = 0
    for route in app.routes:
        handlers = getattr(route, "route_handlers", None) or [route.route_handler]  # type: ignore[union-attr]
        for handler in handlers:
            assert isinstance(handler, HTTPRouteHandler | WebsocketRouteHandler)
            for guard in handler.resolve_guards():
                assert inspect.iscoroutinefunction(guard), f"{handler}: guard {guard} would run on a thread"
                checked += 1
    assert checked > 0
