"""The app's own sync endpoints, so an unchanged device can point at the service (CONTRACT section 4)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import SerializationException
from litestar.params import HeaderParameter, JSONBody

from service import jsontext
from service.api.auth import READS_ONLY
from service.api.errors import FieldError, problem_responses
from service.api.rendering import answer_upload
from service.api.schemas import (
    PUSH_GROUPS,
    Conflict,
    PullResponse,
    PushRequest,
    PushResponse,
    PushStats,
    RawPushRequest,
    RecoverySummary,
    SyncStatus,
)
from service.domain import outcomes as oc
from service.domain.documents import lowercase_enums
from service.domain.owners import Owner
from service.domain.sources import Source
from service.store.interface import Storage
from service.usecases.ingest import (
    IncomingRecord,
    Upload,
    UploadResult,
    sha256_hex,
)

PUSH_ROUTE = "POST /api/sync/push"  # the scope of its idempotency keys
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_GROUP_OF_TYPE = {entity_type: group for group, entity_type in PUSH_GROUPS.items()}

DeviceHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Device-ID", required=False, description="The uploading device, `dev_` + 16 chars"),
]
IdempotencyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="X-Idempotency-Key", required=False, description="<= 64 chars of [A-Za-z0-9_-]; kept 24 h"
    ),
]


def header_token(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not _TOKEN_CHARS.match(value):
        raise FieldError(400, field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return value


def _is_json_media_type(media_type: str) -> bool:
    media_type = media_type.strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def require_json_body(request: Request[Any, Any, Any]) -> None:
    """Runs before a route that takes a JSON body, before Litestar reads it.

    - The body must be declared JSON (415 otherwise). Routes that change data must not accept what a
      browser may send cross-site without a CORS preflight (`text/plain`, or no type at all): with the
      `auth-token` cookie that would let any web page push records, or deletions, as the user.
    - The body must be readable: empty, not UTF-8, not JSON, or nested deeper than the decoder can go
      are all 400 problems here, never a 500 from inside the framework. Lone surrogate escapes
      (`"\\ud83d"`, which JSON.stringify writes) are JSON: such a body is read by `jsontext.decode`.
    The decoded body is cached on the request, so the route does not decode it again.
    """
    media_type, _ = request.content_type
    if not _is_json_media_type(media_type):
        raise FieldError(
            415, "Content-Type", "must be application/json", detail="The request body must be sent as application/json"
        )
    body = await request.body()  # over the size limit: 413
    if not body.strip():
        raise FieldError(400, "body", "a JSON body is required", detail="The request body is empty")
    try:
        await request.json()
    except SerializationException as exc:
        # msgspec refuses lone surrogate escapes, which JSON.parse (and so the app) reads: read those
        # bodies once more, and let the route take the value from the request's cache.
        try:
            value = jsontext.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise FieldError(400, "body", str(exc), detail="The request body is not valid JSON") from None
        request._json = request._connection_state.json = value
    except UnicodeDecodeError:
        raise FieldError(400, "body", "not valid UTF-8", detail="The request body is not valid JSON") from None
    except RecursionError:
        raise FieldError(
            400, "body", "nested too deeply to be read", detail="The request body is not valid JSON"
        ) from None


_CONFLICT_OUTCOMES = {oc.QUARANTINED, oc.KEPT_EXISTING, oc.SUPPRESSED}


def render_push(result: UploadResult, user_resolved: bool) -> PushResponse:
    counts = result.receipt.counts()
    processed = {group: 0 for group in PUSH_GROUPS}
    conflicts = []
    for r in result.receipt.results:
        group = _GROUP_OF_TYPE.get(r.entity_type)
        if group is not None:
            processed[group] += 1
        if r.outcome in _CONFLICT_OUTCOMES:
            conflicts.append(Conflict(r.entity_id, r.entity_type, r.reason or r.outcome))
    return PushResponse(
        success=True,
        syncToken=result.sync_token,
        conflicts=conflicts,
        stats=PushStats(
            entriesProcessed=processed["entries"],
            duplicatesPrevented=counts[oc.DUPLICATE] + counts[oc.CONTENT_DUPLICATE],
            goalsProcessed=processed["goals"],
            practicePlansProcessed=processed["practicePlans"],
            planOccurrencesProcessed=processed["planOccurrences"],
        ),
        recovery=RecoverySummary(uploadId=result.upload_id, counts=counts, userResolved=user_resolved),
    )


class SyncController(Controller):
    path = "/api/sync"
    tags = ("app sync",)

    @post(
        "/push",
        status_code=200,
        summary="Push local changes (the app's format)",
        responses=problem_responses(400, 401, 413, 415, 422),
        before_request=require_json_body,
        description="Each record gets its own outcome; quarantined and kept-existing records are listed in "
        "`conflicts` with their reason. One push is one transaction.",
    )
    async def push(
        self,
        request: Request[Owner, Any, Any],
        data: JSONBody[PushRequest],
        device_id: DeviceHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[PushResponse]:
        principal = request.user
        device = header_token(device_id, "X-Device-ID")
        key = header_token(idempotency_key, "X-Idempotency-Key")
        body = await request.body()
        body_sha256 = sha256_hex(body)
        raw = jsontext.decode(body, RawPushRequest)  # already validated as `data`; keeps each record's bytes
        records = [
            IncomingRecord(entity_type, bytes(item), value)
            for group, entity_type in PUSH_GROUPS.items()
            for item, value in zip(getattr(raw.changes, group), getattr(data.changes, group), strict=True)
        ]
        upload = Upload.of_owner(
            principal,
            device_id=device,
            source=Source.PUSH,
            records=records,
            payload_sha256=body_sha256,
        )
        user_resolved = principal.user is not None
        return await answer_upload(
            request.app.state.db,
            upload,
            body=body,
            body_sha256=body_sha256,  # hashed once: the ledger's payload hash and the idempotency fingerprint
            idempotency_key=key,
            render=lambda result: render_push(result, user_resolved),
            route=PUSH_ROUTE,
        )

    @post(
        "/pull",
        status_code=200,
        summary="Pull the user's live documents (the app's format)",
        responses=problem_responses(401),
        opt={READS_ONLY: True},  # a POST that changes nothing: the app's client sends it bodiless
    )
    async def pull(self, request: Request[Owner, Any, Any]) -> PullResponse:
        principal = request.user
        db: Storage = request.app.state.db
        groups: dict[str, list[dict[str, Any]]] = {group: [] for group in PUSH_GROUPS}
        user = principal.user
        rows, seq = await db.read(
            lambda unit: (unit.live_documents(user.id) if user is not None else [], unit.current_seq())
        )
        for row in rows:
            group = _GROUP_OF_TYPE.get(row.entity_type)
            if group is None:
                continue
            document = jsontext.decode(row.data)
            if isinstance(document, dict):
                groups[group].append(jsontext.writable(lowercase_enums(row.entity_type, document), row.data))
        return PullResponse(
            entries=groups["entries"],
            goals=groups["goals"],
            practicePlans=groups["practicePlans"],
            planOccurrences=groups["planOccurrences"],
            planTemplates=groups["planTemplates"],
            syncToken=str(seq),
            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )

    @get("/status", summary="Sync status of the caller", responses=problem_responses(401))
    async def status(self, request: Request[Owner, Any, Any]) -> SyncStatus:
        """The shape the app's client declares (`lastSyncTime, syncToken, pendingChanges, deviceCount,
        entityCount`), then the service's own fields (`lastSyncToken`, counts per type, `userResolved`)."""
        principal = request.user
        db: Storage = request.app.state.db
        if principal.user is None:
            return SyncStatus(None, None, 0, 0, 0, None, {}, userResolved=False)
        user_id = principal.user.id
        meta, counts, devices = await db.read(
            lambda unit: (unit.sync_metadata(user_id), unit.live_counts(user_id), unit.device_count(user_id))
        )
        token = meta.last_sync_token if meta else None
        return SyncStatus(
            lastSyncTime=meta.last_sync_time if meta else None,
            syncToken=token,
            # Every upload is applied in the request that carries it: the service never holds changes back.
            pendingChanges=0,
            deviceCount=devices,
            entityCount=sum(counts.values()),
            lastSyncToken=token,
            entityCounts=counts,
            userResolved=True,
        )
