"""The app's document checksum, byte for byte (CONTRACT section 5).

The app hashes `JSON.stringify` of the document after sorting object keys recursively. Reproducing that
in Python means copying three JavaScript behaviours that `json.dumps` does not have:

- key order: keys are sorted by UTF-16 code units, and then JavaScript lays an object out with its
  array-index keys ("0".."4294967294", no leading zeros) first, in numeric order;
- numbers: ECMAScript Number::toString (`45.0` -> `45`, `1e-7` -> `1e-7`, `1e21` -> `1e+21`), and every
  number is a double, so integers beyond 2**53 lose precision exactly as they do in the app;
- strings: lone surrogates are written as `\\udxxx` escapes (well-formed JSON.stringify).

Input is what `json.loads` / `msgspec.json.decode` produce: dict, list, str, int, float, bool, None
(tuples are accepted as arrays).
"""

from __future__ import annotations

import hashlib
import json.encoder
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

# `json`'s C string encoder for ensure_ascii=False: it escapes exactly what JSON.stringify escapes
# (`"`, `\`, control characters, with the same short forms and lower-case hex), except lone surrogates.
_quote: Callable[[str], str] = json.encoder.encode_basestring

# Integers up to 2**53 are exact doubles; above that JavaScript would already have rounded them.
_MAX_SAFE_INTEGER = 2**53
_MAX_ARRAY_INDEX = 2**32 - 2
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")
_SUPPLEMENTARY = re.compile("[\U00010000-\U0010ffff]")
# A surrogate pair (two code points in a Python str, one character in JavaScript) or a lone surrogate.
_SURROGATES = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")

# Documents share a handful of shapes, so the key layout of each shape is worked out once.
# Maps the keys in insertion order to ((key, '"key":'), ...) in JavaScript order.
_Layout = tuple[tuple[str, str], ...]
_layouts: dict[tuple[str, ...], _Layout] = {}
_MAX_CACHED_LAYOUTS = 4096
_MAX_CACHED_KEY_CHARS = 2048


# The fast path. For "plain" values msgspec's sorted encoding, in C, is already this canonical JSON:
# strings (msgspec escapes exactly the characters JSON.stringify escapes, in the same forms: checked over
# every code point by the tests), booleans, null, integers JavaScript holds exactly, arrays, and objects
# whose keys are ASCII (so code point order is UTF-16 order) and not all digits (never an array index).
# Floats (`45.0` is `45` in JavaScript) and lone surrogates (which msgspec refuses) take the general path.
_sorted_json = msgspec.json.Encoder(order="sorted")
_plain_key_sets: dict[tuple[str, ...], bool] = {}


def canonical_json(value: Any) -> str:
    """`JSON.stringify` of `value` with object keys sorted recursively, as the app computes it.

    Raises TypeError for values JSON cannot hold (and RecursionError for absurdly deep nesting).
    """
    if _is_plain(value) and (plain_json := _plain_json(value)) is not None:
        return plain_json.decode()
    return _finish(_encode(value))


def is_plain(value: Any) -> bool:
    """True when `canonical_json(value)` is msgspec's sorted encoding of it (a lone surrogate aside,
    which msgspec refuses to encode): no floats, no integers beyond 2**53, object keys ASCII and not
    all digits."""
    return _is_plain(value)


def _is_plain(value: Any) -> bool:
    try:
        return _plain(value) if type(value) in (dict, list, tuple) else _plain((value,))
    except RecursionError:
        return False  # the general path decides what such nesting gets


def _plain(container: dict[str, Any] | list[Any] | tuple[Any, ...]) -> bool:
    if type(container) is dict:
        shape = tuple(container)
        keys_plain = _plain_key_sets.get(shape)
        if not (_plain_keys(shape) if keys_plain is None else keys_plain):
            return False
        items: Any = container.values()
    else:
        items = container
    # One loop over the members, scalars checked inline: a call per value would cost more than encoding.
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                continue
            return False
        if (kind is dict or kind is list or kind is tuple) and _plain(item):
            continue
        return False
    return True


