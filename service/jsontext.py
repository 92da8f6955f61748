"""Reading and writing JSON text the way the app's JavaScript does, lone UTF-16 surrogates included.

A note cut inside an emoji holds a lone surrogate, which `JSON.stringify` writes as an escape
(`"\\ud83d"`), and the app's `JSON.parse` reads back. msgspec refuses such an escape ("unexpected end of
escaped utf-16 surrogate pair"), so without care one such record would refuse a whole push, upload,
export file or replay line. `decode` therefore uses msgspec, and only when msgspec refuses a text that
holds a surrogate escape, reads it again with the standard library's decoder, which accepts them (as
Python strings holding the surrogate code point). `msgspec.Raw` fields of the target type are filled
with the exact bytes of their values either way, so raw records keep the device's bytes.

Nesting deeper than a decoder can go stays an error (RecursionError / DecodeError): that is the one
whole-body refusal left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

# A \uD800-\uDFFF escape, high or low: msgspec refuses the lone ones (a well-formed pair it reads).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")
_WHITESPACE = " \t\n\r"
_any = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _refuse_constant(name: str) -> Any:
    # JSON.parse refuses NaN and Infinity; so must the fallback (the standard library accepts them).
    raise ValueError(f"{name} is not JSON")


_fallback = json.JSONDecoder(parse_constant=_refuse_constant)
_scan_once: Callable[[str, int], tuple[Any, int]] = _fallback.scan_once  # type: ignore[attr-defined]
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def has_surrogate_escape(data: bytes | str) -> bool:
    """True when the JSON text holds a `\\udxxx` escape (the only case the fallback is for)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return _SURROGATE_ESCAPE.search(raw) is not None


@overload
def decode(data: bytes | str) -> Any: ...
@overload
def decode(data: bytes | str, type: type[T]) -> T: ...
def decode(data: bytes | str, type: Any = Any) -> Any:
    """`msgspec.json.decode(data, type=type)`, that also reads lone surrogate escapes as JSON.parse does.

    Raises what msgspec raises (DecodeError, ValidationError, RecursionError) for anything else it refuses.
    """
    try:
        return _any.decode(data) if type is Any else msgspec.json.decode(data, type=type)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as error:
        if not has_surrogate_escape(data):
            raise
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            value = _parse_document(text, None if type is Any else mi.type_info(type))
        except (ValueError, RecursionError):
            raise error from None  # not JSON for this reader either: the original error stands
        return value if type is Any else msgspec.convert(value, type)


def encode(value: Any) -> bytes:
    """`msgspec.json.encode(value)`; a string holding a lone surrogate is written as JSON.stringify
    writes it (`\\udxxx`) instead of failing."""
    try:
        return _encoder.encode(value)
    except UnicodeEncodeError:
        text = json.dumps(msgspec.to_builtins(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return escape_lone_surrogates(text).encode("utf-8")


def writable(value: Any, source: str) -> Any:
    """`value` (decoded from the JSON text `source`) in a form a msgspec response can hold: itself, or
    when `source` holds a surrogate escape, its JSON as `msgspec.Raw` (msgspec cannot write lone
    surrogates)."""
    if "\\u" in source and has_surrogate_escape(source):
        return msgspec.Raw(encode(value))
    return value


def escape_lone_surrogates(text: str) -> str:
    """A JSON text with any raw surrogate code point (only possible inside a string) written as its escape."""
    return _SURROGATE_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- the fallback: the standard library's scanner, with the byte spans `msgspec.Raw` fields need ------


def _parse_document(text: str, info: mi.Type | None) -> Any:
    start = _skip(text, 0)
    value, end = _parse(text, start, info)
    if _skip(text, end) != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def _parse(text: str, index: int, info: mi.Type | None) -> tuple[Any, int]:
    """The value at `index` (no whitespace before it) and the index after it. Objects and arrays are
    walked here only as deep as `info` has Raw fields below them; anything else is scanned whole."""
    if isinstance(info, mi.RawType):
        _, end = _scan(text, index)
        return msgspec.Raw(text[index:end].encode("utf-8")), end
    char = text[index : index + 1]
    if isinstance(info, mi.UnionType):  # e.g. `Struct | None`: the member this value's kind can be
        kinds = (mi.StructType, mi.DictType) if char == "{" else (mi.ListType,) if char == "[" else ()
        info = next((t for t in info.types if isinstance(t, kinds)), None)
    if char == "{" and isinstance(info, mi.StructType | mi.DictType) and _has_raw(info):
        return _parse_object(text, index, info)
    if char == "[" and isinstance(info, mi.ListType) and _has_raw(info):
        return _parse_array(text, index, info.item_type)
    return _scan(text, index)


def _parse_object(text: str, index: int, info: mi.StructType | mi.DictType) -> tuple[dict[str, Any], int]:
    fields = {f.encode_name: f.type for f in info.fields} if isinstance(info, mi.StructType) else None
    result: dict[str, Any] = {}
    index = _skip(text, index + 1)
    if text[index : index + 1] == "}":
        return result, index + 1
    while True:
        if text[index : index + 1] != '"':
            raise ValueError("expected a member name")
        key, index = _scanstring(text, index + 1)
        index = _skip(text, index)
        if text[index : index + 1] != ":":
            raise ValueError("expected ':'")
        member_info = fields.get(key) if fields is not None else cast(mi.DictType, info).value_type
        result[key], index = _parse(text, _skip(text, index + 1), member_info)
        index = _skip(text, index)
        if text[index : index + 1] == "}":
            return result, index + 1
        if text[index : index + 1] != ",":
            raise ValueError("expected ',' or '}'")
        index = _skip(text, index + 1)


def _parse_array(text: str, index: int, item: mi.Type) -> tuple[list[Any], int]:
    result: list[Any] = []
    index = _skip(text, index + 1)
    if text[index : index + 1] == "]":
        return result, index + 1
    while True:
        value, index = _parse(text, index, item)
        result.append(value)
        index = _skip(text, index)
        if text[index : index + 1] == "]":
            return result, index + 1
        if text[index : index + 1] != ",":
            raise ValueError("expected ',' or ']'")
        index = _skip(text, index + 1)


def _has_raw(info: mi.Type) -> bool:
    if isinstance(info, mi.RawType):
        return True
    if isinstance(info, mi.StructType):
        return any(_has_raw(f.type) for f in info.fields)
    if isinstance(info, mi.DictType):
        return _has_raw(info.value_type)
    if isinstance(info, mi.ListType):
        return _has_raw(info.item_type)
    if isinstance(info, mi.UnionType):
        return any(_has_raw(t) for t in info.types)
    return False


def _scan(text: str, index: int) -> tuple[Any, int]:
    try:
        value, end = _scan_once(text, index)
    except StopIteration:
        raise ValueError(f"expected a JSON value at {index}") from None
    return value, end


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index
