"""The app's single-user files: the full data export (1.0 and 2.0), the practice report, and a browser
localStorage dump (CONTRACT section 3; samples in tests/fixtures/exports/).

Each is read whole (one user's data, which a device could hold) into one `ExportDocument`. Records
keep their bytes exactly as they appear in the file, so the raw archive holds what the device wrote.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service import jsontext
from service.domain import records as rec
from service.replay.model import OwnerClaim, UnreadableInput, is_device_id
from service.usecases.ingest import IncomingRecord

# Full export array -> entity type (the export's own names differ from the push groups).
EXPORT_GROUPS: dict[str, str] = {
    "logbook": rec.LOGBOOK_ENTRY,
    "goals": rec.GOAL,
    "repertoire": rec.REPERTOIRE_ITEM,
    "practicePlans": rec.PRACTICE_PLAN,
    "planOccurrences": rec.PLAN_OCCURRENCE,
    "planTemplates": rec.PLAN_TEMPLATE,
}
EXPORT_PREFERENCES = "preferences"
# Describe the export rather than hold data; anything else with content is reported as not replayed.
EXPORT_METADATA = frozenset({"profile", "exportDate", "version", "dataSource"})

LOCAL_ENTRIES = "mirubato:logbook:entries"
LOCAL_DELETED = "mirubato:logbook:deletedEntries"
LOCAL_GOALS = "mirubato:logbook:goals"
LOCAL_USER = "mirubato:user"
LOCAL_DEVICE = "mirubato:device-id"
LOCAL_PREFIX = "mirubato:"
LOCAL_GROUPS: dict[str, str] = {LOCAL_ENTRIES: rec.LOGBOOK_ENTRY, LOCAL_GOALS: rec.GOAL}

FULL_EXPORT = "full export"
PRACTICE_REPORT = "practice report"
LOCALSTORAGE_DUMP = "localStorage dump"

class _Decoder:
    """`msgspec.json.Decoder(type)`, reading lone surrogate escapes too (`service.jsontext`)."""

    def __init__(self, type_: Any = Any) -> None:
        self._type = type_

    def decode(self, data: bytes | str) -> Any:
        return jsontext.decode(data, self._type)


_raw_object = _Decoder(dict[str, msgspec.Raw])
_raw_array = _Decoder(list[msgspec.Raw])
_any = _Decoder()


class ExportDocument(msgspec.Struct):
    kind: str  # FULL_EXPORT + version, PRACTICE_REPORT or LOCALSTORAGE_DUMP
    claim: OwnerClaim | None  # whose data the file says it is (None: it does not say)
    device_id: str | None
    records: list[IncomingRecord]
    deleted: dict[str, list[Any]]
    not_replayed: list[str]  # keys holding data the service has no entity type for

    @property
    def units(self) -> int:
        return len(self.records) + sum(len(ids) for ids in self.deleted.values())


def parse_export(data: bytes) -> ExportDocument:
    """Recognise and read one single-user file. Raises UnreadableInput (with the field at fault)."""
    try:
        return _parse_export(data)
    except RecursionError as error:  # the decoder's nesting limit: the file is unreadable, the run goes on
        raise UnreadableInput("not valid JSON: nested deeper than the JSON decoder's limit", field="body") from error


def _parse_export(data: bytes) -> ExportDocument:
    body = data.removeprefix(b"\xef\xbb\xbf").strip()
    if not body:
        raise UnreadableInput("the file is empty", field="body")
    if body.startswith(b"["):
        return ExportDocument(PRACTICE_REPORT, None, None, _records(rec.LOGBOOK_ENTRY, body, "body"), {}, [])
    if not body.startswith(b"{"):
        raise UnreadableInput(_not_recognised(), field="body")
    try:
        top = _raw_object.decode(body)
    except msgspec.DecodeError as error:
        raise UnreadableInput(f"not valid JSON: {error}", field="body") from error
    if any(key.startswith(LOCAL_PREFIX) for key in top):
        return _localstorage_dump(top)
    if top.keys() & (EXPORT_GROUPS.keys() | EXPORT_METADATA):
        return _full_export(top)
    raise UnreadableInput(_not_recognised(), field="body")


def _not_recognised() -> str:
    return "not a Mirubato data export, practice report or localStorage dump"


def _records(entity_type: str, array: bytes, field: str) -> list[IncomingRecord]:
    try:
        items = _raw_array.decode(array)
    except msgspec.ValidationError as error:
        raise UnreadableInput(f"must be an array of records: {error}", field=field) from error
    except msgspec.DecodeError as error:
        raise UnreadableInput(f"not valid JSON: {error}", field=field) from error
    return [IncomingRecord(entity_type, bytes(item)) for item in items]


def _full_export(top: dict[str, msgspec.Raw]) -> ExportDocument:
    records: list[IncomingRecord] = []
    for key, entity_type in EXPORT_GROUPS.items():
        if key in top and not _is_null(top[key]):
            records += _records(entity_type, bytes(top[key]), key)
    preferences = top.get(EXPORT_PREFERENCES)
    if preferences is not None and not _is_null(preferences):
        # One document per user, keyed by the user id (the pipeline keys it when it has no id).
        records.append(IncomingRecord(rec.USER_PREFERENCES, bytes(preferences)))
    version = _any.decode(top["version"]) if "version" in top else None
    kind = f"{FULL_EXPORT} {version}" if isinstance(version, str) else FULL_EXPORT
    handled = EXPORT_GROUPS.keys() | EXPORT_METADATA | {EXPORT_PREFERENCES}
    not_replayed = [key for key, value in top.items() if key not in handled and _has_content(value)]
    claim = _claim(_any.decode(top["profile"]), "profile") if "profile" in top else None
    return ExportDocument(kind, claim, None, records, {}, not_replayed)


def _localstorage_dump(top: dict[str, msgspec.Raw]) -> ExportDocument:
    records: list[IncomingRecord] = []
    for key, entity_type in LOCAL_GROUPS.items():
        if key in top:
            records += _records(entity_type, _stored_json(top[key], key), key)
    deleted: dict[str, list[Any]] = {}
    if LOCAL_DELETED in top:
        ids = _any.decode(_stored_json(top[LOCAL_DELETED], LOCAL_DELETED))
        if not isinstance(ids, list):
            raise UnreadableInput("must be an array of entry ids", field=LOCAL_DELETED)
        if ids:
            deleted[rec.LOGBOOK_ENTRY] = ids
    claim = _claim(_any.decode(_stored_json(top[LOCAL_USER], LOCAL_USER)), LOCAL_USER) if LOCAL_USER in top else None
    handled = LOCAL_GROUPS.keys() | {LOCAL_DELETED, LOCAL_USER, LOCAL_DEVICE}
    not_replayed = [key for key, value in top.items() if key not in handled and _has_content(value)]
    return ExportDocument(LOCALSTORAGE_DUMP, claim, _device(top.get(LOCAL_DEVICE)), records, deleted, not_replayed)


def _stored_json(value: msgspec.Raw, field: str) -> bytes:
    """localStorage holds JSON as text; a dump tool may also have written the value already parsed."""
    raw = bytes(value)
    if not raw.lstrip().startswith(b'"'):
        return raw
    text = _any.decode(raw)
    try:
        _any.decode(text)
    except msgspec.DecodeError as error:
        raise UnreadableInput(f"the stored text is not valid JSON: {error}", field=field) from error
    return jsontext.escape_lone_surrogates(str(text)).encode()


def _claim(value: object, field: str) -> OwnerClaim | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UnreadableInput("must be an object naming the user", field=field)
    user_id, email = value.get("id"), value.get("email")
    claim = OwnerClaim(
        user_id if isinstance(user_id, str) and user_id else None,
        email if isinstance(email, str) and email else None,
    )
    return claim if claim.user_id or claim.email else None


def _device(value: msgspec.Raw | None) -> str | None:
    if value is None:
        return None
    device = _any.decode(value)
    if isinstance(device, str) and device.startswith('"'):
        device = _any.decode(device)  # stored with JSON.stringify
    return device if is_device_id(device) else None


def _is_null(value: msgspec.Raw) -> bool:
    return bytes(value).strip() == b"null"


def _has_content(value: msgspec.Raw) -> bool:
    return bytes(value).strip() not in {b"null", b"[]", b"{}", b'""', b'"[]"', b'"{}"'}