def _plain_keys(shape: tuple[str, ...]) -> bool:
    plain = all(type(key) is str and key.isascii() and not key.isdigit() for key in shape)
    if plain and sum(map(len, shape)) <= _MAX_CACHED_KEY_CHARS:
        if len(_plain_key_sets) >= _MAX_CACHED_LAYOUTS:
            _plain_key_sets.clear()
        _plain_key_sets[shape] = plain
    return plain


class CanonicalObject:
    """A JSON object encoded member by member, so that parts of it can be reused without re-encoding.

    `text()` is `canonical_json` of the whole object, `text(omit=...)` that of the object without some
    members, and `value_text(key)` the canonical JSON of one member's value; `checksum(omit=...)` is
    `checksum_of_text(text(omit=...))`. A plain object (see `is_plain`) is encoded by msgspec instead,
    whole and when a part is asked for.
    """

    __slots__ = ("_data", "_layout", "_plain_json", "_values")

    def __init__(self, obj: Mapping[str, Any]) -> None:
        data = obj if type(obj) is dict else dict(obj)
        self._data = data
        self._plain_json: bytes | None = _plain_json(data) if _is_plain(data) else None
        if self._plain_json is None:
            self._layout = _layout_of(data)
            self._values = {key: _encode(data[key]) for key, _ in self._layout}

    @classmethod
    def of_plain(cls, obj: dict[str, Any], *, checked: bool = False) -> CanonicalObject | None:
        """The object encoded by msgspec, or None when it is not plain (`checked`: the caller knows it
        is, but for lone surrogates, which msgspec refuses to encode)."""
        plain_json = _plain_json(obj) if checked or _is_plain(obj) else None
        if plain_json is None:
            return None
        encoded = cls.__new__(cls)
        encoded._data, encoded._plain_json = obj, plain_json
        return encoded

    @property
    def plain(self) -> bool:
        """Encoded by msgspec: its text decodes back to an equal object, which encodes to the same text."""
        return self._plain_json is not None

    def text(self, omit: Collection[str] = ()) -> str:
        if self._plain_json is not None:
            return (self._plain_json if not omit else self._plain_part(omit)).decode()
        values = self._values
        members = [prefix + values[key] for key, prefix in self._layout if key not in omit]
        return _finish("{" + ",".join(members) + "}")

    def checksum(self, omit: Collection[str] = ()) -> str:
        if self._plain_json is not None:
            return hashlib.sha256(self._plain_json if not omit else self._plain_part(omit)).hexdigest()
        return checksum_of_text(self.text(omit))

    def value_text(self, key: str) -> str:
        if self._plain_json is not None:
            return _sorted_json.encode(self._data[key]).decode()
        return _finish(self._values[key])

    def _plain_part(self, omit: Collection[str]) -> bytes:
        return _sorted_json.encode({key: value for key, value in self._data.items() if key not in omit})


def _plain_json(data: Any) -> bytes | None:
    try:
        return _sorted_json.encode(data)
    except UnicodeEncodeError:
        return None  # a lone surrogate: the general path writes it as its escape


def js_stringify(value: Any) -> str:
    """`JSON.stringify(JSON.parse(text))` for `value` decoded from `text`: keys in the object's own order
    (array-index keys first, in numeric order, as JavaScript lays any object out), numbers and strings
    as in `canonical_json`. A stored text equal to this is spelled as the app spells it."""
    return _finish(_encode_ordered(value))


def _encode_ordered(value: Any) -> str:
    kind = type(value)
    if kind is dict:
        keys = list(value)
        indices = sorted((key for key in keys if type(key) is str and _is_array_index(key)), key=int)
        if indices:
            keys = indices + [key for key in keys if key not in set(indices)]
        for key in keys:
            if type(key) is not str:
                raise TypeError(f"object key {key!r} is not a string")
        return "{" + ",".join([_quote(key) + ":" + _encode_ordered(value[key]) for key in keys]) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join([_encode_ordered(item) for item in value]) + "]"
    return _encode(value)


