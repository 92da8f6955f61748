"""Turn one uploaded record into the app's stored form, a deletion, or a quarantine reason.

CONTRACT sections 3, 6 and 7; `tests/fixtures/normalization_vectors.json` is authoritative. A logbook
entry goes through the repairs the app itself would refuse to make (step 1), then the app's own rules
(step 2), and comes out as the document the app would have stored plus its `logbook_entries` row.
Goals keep the app's goal columns (step 3); every other entity type is stored as the document it is.

`normalise` never raises on JSON data: every record ends as Normalised, Tombstone or Rejection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from service import jsontext
from service.domain.checksum import CanonicalObject, canonical_json, checksum_of_text, is_plain
from service.domain.records import (
    ENTITY_TYPE_OF,
    ENTITY_TYPES,
    FUTURE_TIME,
    GOAL,
    INVALID_TIME,
    INVALID_VALUE,
    LOGBOOK_ENTRY,
    MAX_DOCUMENT_BYTES,
    MISSING_FIELD,
    MISSING_ID,
    NOT_AN_OBJECT,
    REPERTOIRE_ITEM,
    TOO_LARGE,
    UNKNOWN_ENTITY_TYPE,
    USER_MISMATCH,
    USER_PREFERENCES,
    EntityType,
    LogbookRow,
    Normalisation,
    Normalised,
    QuarantineReason,
    Rejection,
    Tombstone,
)
from service.domain.times import is_iso_z, js_round, ms_to_iso_z, to_epoch_ms

ENTRY_TYPES = frozenset(
    {"practice", "performance", "lesson", "rehearsal", "technique", "status_change", "masterclass", "other"}
)
MOODS = frozenset({"frustrated", "neutral", "satisfied", "excited", "proud"})

# The fields the app keeps in a stored entry and in each of its pieces (CONTRACT section 6 step 2).
ENTRY_FIELDS = frozenset(
    {
        "id", "user_id", "timestamp", "duration", "type", "instrument", "pieces", "techniques", "goal_ids",
        "goalIds", "notes", "mood", "tags", "session_id", "metadata", "created_at", "createdAt",
        "updated_at", "updatedAt", "sync_version", "checksum", "deleted_at", "deletedAt", "device_id",
    }
)  # fmt: skip
PIECE_FIELDS = frozenset({"id", "title", "composer", "duration"})
GOAL_FIELDS = frozenset(
    {
        "id", "user_id", "title", "description", "type", "target_value", "current_value", "target_date",
        "status", "created_at", "updated_at",
    }
)  # fmt: skip

# Left out of an entry's content key: the same session logged under two ids differs only in these.
CONTENT_KEY_IGNORED = frozenset(
    {
        "id",
        "user_id",
        "created_at",
        "createdAt",
        "updated_at",
        "updatedAt",
        "device_id",
        "sync_version",
        "checksum",
    }
)

GOAL_STATUSES = frozenset({"active", "completed", "abandoned"})
LEGACY_GOAL_STATUSES = {"paused": "active", "cancelled": "abandoned"}

# The production `logbook_entries` table still carries CHECKs from an older enum set.
ROW_TYPES = frozenset({"practice", "performance", "lesson", "rehearsal", "technique"})
ROW_INSTRUMENTS = frozenset({"piano", "guitar"})
ROW_MOODS = frozenset({"frustrated", "neutral", "satisfied", "excited"})
_SQLITE_INTEGER_MAX = 2**63 - 1
_MAX_SAFE_INTEGER = 2**53  # integers JavaScript holds exactly

REQUIRED_ENTRY_FIELDS = ("timestamp", "duration", "type", "instrument")
# Entry times the app stores as epoch ms, and the ones it stores as ISO-Z strings.
ENTRY_MS_TIMES = ("timestamp", "created_at", "updated_at")
ENTRY_ISO_TIMES = ("createdAt", "updatedAt")
# Times of any document that order versions; the first one present is the version's time.
VERSION_TIMES = ("updatedAt", "updated_at", "createdAt", "created_at")
ENTRY_LIST_FIELDS = ("pieces", "techniques", "tags", "goal_ids", "goalIds")

FUTURE_TOLERANCE_MS = 24 * 60 * 60 * 1000

_T = TypeVar("_T")

# Canonical Scorebook ids are kept as they are. ASCII-only case folding, as in JavaScript's /i.
_CANONICAL_SCORE_ID = re.compile(r"score_[a-z0-9]+(?:[-_][a-z0-9]+)*", re.ASCII | re.IGNORECASE)
# JavaScript's \s and String.prototype.trim: WhiteSpace and LineTerminator code points.
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_SPACE_RUN = re.compile(f"[{_JS_SPACE}]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Titles: curly quotes to straight ones, en and em dashes to "-". Composers: curly single quotes only.
_TITLE_TYPOGRAPHY = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_COMPOSER_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'"})
# Lowercase mappings JavaScript engines (ICU, Unicode 16/17) know and Python 3.11 (Unicode 14) does not:
# (first upper, last upper, offset to its lower). Checked against node's toLowerCase over every code point.
_JS_LOWER_RANGES = (
    (0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, 0x264 - 0xA7CB), (0xA7CC, 0xA7CC, 1), (0xA7CE, 0xA7CE, 1),
    (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1), (0xA7DA, 0xA7DA, 1), (0xA7DC, 0xA7DC, 0x19B - 0xA7DC),
    (0x10D50, 0x10D65, 0x20), (0x16EA0, 0x16EB8, 0x1B),
)  # fmt: skip
_JS_LOWER_EXTRA = {
    code: code + offset for first, last, offset in _JS_LOWER_RANGES for code in range(first, last + 1)
}


class _Quarantine(Exception):
    """Raised inside this module when a record cannot go in; `normalise` turns it into a Rejection."""

    def __init__(self, reason: QuarantineReason, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


def normalise(name: str, raw: object, user_id: str, *, now_ms: int) -> Normalisation:
    """The app's stored form of one uploaded record (or its deletion, or why it is quarantined).

    `name` is the entity type as the device sent it: any string, as a device may send anything; one that
    is not an EntityType is quarantined under it. `user_id` is the uploading user; `now_ms` is the upload
    time, against which future times are judged.
    """
    entity_type = ENTITY_TYPE_OF.get(name) if isinstance(name, str) else None
    if entity_type is None:
        # Keep the record's own id in the answer when it has one, so the device can tell which it was.
        own_id = raw.get("id") if isinstance(raw, dict) else None
        return Rejection(
            d1_text(name),
            d1_text(own_id) if isinstance(own_id, str) and own_id else None,
            UNKNOWN_ENTITY_TYPE,
            "entity_type",
            f"unknown entity type {_show(name)}",
        )
    if not isinstance(raw, dict):
        return Rejection(entity_type, None, NOT_AN_OBJECT, None, f"the record is {_json_kind(raw)}, not an object")
    entity_id = _entity_id(entity_type, raw, user_id)
    if entity_id is None:
        return Rejection(entity_type, None, MISSING_ID, "id", "the record has no id string")
    try:
        _check_owner(raw, user_id)
        if _js_truthy(raw.get("deletedAt")):
            return _tombstone(entity_type, entity_id, raw["deletedAt"], now_ms)
        return _NORMALISERS.get(entity_type, _normalise_document)(entity_type, entity_id, raw, user_id, now_ms)
    except _Quarantine as quarantine:
        return Rejection(entity_type, entity_id, quarantine.reason, quarantine.field, quarantine.detail)


# A user's pieces recur from session to session: their ids are worked out once, then looked up.
_MAX_CACHED_SCORE_IDS = 8192
_score_ids: dict[tuple[str, str | None], str] = {}
_normal_score_ids: dict[str, str] = {}


_MAX_CACHED_SCORE_ID_CHARS = 512  # a huge title is worked out each time rather than kept


def _remember(cache: dict[Any, str], key: Any, value: str) -> str:
    if len(cache) >= _MAX_CACHED_SCORE_IDS:
        cache.clear()
    cache[key] = value
    return value


def score_id(title: str, composer: str | None) -> str:
    """The score id the app builds for a piece from its title and composer (`generateNormalizedScoreId`)."""
    if (
        type(title) is str
        and (composer is None or type(composer) is str)
        and len(title) + len(composer or "") <= _MAX_CACHED_SCORE_ID_CHARS
    ):
        found = _score_ids.get((title, composer))
        return found if found is not None else _remember(_score_ids, (title, composer), _score_id(title, composer))
    return _score_id(title, composer)


def _score_id(title: str, composer: str | None) -> str:
    normal_title = _normal_title(title)
    # "Unknown" only for a missing or empty composer: one that normalises to "" (" ... ") stays empty.
    normal_composer = _normal_composer(composer or "Unknown")
    return _join_score_id(normal_title, normal_composer)


def normalise_score_id(existing: str) -> str:
    """An existing piece id as the app rewrites it (`normalizeExistingScoreId`): canonical Scorebook ids
    are kept; any other id is only lowercased, trimmed, split into title and composer and joined again.
    Quotes, dashes, periods and inner spaces stay as they are."""
    if type(existing) is str and len(existing) <= _MAX_CACHED_SCORE_ID_CHARS:
        found = _normal_score_ids.get(existing)
        return found if found is not None else _remember(_normal_score_ids, existing, _normalise_score_id(existing))
    return _normalise_score_id(existing)


def _normalise_score_id(existing: str) -> str:
    trimmed = _js_trim(existing)
    if not trimmed or _CANONICAL_SCORE_ID.fullmatch(trimmed):
        return trimmed
    lowered = _js_trim(js_lower(trimmed))
    # The first "||" splits when there is one, else the first "-"; the rest (delimiters included) is the composer.
    title, delimiter, composer = lowered.partition("||" if "||" in lowered else "-")
    if not delimiter:
        return _join_score_id(lowered, "unknown")
    return _join_score_id(_js_trim(title), _js_trim(composer) or "unknown")


def _join_score_id(title: str, composer: str) -> str:
    # Titles often contain a dash ("Sonata K. 331 - Rondo"), so the pair then needs a delimiter it lacks.
    return title + ("||" if "-" in title or "-" in composer else "-") + composer


def js_lower(text: str) -> str:
    """JavaScript's `toLowerCase()`: Python's `lower()` (full mappings, final sigma) plus the case pairs
    of scripts newer than Python's Unicode database."""
    lowered = text.lower()
    return lowered if lowered.isascii() else lowered.translate(_JS_LOWER_EXTRA)


