"""A device declares it has sent everything: the one declaration rule, for the API and any other front end."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from service.domain.progress import RecoveryState
from service.store.interface import Storage, WriteUnit
from service.usecases.support import Difference, declaration_differences


class DeclarationOutcome(msgspec.Struct):
    complete: bool  # the declaration matched: the device is complete
    received: dict[str, int]  # distinct records the service received from the device, per entity type
    differences: dict[str, Difference]  # per entity type where they differ (empty when complete)
    state: RecoveryState  # the user's recovery state after it


async def declare_device(db: Storage, user_id: str, device_id: str, expected: Mapping[str, int]) -> DeclarationOutcome:
    """Compare the declaration with what the device sent and record it, in one write transaction; only a
    matching one changes the device (a mismatch is kept in the declarations' history only)."""

    def declare(unit: WriteUnit) -> DeclarationOutcome:
        unit.lock_user(user_id)
        received = unit.device_received(user_id, device_id)
        differences = declaration_differences(expected, received)
        unit.declare_device(user_id, device_id, expected, not differences)
        return DeclarationOutcome(not differences, received, differences, unit.user_state(user_id))

    return await db.write(declare)
