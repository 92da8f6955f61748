"""`POST /v1/recovery/exports`: a signed-in user uploads one of their own export files.

The file is the request body as the app wrote it: a full data export (1.0 or 2.0), a practice report,
or a browser localStorage dump. Its records take the same pipeline as every other upload and get the
same per-record answer as the recovery upload API. A file that names another user is refused and
nothing is written: the endpoint never files one user's data under another.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, QueryParameter

from service.api.errors import FieldError, problem_responses
from service.api.rendering import recovery_response
from service.api.schemas import RecoveryUploadResponse
from service.api.sync import DeviceHeader, header_token, require_json_body
from service.domain.owners import Owner
from service.replay.model import UnreadableInput
from service.usecases.exports import NotTheUploadersFile, upload_export

# Any JSON object or array; which export it is, is recognised from its content.
ExportFile = dict[str, Any] | list[Any]
DryRun = Annotated[
    bool, QueryParameter(description="Answer exactly as the upload would, and write nothing", required=False)
]


class ExportController(Controller):
    path = "/v1/recovery/exports"
    tags = ("recovery",)

    @post(
        "/",
        status_code=200,
        summary="Upload one of your own export files",
        responses=problem_responses(400, 401, 403, 413, 415, 422),
        before_request=require_json_body,
        description="The body is the file as the app exported it: a full data export (1.0 or 2.0), a practice "
        "report, or a localStorage dump. Every record gets an outcome, as with `/v1/recovery/uploads`. A file "
        "whose profile or `mirubato:user` names another user is refused with 403 and nothing is written. The "
        "device is `X-Device-ID`, else the dump's `mirubato:device-id`.",
    )
    async def upload_export(
        self,
        request: Request[Owner, Any, Any],
        data: JSONBody[ExportFile],
        device_header: DeviceHeader = None,
        dry_run: DryRun = False,
    ) -> RecoveryUploadResponse:
        principal = request.user
        device = header_token(device_header, "X-Device-ID")
        body = await request.body()  # `data` is only the shape check; records keep their bytes as sent
        try:
            result = await upload_export(request.app.state.db, principal, body, device_id=device, dry_run=dry_run)
        except UnreadableInput as error:
            raise FieldError(422, error.field or "body", error.reason) from error
        except NotTheUploadersFile as error:
            raise PermissionDeniedException(str(error)) from error
        return recovery_response(result, dry_run=dry_run)


__all__ = ["ExportController"]