# --- the record as a whole -------------------------------------------------------------------------


# Every field `_entity_id` reads of a record: a caller may decode only these (usecases.ingest.key_fields).
KEY_FIELDS = ("id", "scoreId", "score_id")


def _entity_id(entity_type: str, raw: Mapping[str, Any], user_id: str) -> str | None:
    if entity_type == REPERTOIRE_ITEM:
        # The app's sync worker keys a repertoire item by its scoreId as `normalizeExistingScoreId` gives
        # it (the form logbook pieces link to), else by `score_id`, else by `id`, each as it is.
        candidates: Iterable[object] = (_repertoire_score_id(raw), raw.get("score_id"), raw.get("id"))
    elif entity_type == USER_PREFERENCES:
        # Preferences are one document per user, keyed by the uploader's user id whatever the document says.
        candidates = (user_id,)
    else:
        candidates = (raw.get("id"),)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return d1_text(candidate)
    return None


def _repertoire_score_id(raw: Mapping[str, Any]) -> str | None:
    score_id = raw.get("scoreId")
    return normalise_score_id(score_id) if isinstance(score_id, str) else None


def d1_text(text: str) -> str:
    """A string as D1 stores it in a TEXT column: UTF-8, so a lone surrogate (a note cut inside an
    emoji) becomes U+FFFD, as JavaScript's UTF-8 encoding makes it. (The JSON `data` text keeps it as
    its `\\udxxx` escape, which is ASCII.)"""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


