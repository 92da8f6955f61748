"""The rules the service stored rows by before the stored form was corrected (its own earlier code, as of
commit e9a738b), for building a database the way an earlier version left it: piece ids re-derived from
title and composer (typography and periods changed in existing ids), repertoire items keyed by their raw
scoreId, `data` written by msgspec (`1.0`, `1e21`, `-0.0`, exact big integers), `deleted_at` as
`YYYY-MM-DD HH:MM:SS`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from service.domain import normalise as current
from service.domain.records import Normalised
from service.store.sqlite import units

_JS_SPACE = current._JS_SPACE
_SPACE_RUN = re.compile(f"[{_JS_SPACE}]+")
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_CANONICAL = re.compile(r"score_[a-z0-9]+(?:[-_][a-z0-9]+)*", re.ASCII | re.IGNORECASE)


def _title(title: str) -> str:
    return _SPACE_RUN.sub(" ", title.lower().strip(_JS_SPACE)).translate(_TYPOGRAPHY)


def old_score_id(title: str, composer: str | None) -> str:
    normal_title = _title(title)
    normal_composer = _title(composer or "").replace(".", "") or "unknown"
    delimiter = "||" if "-" in normal_title or "-" in normal_composer else "-"
    return normal_title + delimiter + normal_composer


def old_normalise_score_id(existing: str) -> str:
    trimmed = existing.strip(_JS_SPACE)
    if _CANONICAL.fullmatch(trimmed):
        return trimmed
    delimiter = "||" if "||" in trimmed else "-"
    title, _, composer = trimmed.partition(delimiter)
    return old_score_id(title, composer)


def _old_timestamp_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def old_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Uploads made inside this block are stored as the earlier version stored them (normalisation
    runs inline for small uploads, so patching this process is enough)."""
    stored = current._stored
    canonical_json, canonical_object = current._canonical_json, current._canonical_object
    # The document each canonical text was made from: the stored form drops the decoded document, and the
    # old text is written from it (its number spellings are not in the canonical text).
    made_from: dict[str, dict[str, Any]] = {}

    def remembered_json(data: dict[str, Any]) -> str:
        text = canonical_json(data)
        made_from[text] = data
        return text

    def remembered_object(data: dict[str, Any]) -> Any:
        encoded = canonical_object(data)
        made_from[encoded.text()] = data
        return encoded

    def old_stored(entity_type: str, entity_id: str, text: str, *args: Any, **kw: Any) -> Normalised:
        result = stored(entity_type, entity_id, text, *args, **kw)
        return msgspec.structs.replace(result, text=msgspec.json.encode(made_from[text]).decode())

    def old_document(entity_type: str, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int) -> Normalised:
        times = current._document_times(raw, now_ms)
        document = dict(raw)
        return old_stored(entity_type, entity_id, remembered_json(document), times)

    with monkeypatch.context() as patch:
        patch.setattr(current, "score_id", old_score_id)
        patch.setattr(current, "normalise_score_id", old_normalise_score_id)
        patch.setattr(current, "_repertoire_score_id", lambda raw: raw.get("scoreId"))
        patch.setattr(current, "_stored", old_stored)
        patch.setattr(current, "_canonical_json", remembered_json)
        patch.setattr(current, "_canonical_object", remembered_object)
        patch.setattr(current, "_normalise_document", old_document)
        patch.setattr(units, "ms_to_iso_z", _old_timestamp_text)
        yield
