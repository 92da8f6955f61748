"""The merge's stored state from the rows either engine's state query returns (the same column names on
both): one mapping, so the two engines cannot come to disagree on what the merge sees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from service import jsontext
from service.domain.merge import EntityKey, StoredEntity
from service.domain.normalise import content_key_of_document, content_key_of_text, document_edit_ms
from service.domain.records import LOGBOOK_ENTRY
from service.domain.times import to_epoch_ms
from service.store.rows import ContentProbes


class Columns(Protocol):
    """A result row read by column name: `sqlite3.Row` and psycopg's dict rows alike."""

    def __getitem__(self, name: str, /) -> Any: ...


def document_updated_ms(data: str, row_updated_at: str | None) -> int | None:
    """A row without merge state (the app's, or one whose text holds it): its client time, else the
    server's."""
    return _edit_ms(_decoded(data), row_updated_at)


def _edit_ms(document: dict[str, Any] | None, row_updated_at: str | None) -> int | None:
    ms = document_edit_ms(document) if document is not None else None
    if ms is not None:
        return ms
    return to_epoch_ms(row_updated_at) if row_updated_at else None


def _decoded(data: str | None) -> dict[str, Any] | None:
    """A stored document, decoded (None when it is not a JSON object)."""
    if data is None:
        return None
    try:
        document = jsontext.decode(data)
    except msgspec.DecodeError:
        return None
    return document if isinstance(document, dict) else None


def holders_of(
    probes: ContentProbes, state_holders: Iterable[Columns], same_time_rows: Iterable[Columns]
) -> dict[str, list[str]]:
    """content_key -> the live holders' ids: the state rows (`content_key, entity_id`) and the live
    logbook rows at a probed time that have no content in merge state (`id, data`), whose content key
    their stored text gives."""
    holders: dict[str, set[str]] = {}
    for r in state_holders:
        holders.setdefault(r["content_key"], set()).add(r["entity_id"])
    for r in same_time_rows:
        content_key = content_key_of_text(r["data"])
        if content_key is not None and content_key in probes:
            holders.setdefault(content_key, set()).add(r["id"])
    return {key: sorted(ids) for key, ids in holders.items()}


def stored_entities(
    rows: Iterable[Columns], elsewhere: set[str] | None, probes: dict[str, int | None] | None = None
) -> dict[EntityKey, StoredEntity]:
    """Each key's `sync_data` row and merge state (columns `entity_type, entity_id, id, checksum, version,
    data, updated_at, deleted_at` of the row, `has_state, updated_ms, deleted_ms, content_key, duplicate_of`
    of the state, `held_elsewhere`, `own_timestamp` of the key's own logbook_entries row), the logbook ids
    another user holds added to `elsewhere`, and the stored logbook keys' content probes to `probes`.

    A row without a content key in merge state (the app's, or a row whose text holds its state) gets the
    content key its text gives, and its edit time from its document."""
    stored: dict[EntityKey, StoredEntity] = {}
    for r in rows:
        key = (r["entity_type"], r["entity_id"])
        if r["held_elsewhere"] and elsewhere is not None:
            elsewhere.add(key[1])
        row_id = r["id"]
        state_updated_ms = r["updated_ms"]
        content_key = r["content_key"]
        logbook = key[0] == LOGBOOK_ENTRY
        wants_time = probes is not None and logbook and r["own_timestamp"] is None
        # The row's document, decoded once, where merge state does not say all the merge needs.
        document = _decoded(r["data"]) if row_id is not None and (
            state_updated_ms is None or (logbook and content_key is None) or wants_time) else None
        if row_id is not None:
            deleted_at = r["deleted_at"]
            live = deleted_at is None
            deleted_ms = r["deleted_ms"] if not live else None
            if content_key is None and logbook and document is not None:
                content_key = content_key_of_document(document)
            stored[key] = StoredEntity(
                row_id=row_id,
                checksum=r["checksum"],
                version=r["version"] or 1,
                live=live,
                data=r["data"],
                updated_ms=state_updated_ms if state_updated_ms is not None
                else _edit_ms(document, r["updated_at"]),
                deleted_ms=None if live else deleted_ms if deleted_ms is not None else to_epoch_ms(deleted_at),
                content_key=content_key,
                duplicate_of=r["duplicate_of"],
                has_state=bool(r["has_state"]),
            )
        elif r["has_state"]:
            stored[key] = StoredEntity(updated_ms=state_updated_ms, deleted_ms=r["deleted_ms"],
                                       content_key=content_key, duplicate_of=r["duplicate_of"], has_state=True)
        if probes is not None and logbook and content_key is not None and probes.get(content_key) is None:
            # The content's session time, where its holders are looked for: the key's own live logbook
            # row's, else its document's (a deleted row, an id another user's row holds), else, for a
            # content duplicate (no row of its own), its holder's document's.
            timestamp = r["own_timestamp"]
            if timestamp is None:
                timestamp = _session_ms(document)
            if timestamp is None:
                timestamp = _session_ms(_decoded(r["holder_data"]))
            probes[content_key] = timestamp
    return stored


def _session_ms(document: dict[str, Any] | None) -> int | None:
    """A stored logbook document's session time (`timestamp`, part of its content), in epoch ms."""
    return to_epoch_ms(document.get("timestamp")) if document is not None else None


def content_key_from(row: Columns | None, key: EntityKey) -> str | None:
    """`content_key_of` from its row (`content_key` of the state, `data` of the live row)."""
    if row is None:
        return None
    if row["content_key"] is not None:
        return str(row["content_key"])
    return content_key_of_text(row["data"]) if key[0] == LOGBOOK_ENTRY and row["data"] is not None else None