def _check_owner(raw: Mapping[str, Any], user_id: str) -> None:
    # A falsy owner is "absent" to the app, which then fills in the uploader.
    for field in ("user_id", "userId"):
        owner = raw.get(field)
        if _js_truthy(owner) and owner != user_id:
            raise _Quarantine(USER_MISMATCH, field, f"the record belongs to {_show(owner)}, not the uploader")


def _tombstone(entity_type: EntityType, entity_id: str, deleted_at: object, now_ms: int) -> Tombstone:
    deleted_ms = _parse_time("deletedAt", deleted_at, now_ms)
    return Tombstone(entity_type, entity_id, ms_to_iso_z(deleted_ms), deleted_ms)


def _stored(
    entity_type: EntityType,
    entity_id: str,
    text: str,
    times: Mapping[str, int],
    **entry_extras: Any,
) -> Normalised:
    """The Normalised record of a document whose canonical JSON is `text`."""
    # UTF-8 needs at most 4 bytes a character, so short texts need no encoding to be measured.
    if len(text) > MAX_DOCUMENT_BYTES // 4 and (size := len(text.encode("utf-8"))) > MAX_DOCUMENT_BYTES:
        raise _Quarantine(TOO_LARGE, None, f"the stored document is {size} bytes, over D1's {MAX_DOCUMENT_BYTES}")
    updated_ms = _first(times, VERSION_TIMES, default=None)
    return Normalised(entity_type, entity_id, checksum_of_text(text), updated_ms, text, **entry_extras)


