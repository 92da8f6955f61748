"""The native recovery API: upload records with per-record answers, declare a device complete, read
one's own progress."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, PathParameter

from service import jsontext
from service.api.errors import FieldError, problem, problem_responses
from service.api.rendering import answer_upload, recovery_response
from service.api.schemas import RawRecoveryUploadRequest, RecoveryUploadRequest, RecoveryUploadResponse
from service.api.sync import DeviceHeader, IdempotencyHeader, header_token, require_json_body
from service.domain.outcomes import keys_of
from service.domain.owners import Owner
from service.domain.progress import RecoveryState
from service.domain.records import ENTITY_TYPES, EntityType
from service.domain.sources import Source
from service.store.interface import Storage
from service.store.rows import UserProgress
from service.usecases.devices import declare_device
from service.usecases.ingest import IncomingRecord, Upload, sha256_hex

UPLOAD_ROUTE = "POST /v1/recovery/uploads"  # the scope of its idempotency keys


# Counts per EntityType; the document lists the names. Declared keys stay `str` when decoded: another
# name is refused by `complete_device` naming it (422 `expected.<name>`), not by the decoder. A 200
# answer's `received` has only declared types (any other type received is a difference: 409).
_BY_ENTITY_TYPE = keys_of(EntityType)


class DeviceDeclaration(msgspec.Struct):
    """What the device holds, per entity type: the number of distinct records it has sent."""

    expected: Annotated[dict[str, Annotated[int, msgspec.Meta(ge=0)]], _BY_ENTITY_TYPE]


class DeviceCompletion(msgspec.Struct):
    device_id: str
    complete: bool
    expected: Annotated[dict[str, int], _BY_ENTITY_TYPE]
    received: Annotated[dict[str, int], _BY_ENTITY_TYPE]
    state: RecoveryState


def empty_progress(principal: Owner) -> UserProgress:
    return UserProgress(
        user_id=principal.owner, email=principal.email, exists=principal.user is not None,
        state=RecoveryState.NOT_STARTED, first_upload_at=None, last_upload_at=None, counts={},
        counts_by_entity_type={}, quarantined_waiting=0, archived_waiting=0, devices=[],
    )


class RecoveryController(Controller):
    path = "/v1/recovery"
    tags = ("recovery",)

    @post(
        "/uploads",
        status_code=200,
        summary="Upload records for recovery",
        responses=problem_responses(400, 401, 413, 415, 422),
        before_request=require_json_body,
        description="Every record gets an outcome. `dry_run` answers exactly as the upload would and writes "
        "nothing. An `X-Idempotency-Key` replays the first answer for the same body.",
    )
    async def upload(
        self,
        request: Request[Owner, Any, Any],
        data: JSONBody[RecoveryUploadRequest],
        device_header: DeviceHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[RecoveryUploadResponse]:
        principal = request.user
        device = header_token(data.device_id, "device_id") or header_token(device_header, "X-Device-ID")
        key = header_token(idempotency_key, "X-Idempotency-Key")
        body = await request.body()
        body_sha256 = sha256_hex(body)  # once: the ledger's payload hash and the idempotency fingerprint
        raw = jsontext.decode(body, RawRecoveryUploadRequest)
        upload = Upload.of_owner(
            principal,
            device_id=device,
            source=Source.RECOVERY,
            records=[
                IncomingRecord(record.entity_type, bytes(raw_record.data), record.data)
                for record, raw_record in zip(data.records, raw.records, strict=True)
            ],
            deleted=data.deleted,
            payload_sha256=body_sha256,
        )
        dry_run = data.dry_run
        return await answer_upload(
            request.app.state.db,
            upload,
            body=body,
            body_sha256=body_sha256,
            idempotency_key=key,
            render=lambda result: recovery_response(result, dry_run=dry_run),
            route=UPLOAD_ROUTE,
            dry_run=dry_run,
        )

    @post(
        "/devices/{device_id:str}/complete",
        status_code=200,
        summary="Declare that a device has sent everything",
        responses=problem_responses(400, 401, 403, 409, 413, 415, 422),
        before_request=require_json_body,
        description="Matches when the distinct records received from the device equal `expected` for every "
        "entity type; otherwise 409 lists the differences.",
    )
    async def complete_device(
        self,
        request: Request[Owner, Any, Any],
        device_id: Annotated[str, PathParameter(description="The device, `dev_` + 16 chars")],
        data: JSONBody[DeviceDeclaration],
    ) -> DeviceCompletion:
        principal = request.user
        header_token(device_id, "device_id")
        if principal.user is None:
            raise PermissionDeniedException("The token's user does not exist: nothing can be declared for it")
        unknown = sorted(set(data.expected) - set(ENTITY_TYPES))
        if unknown:
            raise FieldError(422, f"expected.{unknown[0]}", "not an entity type this service knows")
        db: Storage = request.app.state.db
        outcome = await declare_device(db, principal.user.id, device_id, data.expected)
        differences = {t: msgspec.structs.asdict(d) for t, d in outcome.differences.items()}
        if differences:
            raise problem(
                409,
                "The device's declaration does not match what the service received from it",
                [{"field": f"expected.{t}", "reason": f"expected {d['expected']}, received {d['received']}"}
                 for t, d in differences.items()],
                differences=differences,
            )
        return DeviceCompletion(device_id, True, dict(data.expected), outcome.received, outcome.state)

    @get("/me", summary="The caller's own recovery progress", responses=problem_responses(401))
    async def me(self, request: Request[Owner, Any, Any]) -> UserProgress:
        principal = request.user
        db: Storage = request.app.state.db
        found = await db.read(lambda unit: unit.user_progress(principal.owner))
        return found or empty_progress(principal)


__all__ = ["RecoveryController"]
