"""Shaping stored documents on the way out."""

from __future__ import annotations

from typing import Any

from service.domain.records import GOAL, LOGBOOK_ENTRY

_ENUM_FIELDS: dict[str, tuple[str, ...]] = {
    LOGBOOK_ENTRY: ("type", "instrument", "mood"),
    GOAL: ("status",),
}


def lowercase_enums(entity_type: str, document: dict[str, Any]) -> dict[str, Any]:
    """The app lowercases enum fields when clients pull (old rows may hold PRACTICE, PIANO, ...)."""
    for field in _ENUM_FIELDS.get(entity_type, ()):
        value = document.get(field)
        if isinstance(value, str):
            document[field] = value.lower()
    return document