def _canonical_json(data: dict[str, Any]) -> str:
    try:
        return canonical_json(data)
    except (TypeError, RecursionError) as error:
        raise _unstorable(error) from None


def _canonical_object(data: dict[str, Any]) -> CanonicalObject:
    try:
        return CanonicalObject(data)
    except (TypeError, RecursionError) as error:
        raise _unstorable(error) from None


def _unstorable(error: Exception) -> _Quarantine:
    # Only reachable with values JSON cannot carry, or nesting deeper than Python's recursion limit.
    return _Quarantine(INVALID_VALUE, None, f"the document cannot be stored as JSON: {type(error).__name__}")


# --- logbook entries ---------------------------------------------------------------------------------


def _normalise_entry(
    entity_type: EntityType, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int
) -> Normalised:
    fast = _fast_entry(entity_type, entity_id, raw, user_id, now_ms)
    return fast if fast is not None else _general_entry(entity_type, entity_id, raw, user_id, now_ms)


def _fast_entry(
    entity_type: EntityType, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int
) -> Normalised | None:
    """`_general_entry` for the entries devices send nearly always, in one pass: ASCII enums, a number of
    minutes, valid times, lists and metadata of plain values (see `checksum.is_plain`). None for anything
    else, which the general path then decides (repairs, quarantines): this path never quarantines.

    Step for step what `_general_entry` does, in its order; tests/domain/test_normalise_fast.py checks the
    two (and the implementation before this path existed) agree on generated documents."""
    entry = {key: value for key, value in raw.items() if key in ENTRY_FIELDS}
    get = entry.get
    # Required fields and enums (`_check_required_fields`, `_repair_enums`): ASCII, so lower() is JavaScript's.
    entry_type, instrument, mood, duration = get("type"), get("instrument"), get("mood"), get("duration")
    if type(entry_type) is not str or type(instrument) is not str or get("timestamp") is None:
        return None
    if not (entry_type.isascii() and instrument.isascii() and instrument):
        return None
    entry["type"] = entry_type = entry_type.lower()
    entry["instrument"] = instrument.lower()
    if entry_type not in ENTRY_TYPES:
        return None
    if mood is not None:
        if type(mood) is not str or not mood.isascii():
            return None
        entry["mood"] = mood = mood.lower()
        if mood not in MOODS:
            return None
    # `_repair_duration`
    if type(duration) is int:
        if not 0 <= duration <= _MAX_SAFE_INTEGER:
            return None
    elif type(duration) is float and 0 <= duration < _MAX_SAFE_INTEGER:  # also false for NaN
        entry["duration"] = js_round(duration)
    else:
        return None
    # `_repair_entry_times`
    latest = now_ms + FUTURE_TOLERANCE_MS
    times: dict[str, int] = {}
    for field in ENTRY_MS_TIMES:
        value = get(field)
        if field == "timestamp" or (value is not None and value != ""):
            ms = to_epoch_ms(value)
            if ms is None or ms > latest:
                return None
            times[field] = entry[field] = ms
    for field in ENTRY_ISO_TIMES:
        value = get(field)
        if value is not None and value != "":
            ms = to_epoch_ms(value)
            if ms is None or ms > latest:
                return None
            times[field] = ms
            if not is_iso_z(value):
                entry[field] = ms_to_iso_z(ms)
    # `_check_value_types`
    for field in ENTRY_LIST_FIELDS:
        value = get(field)
        if value is not None and type(value) is not list:
            return None
    for field, kind in (("notes", str), ("session_id", str), ("metadata", dict)):
        value = get(field)
        if value is not None and type(value) is not kind:
            return None
    # `_apply_app_field_rules`
    if not _js_truthy(get("user_id")):
        entry["user_id"] = user_id
    if _js_truthy(get("goalIds")) and not _js_truthy(get("goal_ids")):
        entry["goal_ids"] = entry.pop("goalIds")
    for camel, snake in (("createdAt", "created_at"), ("updatedAt", "updated_at")):
        if _js_truthy(get(camel)) and not _js_truthy(get(snake)):
            entry[snake] = entry[camel]
            times[snake] = times[camel]
    pieces = get("pieces")
    if pieces is not None:
        for piece in pieces:
            if type(piece) is not dict:
                return None
        # The pieces step quarantines only what the general path, which got this far too, quarantines.
        entry["pieces"] = [_normalise_piece(piece) for piece in pieces]
    # What the steps above wrote is plain (strings, None, integers within 2**53, keys that are ENTRY_FIELDS
    # names); of what the device sent as it was, only these members can hold anything else.
    if not is_plain([get(field) for field in _UNCHECKED_ENTRY_FIELDS]):
        return None
    encoded = CanonicalObject.of_plain(entry, checked=True)
    if encoded is None:
        return None
    text = encoded.text()
    if len(text) > MAX_DOCUMENT_BYTES // 4:
        return None  # maybe too large: the general path measures it
    row, refusal = _logbook_row(entity_id, entry, encoded, times)
    updated_ms = _first(times, VERSION_TIMES, default=None)
    return Normalised(
        entity_type,
        entity_id,
        encoded.checksum(),
        updated_ms,
        text,
        content_key=encoded.checksum(omit=CONTENT_KEY_IGNORED),
        logbook_row=row,
        logbook_refusal=refusal,
        text_holds_state=updated_ms is not None and document_edit_ms(entry) == updated_ms,
    )


