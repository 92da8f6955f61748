"""The app's `/api/user` routes its web client calls (CONTRACT section 4).

The client calls `GET /api/user/me` first and logs the user out on any error, so it must answer as the
app does: the caller's `users` row in the app's shape, 401 for a bad token, 404 for nobody.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, put
from litestar.params import JSONBody

from service import jsontext
from service.api.app_data import upload_documents
from service.api.errors import FieldError, problem_responses
from service.api.schemas import PreferencesSaved, PreferencesUpdate, UserProfile
from service.api.sync import DeviceHeader, IdempotencyHeader, require_json_body
from service.domain.accounts import Role
from service.domain.owners import Owner
from service.domain.records import USER_PREFERENCES
from service.domain.sources import Source
from service.domain.times import ms_to_iso_z
from service.store.interface import Storage


class UserController(Controller):
    path = "/api/user"
    tags = ("app client",)

    @get("/me", summary="The caller's user (the app's shape)", responses=problem_responses(401, 404))
    async def me(self, request: Request[Owner, Any, Any]) -> UserProfile:
        """`{id, email, displayName, authProvider, role, createdAt}` from `users`. A token whose subject is
        not in `users` but whose email is answers with that user (the one its uploads go to)."""
        principal = request.user
        db: Storage = request.app.state.db
        row = None
        if principal.user is not None:
            user_id = principal.user.id
            row = await db.read(lambda unit: unit.user_profile(user_id))
        if row is None:
            raise FieldError(404, "sub", "no user with this id or email exists", detail="User not found")
        return UserProfile(
            id=row.id,
            email=row.email,
            displayName=row.display_name,
            authProvider=row.auth_provider,
            role=row.role or Role.USER,
            createdAt=row.created_at,
        )

    @get("/preferences", summary="The caller's preferences (the app's shape)", responses=problem_responses(401))
    async def preferences(self, request: Request[Owner, Any, Any]) -> dict[str, Any]:
        """The live `user_preferences` document kept under the user's id, or `{}` when there is none."""
        principal = request.user
        if principal.user is None:
            return {}
        db: Storage = request.app.state.db
        user_id = principal.user.id
        rows = await db.read(lambda unit: unit.rows_of(user_id, USER_PREFERENCES, [user_id]))
        live = [r for r in rows if r.deleted_at is None]
        if not live:
            return {}
        document = jsontext.decode(live[0].data)  # lone surrogate escapes included
        return document if isinstance(document, dict) else {}

    @put("/preferences", summary="Replace the caller's preferences (the app's shape)", before_request=require_json_body,
         responses=problem_responses(400, 401, 413, 415, 422))
    async def save_preferences(
        self,
        request: Request[Owner, Any, Any],
        data: JSONBody[PreferencesUpdate],
        device_id: DeviceHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response[Any]:
        """As the app: the given fields replace the document. It is one upload of a `user_preferences`
        record; the service adds `updatedAt`, the time that lets this version win over older copies."""
        preferences = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        document = {**preferences, "updatedAt": ms_to_iso_z(int(time.time() * 1000))}
        return await upload_documents(request, USER_PREFERENCES, [document], {}, device_id, idempotency_key,
                                      PreferencesSaved(True, preferences), 200, source=Source.PREFERENCES)
