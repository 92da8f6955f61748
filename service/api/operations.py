"""Operations endpoints: liveness with a database check, and Prometheus metrics. No auth, not in the schema."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.api.errors import RETRY_AFTER_S
from service.store.database import Database, fault_of
from service.store.interface import Fault

# Below this much free space a write may fail half-way: report the disk as full before it does.
MIN_FREE_BYTES = 8 * 1024 * 1024


def storage_fault(db: Database) -> Fault | None:
    """What keeps the database from taking a write, seen from outside SQLite: a write that failed
    recently (a lock held past the busy timeout, a full disk, an I/O error), a file or folder that is
    not writable (the WAL needs both), or a disk without room."""
    recent = db.current_fault()
    if recent is not None:
        return recent
    if db.path == ":memory:":
        return None
    path = Path(db.path)
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        return Fault.READ_ONLY
    try:
        if shutil.disk_usage(path.parent).free < MIN_FREE_BYTES:
            return Fault.DISK_FULL
    except OSError as error:
        return fault_of(error) or Fault.IO_ERROR
    return None


@get("/health", include_in_schema=False, exclude_from_auth=True, cache=False)
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 when the database answers and can take a write; 503 with the reason and Retry-After if not."""
    db: Database = request.app.state.db
    try:
        async with db.read() as conn:
            await conn.fetchone("SELECT COUNT(*) FROM sync_sequence")
    except Exception as exc:  # any failure to answer is "unhealthy", never a crash
        fault = fault_of(exc)
        return _unhealthy(fault.value if fault is not None else type(exc).__name__)
    fault = storage_fault(db)
    if fault is not None:
        return _unhealthy(fault.value)
    return Response({"status": "ok", "database": "ok"}, media_type=MediaType.JSON)


def _unhealthy(reason: str) -> Response[dict[str, str]]:
    return Response({"status": "unavailable", "database": reason}, status_code=503, media_type=MediaType.JSON,
                    headers={"Retry-After": str(RETRY_AFTER_S)})


@get("/metrics", include_in_schema=False, exclude_from_auth=True, cache=False)
async def prometheus_metrics() -> Response[bytes]:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