# Every ENTRY_FIELDS member the fast path does not write or check itself (notes and session_id it checks
# are strings or None; the times, duration, enums and user_id it writes).
_UNCHECKED_ENTRY_FIELDS = tuple(
    sorted(
        ENTRY_FIELDS
        - {"user_id", "duration", "type", "instrument", "mood", "notes", "session_id"}
        - {*ENTRY_MS_TIMES, *ENTRY_ISO_TIMES}
    )
)


def _general_entry(
    entity_type: EntityType, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int
) -> Normalised:
    _check_required_fields(raw)
    entry = {key: value for key, value in raw.items() if key in ENTRY_FIELDS}
    # Step 1: what the app itself would refuse, repaired.
    _repair_enums(entry)
    _repair_duration(entry)
    times = _repair_entry_times(entry, now_ms)
    _check_value_types(entry)
    # Step 2: the app's own rules.
    _apply_app_field_rules(entry, user_id, times)
    if isinstance(entry.get("pieces"), list):
        entry["pieces"] = [_normalise_piece(piece) for piece in entry["pieces"]]
    # Encode each field once: the document, its content key and the row's JSON columns share the texts.
    encoded = _canonical_object(entry)
    row, refusal = _logbook_row(entity_id, entry, encoded, times)
    updated_ms = _first(times, VERSION_TIMES, default=None)
    return _stored(
        entity_type,
        entity_id,
        encoded.text(),
        times,
        content_key=checksum_of_text(encoded.text(omit=CONTENT_KEY_IGNORED)),
        logbook_row=row,
        logbook_refusal=refusal,
        # Only a plain encoding is known to come back from its text unchanged (floats, lone surrogates
        # may not): any other document keeps its merge state in a row of its own.
        text_holds_state=encoded.plain and updated_ms is not None and document_edit_ms(entry) == updated_ms,
    )


