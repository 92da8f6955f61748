"""The checksum must equal the app's byte for byte (CONTRACT section 5)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.checksum import CanonicalObject, canonical_json, checksum, checksum_of_text, js_number

FIXTURES = Path(__file__).parent.parent / "fixtures"
CHECKSUM_VECTORS: list[dict[str, str]] = json.loads((FIXTURES / "checksum_vectors.json").read_text("utf-8"))

# Integers JavaScript holds exactly; larger ones are rounded to a double, so they do not round-trip.
SAFE_INTEGERS = st.integers(min_value=-(2**53), max_value=2**53)
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS = st.none() | st.booleans() | SAFE_INTEGERS | FINITE_FLOATS | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@pytest.mark.parametrize("vector", CHECKSUM_VECTORS, ids=lambda vector: vector["json"][:40])
def test_checksum_vectors(vector: dict[str, str]) -> None:
    document = json.loads(vector["json"])

    assert canonical_json(document) == vector["canonical"]
    assert checksum(document) == vector["checksum"]


def test_checksum_is_sha256_of_the_utf8_canonical_text() -> None:
    document = {"title": "Für Elise", "note": "曲 🎹"}

    expected = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    assert checksum(document) == expected == checksum_of_text(canonical_json(document))


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (45.0, "45"),
        (-45.5, "-45.5"),
        (0.1, "0.1"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e16, "10000000000000000"),
        (2.0**53 + 2, "9007199254740994"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (-1e-7, "-1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.00001, "0.00001"),
        (1.2345e-5, "0.000012345"),
        (0.000001234, "0.000001234"),
        (123e-20, "1.23e-18"),
        (1.5e300, "1.5e+300"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        (math.nan, "null"),
        (math.inf, "null"),
        (-math.inf, "null"),
    ],
)
def test_numbers_are_written_as_ecmascript_does(number: float, text: str) -> None:
    assert js_number(number) == text
    assert canonical_json(number) == text


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740992"),  # JavaScript already read it as the nearest double
        (-(2**53) - 1, "-9007199254740992"),
        (123456789012345678901, "123456789012345680000"),
        (100000000000000000000, "100000000000000000000"),
        (10**21, "1e+21"),
        (10**400, "null"),  # Infinity in JavaScript
    ],
)
def test_integers_beyond_2_53_behave_like_javascript_numbers(number: int, text: str) -> None:
    assert canonical_json(number) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("\ud800", '"\\ud800"'),
        ("a\udfffb", '"a\\udfffb"'),
        ("\ud83c\udfb9", '"🎹"'),  # a pair held as two code points is one character to JavaScript
        ("\udfb9\ud83c", '"\\udfb9\\ud83c"'),  # the wrong way round it is two lone surrogates
        ("x\u2028\u2029y", '"x\u2028\u2029y"'),
        ("\x7f", '"\x7f"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ('\b\f\n\r\t"\\/', '"\\b\\f\\n\\r\\t\\"\\\\/"'),
    ],
)
def test_strings_are_escaped_as_json_stringify_does(value: str, text: str) -> None:
    assert canonical_json(value) == text
    checksum(value)  # encodable as UTF-8


def test_keys_sort_by_utf16_code_units_with_array_indices_first() -> None:
    document = {"\uffff": 1, "🎹": 2, "b": 3, "10": 4, "9": 5, "01": 6, "4294967294": 7, "4294967295": 8, "": 9}

    assert canonical_json(document) == (
        '{"9":5,"10":4,"4294967294":7,"":9,"01":6,"4294967295":8,"b":3,"🎹":2,"\uffff":1}'
    )


def test_tuples_are_arrays_and_non_json_values_are_refused() -> None:
    assert canonical_json((1, "a", None)) == '[1,"a",null]'
    with pytest.raises(TypeError):
        canonical_json({"a": {1, 2}})
    with pytest.raises(TypeError):
        canonical_json({1: "non-string key"})


def test_canonical_object_reuses_member_encodings() -> None:
    document = {"b": [1, 2.0], "a": {"y": None, "x": "\ud800"}, "id": "e-1"}
    encoded = CanonicalObject(document)

    assert encoded.text() == canonical_json(document)
    assert encoded.text(omit={"id"}) == canonical_json({"b": [1, 2.0], "a": {"y": None, "x": "\ud800"}})
    assert encoded.value_text("a") == canonical_json(document["a"])


@given(JSON_VALUES)
def test_canonical_text_parses_back_to_an_equal_value(value: Any) -> None:
    text = canonical_json(value)

    assert _as_javascript_numbers(json.loads(text)) == _as_javascript_numbers(value)
    assert canonical_json(json.loads(text)) == text  # the canonical form is a fixed point


@given(JSON_VALUES, st.randoms(use_true_random=False))
def test_key_order_of_the_input_does_not_change_the_checksum(value: Any, rnd: random.Random) -> None:
    assert checksum(_shuffled(value, rnd)) == checksum(value)


@given(FINITE_FLOATS)
def test_number_text_round_trips_and_follows_the_ecmascript_layout(number: float) -> None:
    text = js_number(number)

    assert float(text) == number
    magnitude = abs(number)
    uses_exponent = "e" in text
    assert uses_exponent == (magnitude >= 1e21 or 0 < magnitude < 1e-6)
    assert not text.endswith(".0")
    if uses_exponent:
        assert re.fullmatch(r"-?[1-9](\.[0-9]*[1-9])?e[+-][1-9][0-9]*", text)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_agrees_with_javascript_on_random_documents() -> None:
    """Cross-check against the real thing: node's JSON.stringify and SHA-256 of sorted documents."""
    rnd = random.Random(20250701)
    documents = [_random_document(rnd) for _ in range(3000)]
    script = """
    const crypto = require('crypto');
    const sortKeys = v => Array.isArray(v) ? v.map(sortKeys) : (v && typeof v === 'object')
      ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sortKeys(v[k])])) : v;
    const lines = require('fs').readFileSync(0, 'utf8').trim().split('\\n');
    const out = lines.map(line => {
      const text = JSON.stringify(sortKeys(JSON.parse(line)));
      return [text, crypto.createHash('sha256').update(new TextEncoder().encode(text)).digest('hex')];
    });
    process.stdout.write(JSON.stringify(out));
    """
    stdin = "\n".join(json.dumps(document, ensure_ascii=True) for document in documents)
    result = subprocess.run(["node", "-e", script], input=stdin, capture_output=True, text=True, check=True, timeout=60)
    expected = json.loads(result.stdout)

    for document, (text, digest) in zip(documents, expected, strict=True):
        assert canonical_json(document) == text
        assert checksum(document) == digest