def checksum(value: Any) -> str:
    """Lowercase hex SHA-256 of the canonical JSON text: the app's `sync_data.checksum`."""
    return checksum_of_text(canonical_json(value))


def checksum_of_text(text: str) -> str:
    """Lowercase hex SHA-256 of a canonical JSON text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def js_number(x: float) -> str:
    """ECMAScript Number::toString, as JSON.stringify writes numbers (NaN and infinities as `null`)."""
    if x == 0:
        return "0"  # also -0
    if not math.isfinite(x):
        return "null"
    if x.is_integer():
        if -_MAX_SAFE_INTEGER <= x <= _MAX_SAFE_INTEGER:
            return str(int(x))
    elif 1e-4 <= abs(x) < 1e16:
        # Python's repr writes plain decimals in this range, with the same shortest digits as JavaScript.
        return repr(x)
    return _js_number_from_digits(x)


def _encode(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is dict:
        return _encode_object(value)
    if kind is list or kind is tuple:
        return "[" + ",".join([_encode(item) for item in value]) + "]"
    if kind is int:
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return str(value)
        return _encode_big_int(value)
    if kind is float:
        return js_number(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise TypeError(f"{kind.__name__} is not a JSON value")


def _encode_object(obj: dict[str, Any]) -> str:
    return "{" + ",".join([prefix + _encode(obj[key]) for key, prefix in _layout_of(obj)]) + "}"


def _layout_of(obj: dict[str, Any]) -> _Layout:
    shape = tuple(obj)
    return _layouts.get(shape) or _layout(shape)


def _layout(shape: tuple[str, ...]) -> _Layout:
    for key in shape:
        if type(key) is not str:
            raise TypeError(f"object key {key!r} is not a string")
    keys = sorted(shape)
    if any(not key.isascii() for key in keys) and _SUPPLEMENTARY.search("".join(keys)):
        # Code point order and UTF-16 code unit order differ only around characters beyond U+FFFF.
        keys.sort(key=_utf16_code_units)
    indices = [key for key in keys if _is_array_index(key)]
    if indices:
        indices.sort(key=int)
        keys = indices + [key for key in keys if not _is_array_index(key)]
    layout = tuple((key, _quote(key) + ":") for key in keys)
    if sum(map(len, shape)) <= _MAX_CACHED_KEY_CHARS:  # odd objects with huge keys are not worth keeping
        if len(_layouts) >= _MAX_CACHED_LAYOUTS:
            _layouts.clear()
        _layouts[shape] = layout
    return layout


def _utf16_code_units(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like the sequence of code units.
    return key.encode("utf-16-be", "surrogatepass")


def _is_array_index(key: str) -> bool:
    return _ARRAY_INDEX.fullmatch(key) is not None and int(key) <= _MAX_ARRAY_INDEX


def _encode_big_int(value: int) -> str:
    try:
        return js_number(float(value))
    except OverflowError:
        return "null"  # JavaScript reads such a literal as Infinity, which JSON.stringify writes as null


def _js_number_from_digits(x: float) -> str:
    """Number::toString from the shortest round-trip digits (which `repr` gives)."""
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    significant = all_digits.lstrip("0")
    # The value is 0.<digits> x 10**point.
    point = len(whole) + (int(exponent) if exponent else 0) - (len(all_digits) - len(significant))
    digits = significant.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        suffix = f"e{'+' if power >= 0 else '-'}{abs(power)}"
        text = (digits if count == 1 else digits[0] + "." + digits[1:]) + suffix
    return "-" + text if x < 0 else text


def _finish(text: str) -> str:
    # Surrogate code points can only come from strings (and only from unusual ones); checking the
    # finished text once is far cheaper than checking every string, and UTF-8 encoding (which refuses
    # surrogates) is a much faster check than a regex search.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATES.sub(_write_surrogates, text)
    return text


def _write_surrogates(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) == 2:
        # JavaScript strings are UTF-16: a high+low pair is simply the character it encodes.
        high, low = ord(found[0]), ord(found[1])
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return f"\\u{ord(found):04x}"