def _check_required_fields(raw: Mapping[str, Any]) -> None:
    for field in REQUIRED_ENTRY_FIELDS:
        if raw.get(field) is None:
            raise _Quarantine(MISSING_FIELD, field, f"a logbook entry needs {field}")


def _repair_enums(entry: dict[str, Any]) -> None:
    # Clients from before July 2025 sent PRACTICE, PIANO, SATISFIED.
    for field in ("type", "instrument", "mood"):
        if isinstance(entry.get(field), str):
            entry[field] = js_lower(entry[field])
    entry_type, instrument, mood = entry["type"], entry["instrument"], entry.get("mood")
    if not (isinstance(entry_type, str) and entry_type in ENTRY_TYPES):
        raise _Quarantine(INVALID_VALUE, "type", f"type {_show(entry_type)} is not one the app knows")
    if not (isinstance(instrument, str) and instrument):
        raise _Quarantine(INVALID_VALUE, "instrument", "instrument must be a non-empty string")
    if mood is not None and not (isinstance(mood, str) and mood in MOODS):
        raise _Quarantine(INVALID_VALUE, "mood", f"mood {_show(mood)} is not one the app knows")


def _repair_duration(entry: dict[str, Any]) -> None:
    duration = entry["duration"]
    if type(duration) not in (int, float) or (isinstance(duration, float) and not math.isfinite(duration)):
        raise _Quarantine(INVALID_VALUE, "duration", f"duration {_show(duration)} is not a number of minutes")
    if duration < 0:
        raise _Quarantine(INVALID_VALUE, "duration", f"duration {_show(duration)} is negative")
    entry["duration"] = js_round(duration)


def _repair_entry_times(entry: dict[str, Any], now_ms: int) -> dict[str, int]:
    """Validate every time of the entry and put each in the form the app stores; returns them in ms."""
    times: dict[str, int] = {}
    for field in ENTRY_MS_TIMES:
        if field == "timestamp" or _given(entry.get(field)):  # the practice time is required
            times[field] = entry[field] = _parse_time(field, entry[field], now_ms)
    for field in ENTRY_ISO_TIMES:
        value = entry.get(field)
        if _given(value):
            times[field] = _parse_time(field, value, now_ms)
            if not is_iso_z(value):
                entry[field] = ms_to_iso_z(times[field])
    return times


def _check_value_types(entry: Mapping[str, Any]) -> None:
    for field in ENTRY_LIST_FIELDS:
        if entry.get(field) is not None and not isinstance(entry[field], list):
            raise _Quarantine(INVALID_VALUE, field, f"{field} must be a list, got {_json_kind(entry[field])}")
    for field, kind, name in (
        ("notes", str, "a string"),
        ("session_id", str, "a string"),
        ("metadata", dict, "an object"),
    ):
        if entry.get(field) is not None and not isinstance(entry[field], kind):
            raise _Quarantine(INVALID_VALUE, field, f"{field} must be {name} or null, got {_json_kind(entry[field])}")


def _apply_app_field_rules(entry: dict[str, Any], user_id: str, times: dict[str, int]) -> None:
    # "Present" is JavaScript truthiness here, exactly as in the app: an empty list is present.
    if not _js_truthy(entry.get("user_id")):
        entry["user_id"] = user_id
    if _js_truthy(entry.get("goalIds")) and not _js_truthy(entry.get("goal_ids")):
        entry["goal_ids"] = entry.pop("goalIds")
    for camel, snake in (("createdAt", "created_at"), ("updatedAt", "updated_at")):
        if _js_truthy(entry.get(camel)) and not _js_truthy(entry.get(snake)):
            entry[snake] = entry[camel]
            times[snake] = times[camel]


def _normalise_piece(piece: object) -> dict[str, Any]:
    if not isinstance(piece, dict):
        raise _Quarantine(INVALID_VALUE, "pieces", f"a piece is {_json_kind(piece)}, not an object")
    # The app refuses `composer: null`; without the key the piece is the same piece.
    kept = {
        key: value for key, value in piece.items() if key in PIECE_FIELDS and not (key == "composer" and value is None)
    }
    title, composer, existing = kept.get("title"), kept.get("composer"), kept.get("id")
    if title is not None and not isinstance(title, str):
        raise _Quarantine(INVALID_VALUE, "pieces", f"a piece title is {_json_kind(title)}, not a string")
    if composer is not None and not isinstance(composer, str):
        raise _Quarantine(INVALID_VALUE, "pieces", f"a piece composer is {_json_kind(composer)}, not a string")
    if isinstance(existing, str) and _js_trim(existing):
        kept["id"] = normalise_score_id(existing)
    elif title:
        kept["id"] = score_id(title, composer)
    else:
        kept.pop("id", None)  # the app writes `id: undefined`, which JSON drops
    return kept


