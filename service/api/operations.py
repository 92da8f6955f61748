"""Operations endpoint: liveness with a database check. No auth, not in the schema (the metrics scrape is
`service.metrics.MetricsController`)."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get

from service.api.errors import RETRY_AFTER_S
from service.store.interface import Storage


@get("/health", include_in_schema=False, exclude_from_auth=True, cache=False)
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 when the database answers and can take a write; 503 with the reason and Retry-After if not."""
    db: Storage = request.app.state.db
    try:
        fault = await db.health()
    except Exception as exc:  # any failure to answer is "unhealthy", never a crash
        fault = db.fault_of(exc)
        return _unhealthy(fault.value if fault is not None else type(exc).__name__)
    if fault is not None:
        return _unhealthy(fault.value)
    return Response({"status": "ok", "database": "ok"}, media_type=MediaType.JSON)


def _unhealthy(reason: str) -> Response[dict[str, str]]:
    return Response({"status": "unavailable", "database": reason}, status_code=503, media_type=MediaType.JSON,
                    headers={"Retry-After": str(RETRY_AFTER_S)})

