"""The merge's stored state from the rows either engine's state query returns (the same column names on
both): one mapping, so the two engines cannot come to disagree on what the merge sees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from service import jsontext
from service.domain.merge import EntityKey, StoredEntity
from service.domain.times import to_epoch_ms


class Columns(Protocol):
    """A result row read by column name: `sqlite3.Row` and psycopg's dict rows alike."""

    def __getitem__(self, name: str, /) -> Any: ...


def document_updated_ms(data: str, row_updated_at: str | None) -> int | None:
    """A row the app stored before the service existed: its client time, else the server's."""
    try:
        document = jsontext.decode(data)
    except msgspec.DecodeError:
        document = None
    if isinstance(document, dict):
        for field in ("updatedAt", "updated_at", "createdAt", "created_at"):
            value = document.get(field)
            if value:
                ms = to_epoch_ms(value)
                if ms is not None:
                    return ms
    return to_epoch_ms(row_updated_at) if row_updated_at else None


def stored_entities(rows: Iterable[Columns], elsewhere: set[str] | None) -> dict[EntityKey, StoredEntity]:
    """Each key's `sync_data` row and merge state (columns `entity_type, entity_id, id, checksum, version,
    data, updated_at, deleted_at` of the row, `has_state, updated_ms, deleted_ms, content_key, duplicate_of`
    of the state, `held_elsewhere`), and the logbook ids another user holds added to `elsewhere`."""
    stored: dict[EntityKey, StoredEntity] = {}
    for r in rows:
        key = (r["entity_type"], r["entity_id"])
        if r["held_elsewhere"] and elsewhere is not None:
            elsewhere.add(key[1])
        row_id = r["id"]
        state_updated_ms = r["updated_ms"]
        if row_id is not None:
            deleted_at = r["deleted_at"]
            live = deleted_at is None
            deleted_ms = r["deleted_ms"] if not live else None
            stored[key] = StoredEntity(
                row_id=row_id,
                checksum=r["checksum"],
                version=r["version"] or 1,
                live=live,
                data=r["data"],
                updated_ms=state_updated_ms if state_updated_ms is not None
                else document_updated_ms(r["data"], r["updated_at"]),
                deleted_ms=None if live else deleted_ms if deleted_ms is not None else to_epoch_ms(deleted_at),
                content_key=r["content_key"],
                duplicate_of=r["duplicate_of"],
            )
        elif r["has_state"]:
            stored[key] = StoredEntity(updated_ms=state_updated_ms, deleted_ms=r["deleted_ms"],
                                       content_key=r["content_key"], duplicate_of=r["duplicate_of"])
    return stored
