"""A signed-in user's own export file (full export, practice report, localStorage dump) as one upload: the
rule that a file naming another user is refused and nothing written lives here, for any front end."""

from __future__ import annotations

from service.domain.owners import Owner
from service.domain.sources import Source
from service.replay.documents import parse_export
from service.replay.model import OwnerClaim
from service.store.interface import Storage
from service.usecases.ingest import Upload, UploadResult, ingest, sha256_hex


class NotTheUploadersFile(PermissionError):
    """The file's profile or `mirubato:user` names another user: nothing is written."""


def names_uploader(claim: OwnerClaim, uploader: Owner) -> bool:
    """The file's owner is the uploader: the resolved user by id or email (else the token's own)."""
    if uploader.user is not None:
        return claim.names(uploader.user.id, uploader.user.email)
    return claim.names(uploader.owner, uploader.email)


async def upload_export(
    db: Storage, uploader: Owner, body: bytes, *, device_id: str | None, dry_run: bool = False
) -> UploadResult:
    """Parse the file (`UnreadableInput` when it is none the service reads) and take its records through the
    pipeline as the uploader's; the device is `device_id`, else the one the file names."""
    document = parse_export(body)
    if document.claim is not None and not names_uploader(document.claim, uploader):
        raise NotTheUploadersFile(
            f"This {document.kind} belongs to {document.claim}, not to the signed-in user; nothing was written"
        )
    upload = Upload.of_owner(
        uploader,
        device_id=device_id or document.device_id,
        source=Source.EXPORT,
        records=document.records,
        deleted=document.deleted,
        payload_sha256=sha256_hex(body),
    )
    result = await ingest(db, upload, dry_run=dry_run)
    assert isinstance(result, UploadResult)  # only an idempotency key can give a stored answer
    return result