def _logbook_row(
    entity_id: str, entry: Mapping[str, Any], encoded: CanonicalObject, times: Mapping[str, int]
) -> tuple[LogbookRow | None, str | None]:
    """The entry's `logbook_entries` row, or why the production table's CHECKs would refuse it.

    The row's JSON columns reuse the entry's canonical encoding (`encoded`).
    """
    entry_type, instrument, mood = entry["type"], entry["instrument"], entry.get("mood")
    if entry_type not in ROW_TYPES or instrument not in ROW_INSTRUMENTS or not (mood is None or mood in ROW_MOODS):
        refused = [
            f"{field} {_show(entry.get(field))}"
            for field, allowed in (("type", ROW_TYPES), ("instrument", ROW_INSTRUMENTS), ("mood", ROW_MOODS))
            if not (entry.get(field) in allowed or (field == "mood" and entry.get(field) is None))
        ]
        return None, "logbook_entries CHECK refuses " + ", ".join(refused)
    duration = entry["duration"]
    if duration > _SQLITE_INTEGER_MAX:
        return None, f"logbook_entries cannot hold duration {duration} in an INTEGER column"
    timestamp = times["timestamp"]
    created = _first(times, ("created_at", "createdAt"), default=timestamp)
    updated = _first(times, ("updated_at", "updatedAt"), default=created)
    get, value_text = entry.get, encoded.value_text
    notes, session_id, metadata = get("notes"), get("session_id"), get("metadata")
    row = LogbookRow(
        id=entity_id,
        timestamp=timestamp,
        duration=duration,
        type=entry_type,
        instrument=d1_text(instrument),
        # A list column holds "[]" for an absent, null or empty list.
        pieces=value_text("pieces") if get("pieces") else "[]",
        techniques=value_text("techniques") if get("techniques") else "[]",
        goal_ids=value_text("goal_ids") if get("goal_ids") else "[]",
        notes=None if notes is None else d1_text(notes),
        mood=mood,
        tags=value_text("tags") if get("tags") else "[]",
        session_id=None if session_id is None else d1_text(session_id),
        metadata=None if metadata is None else value_text("metadata"),
        created_at=created,
        updated_at=updated,
    )
    return row, None


# --- goals and plain documents -------------------------------------------------------------------------


def _normalise_goal(
    entity_type: EntityType, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int
) -> Normalised:
    times = _document_times(raw, now_ms)
    goal = {key: value for key, value in raw.items() if key in GOAL_FIELDS}
    # The app accepts a goal without a status and stores it without one; `null` is the same as absent.
    if goal.get("status") is None:
        goal.pop("status", None)
    else:
        goal["status"] = _goal_status(goal["status"])
    title = goal.get("title")
    if title is not None and not isinstance(title, str):
        raise _Quarantine(INVALID_VALUE, "title", f"title must be a string, got {_json_kind(title)}")
    return _stored(entity_type, entity_id, _canonical_json(goal), times)


def _goal_status(status: object) -> str:
    if isinstance(status, str):
        lowered = js_lower(status)
        mapped = LEGACY_GOAL_STATUSES.get(lowered, lowered)
        if mapped in GOAL_STATUSES:
            return mapped
    raise _Quarantine(INVALID_VALUE, "status", f"goal status {_show(status)} is not one the app knows")


def _normalise_document(
    entity_type: EntityType, entity_id: str, raw: dict[str, Any], user_id: str, now_ms: int
) -> Normalised:
    # Plans, occurrences, templates, repertoire and preferences are stored as the device holds them,
    # but for a repertoire item's scoreId, which the app normalises as it does a piece id.
    times = _document_times(raw, now_ms)
    document = dict(raw)
    if entity_type == REPERTOIRE_ITEM and isinstance(document.get("scoreId"), str):
        document["scoreId"] = normalise_score_id(document["scoreId"])
    return _stored(entity_type, entity_id, _canonical_json(document), times)


