"""Operations endpoints: liveness with a database check, and Prometheus metrics. No auth, not in the schema."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.store.database import Database


@get("/health", include_in_schema=False, exclude_from_auth=True, cache=False)
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    db: Database = request.app.state.db
    try:
        async with db.read() as conn:
            await conn.fetchone("SELECT COUNT(*) FROM sync_sequence")
    except Exception as exc:  # any failure to answer is "unhealthy", never a crash
        return Response({"status": "unavailable", "database": type(exc).__name__}, status_code=503,
                        media_type=MediaType.JSON)
    return Response({"status": "ok", "database": "ok"}, media_type=MediaType.JSON)


@get("/metrics", include_in_schema=False, exclude_from_auth=True, cache=False)
async def prometheus_metrics() -> Response[bytes]:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