def _as_javascript_numbers(value: Any) -> Any:
    """Every number as a double, as JavaScript holds it (so 62252337171891500 == 6.22523371718915e16)."""
    if isinstance(value, dict):
        return {key: _as_javascript_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_javascript_numbers(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {key: _shuffled(item, rnd) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rnd) for item in value]
    return value


_AWKWARD_CHARACTERS = [
    *'aZ09-. "\\\n\x01\x1f\x7fé曲',
    "\u2028",
    "\ufeff",
    "\uffff",
    "\ue000",
    "🎹",
    "\U0010ffff",
    "\ud800",
    "\udfff",
]


def _random_text(rnd: random.Random) -> str:
    if rnd.random() < 0.2:
        return str(rnd.choice([0, 1, 9, 10, 4294967294, 4294967295, rnd.randrange(10**12)]))
    return "".join(rnd.choice(_AWKWARD_CHARACTERS) for _ in range(rnd.randrange(6)))


def _random_number(rnd: random.Random) -> float | int:
    choice = rnd.random()
    if choice < 0.3:
        number: float = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        return number if math.isfinite(number) else 0.5
    if choice < 0.6:
        return rnd.uniform(-1, 1) * 10.0 ** rnd.randrange(-30, 30)
    if choice < 0.8:
        return rnd.randrange(-(10**22), 10**22)
    return rnd.choice([0.0, -0.0, 1e21, 1e-7, 1e-6, 0.1, 5e-324, 2.0**53 + 2, 45.0, 10**400])


def _random_document(rnd: random.Random, depth: int = 0) -> Any:
    choice = rnd.random()
    if depth > 3 or choice < 0.5:
        return rnd.choice([_random_text, _random_number, lambda _: rnd.choice([None, True, False])])(rnd)
    if choice < 0.75:
        return [_random_document(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {_random_text(rnd): _random_document(rnd, depth + 1) for _ in range(rnd.randrange(6))}