def _document_times(raw: Mapping[str, Any], now_ms: int) -> dict[str, int]:
    return {field: _parse_time(field, raw[field], now_ms) for field in VERSION_TIMES if _given(raw.get(field))}


_Normaliser = Callable[[EntityType, str, dict[str, Any], str, int], Normalised]
_NORMALISERS: dict[EntityType, _Normaliser] = {LOGBOOK_ENTRY: _normalise_entry, GOAL: _normalise_goal}


# --- small helpers -----------------------------------------------------------------------------------


def _parse_time(field: str, value: object, now_ms: int) -> int:
    ms = to_epoch_ms(value)
    if ms is None:
        raise _Quarantine(INVALID_TIME, field, f"{field} {_show(value)} is not a time")
    if ms > now_ms + FUTURE_TOLERANCE_MS:
        raise _Quarantine(FUTURE_TIME, field, f"{field} {ms_to_iso_z(ms)} is more than a day in the future")
    return ms


def _given(value: object) -> bool:
    # An optional time sent as null or "" is simply not given.
    return value is not None and value != ""


def _js_truthy(value: object) -> bool:
    """JavaScript truthiness of a JSON value: everything except null, false, 0, NaN and ""."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str)):
        return bool(value) and value == value
    return True


def document_edit_ms(document: Mapping[str, Any]) -> int | None:
    """A stored document's edit time as the merge reads it back from a row without merge state: the
    first of `VERSION_TIMES` that holds a time."""
    for field in VERSION_TIMES:
        value = document.get(field)
        if value:
            ms = to_epoch_ms(value)
            if ms is not None:
                return ms
    return None


def content_key_of_text(text: str) -> str | None:
    """The content key of a stored logbook document (`Normalised.content_key`), from its text."""
    try:
        document = jsontext.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    return content_key_of_document(document) if isinstance(document, dict) else None


def content_key_of_document(document: dict[str, Any]) -> str | None:
    """`content_key_of_text` of a document already decoded."""
    try:
        return CanonicalObject(document).checksum(omit=CONTENT_KEY_IGNORED)
    except (TypeError, RecursionError):
        return None


def _first(times: Mapping[str, int], fields: Iterable[str], *, default: _T) -> int | _T:
    """The time of the first of `fields` that was given."""
    for field in fields:
        if field in times:
            return times[field]
    return default


def _js_trim(text: str) -> str:
    return text.strip(_JS_SPACE)


def _normal_title(title: str) -> str:
    # `normalizePieceTitle`: lowercase, trim, whitespace runs to one space, curly quotes straight, en/em dash "-".
    text = _js_trim(js_lower(title))
    # Most titles are plain ASCII with single spaces; those need nothing more (isprintable rules out tabs).
    if text.isascii() and text.isprintable() and "  " not in text:
        return text
    return _JS_SPACE_RUN.sub(" ", text).translate(_TITLE_TYPOGRAPHY)


def _normal_composer(composer: str) -> str:
    # `normalizeComposer`: as a title, but only curly single quotes change, and periods go ("J.S. Bach"
    # and "JS Bach" are the same composer); curly double quotes and en/em dashes stay.
    text = _js_trim(js_lower(composer))
    if not (text.isascii() and text.isprintable() and "  " not in text):
        text = _JS_SPACE_RUN.sub(" ", text).translate(_COMPOSER_TYPOGRAPHY)
    return text.replace(".", "")


def _json_kind(value: object) -> str:
    kinds = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A short printable form of a value for a rejection's detail."""
    if isinstance(value, (dict, list)):
        return _json_kind(value)  # never repr a container: it may be huge, or nested past the recursion limit
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def entity_id_of(entity_type: str, raw: object, user_id: str) -> str | None:
    """The key a record would be stored under, without normalising it (None when it has none)."""
    if entity_type not in ENTITY_TYPES or not isinstance(raw, dict):
        return None
    return _entity_id(entity_type, raw, user_id)
