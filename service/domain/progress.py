"""A user's recovery state: the one rule, decided from three figures whatever engine read them."""

from __future__ import annotations

from enum import StrEnum


class RecoveryState(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    NEEDS_REVIEW = "needs_review"


STATES: tuple[RecoveryState, ...] = tuple(RecoveryState)


def state_of(*, waiting: bool, uploaded: bool, all_devices_complete: bool) -> RecoveryState:
    """Review first: waiting quarantined records or unreviewed archived conflicts need a person whatever
    the devices say; then nothing uploaded yet; then complete when the user has devices and every one
    declared itself complete (a matching declaration)."""
    if waiting:
        return RecoveryState.NEEDS_REVIEW
    if not uploaded:
        return RecoveryState.NOT_STARTED
    if all_devices_complete:
        return RecoveryState.COMPLETE
    return RecoveryState.IN_PROGRESS
