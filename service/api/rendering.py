"""Answering an upload: run it through the pipeline, replay a stored answer, shape the native response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Response
from litestar.exceptions import ImproperlyConfiguredException

from service import jsontext
from service.api.errors import FieldError
from service.api.schemas import RecoveryUploadResponse
from service.store.interface import Storage
from service.usecases.ingest import Idempotency, IdempotencyConflict, Replayed, Upload, UploadResult, ingest, sha256_hex

_encode = jsontext.encode  # an id holding a lone surrogate is written as JSON.stringify does


class AppResponse(Response[Any]):
    """The default response: as Litestar's, but a lone surrogate in a document (a note cut inside an
    emoji) is written as JSON.stringify writes it instead of failing the answer."""

    def render(self, content: Any, media_type: str, enc_hook: Any = None) -> bytes:
        try:
            return super().render(content, media_type, enc_hook) if enc_hook else super().render(content, media_type)
        except ImproperlyConfiguredException as error:
            if not isinstance(error.__cause__, UnicodeEncodeError):
                raise
            return jsontext.encode(content)


def recovery_response(result: UploadResult, *, dry_run: bool = False) -> RecoveryUploadResponse:
    return RecoveryUploadResponse(
        upload_id=result.upload_id,
        dry_run=dry_run,
        received=result.receipt.received,
        counts=result.receipt.counts(),
        results=result.receipt.results,
    )


def json_response(body: bytes) -> Response[Any]:
    return Response(content=body, media_type="application/json", status_code=200)


async def answer_upload(
    db: Storage,
    upload: Upload,
    *,
    body: bytes,
    idempotency_key: str | None,
    render: Callable[[UploadResult], Any],
    route: str,
    dry_run: bool = False,
    body_sha256: str | None = None,
) -> Response[Any]:
    """The pipeline's answer as JSON; with an idempotency key, the first answer for the same body on the
    same `route` again. A dry run is never remembered: the real upload must still happen. The body is
    hashed once (`body_sha256` when the caller has it) and the answer rendered once (the bytes stored
    with the key are the bytes sent)."""
    key = idempotency_key if idempotency_key and not dry_run else None
    rendered: list[bytes] = []

    def render_once(result: UploadResult) -> bytes:
        rendered.append(_encode(render(result)))
        return rendered[-1]

    try:
        outcome = await ingest(
            db,
            upload,
            dry_run=dry_run,
            idempotency=Idempotency(key, body_sha256 or sha256_hex(body), route) if key else None,
            render=render_once,
        )
    except IdempotencyConflict as exc:
        raise FieldError(
            422, "X-Idempotency-Key", "this key was used with a different request body in the last 24 hours"
        ) from exc
    if isinstance(outcome, Replayed):
        return json_response(outcome.response)
    return json_response(rendered[-1] if rendered else render_once(outcome))
