"""Shaping a pipeline result as the native recovery API answers it."""

from __future__ import annotations

from service.api.schemas import RecordOutcome, RecoveryUploadResponse
from service.pipeline import UploadResult


def recovery_response(result: UploadResult, *, dry_run: bool = False) -> RecoveryUploadResponse:
    return RecoveryUploadResponse(
        upload_id=result.upload_id,
        dry_run=dry_run,
        received=result.receipt.received,
        counts=result.receipt.counts(),
        results=[
            RecordOutcome(
                entity_type=r.entity_type,
                entity_id=r.entity_id,
                outcome=r.outcome,
                reason=r.reason,
                field=r.field,
                duplicate_of=r.duplicate_of,
                note=r.note,
            )
            for r in result.receipt.results
        ],
    )
