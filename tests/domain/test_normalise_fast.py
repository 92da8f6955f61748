"""The fast paths (#17) change nothing: generated documents normalise exactly as they did before them.

The oracle is the implementation before the fast paths, kept unchanged in tests/oracle/. Every result is
compared whole (stored text, checksum, content key, the logbook row, the outcome, the quarantine reason,
field and detail) and the stored document with its key order. The generators aim at what a fast path could
get wrong: floats (`45.0`, `-0.0`, `1e21`), integers around 2**53, lone surrogates and characters beyond
U+FFFF, object keys that are array indexes or not ASCII, nesting, missing, null, empty and extra fields,
enums in odd cases, times in every form (bad, future, out of range), foreign owners and deletions.
"""

from __future__ import annotations

import json.encoder
import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.domain import checksum as ck
from service.domain import normalise as nz
from service.domain import times
from service.domain.records import ENTITY_TYPES, LOGBOOK_ENTRY, Normalised
from tests.oracle import checksum as old_ck
from tests.oracle import normalise as old_nz
from tests.oracle import times as old_times

USER = "user_Q1w2E3r4T5y6U7i8O9p0a"
NOW_MS = 1_764_633_600_000  # 2025-12-02
MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generators ------------------------------------------------------------------------------------------

# Text with what JSON.stringify and UTF-16 ordering make special: controls, quotes, non-ASCII, characters
# beyond U+FFFF, lone surrogates (a note cut inside an emoji), JavaScript whitespace, curly quotes, dashes.
_odd_chars = st.sampled_from(
    ["\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\u00e9", "\u0130", "\ufeff", "\u00a0", "\u2019", "\u201c",
     "\u2013", "\U0001f600", "\U00010000", "\ud83d", "\ude00", "\ud800", "\uffff", " ", "  ", "\t", ".", "-", "||"]
)  # fmt: skip
text = st.lists(st.one_of(st.characters(codec=None), _odd_chars, st.sampled_from("aZ0 é")), max_size=12).map(
    "".join
)
ascii_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ_-. 0123456789", max_size=10)
numbers = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 2**63, 2**64, 10**30, -(10**400)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 45.0, 1e21, 1e-7, 1e16, 0.1, 2.5, -2.5, 0.49999999999999994, 2.0**53, 1e300]),
)
keys = st.one_of(ascii_word, text, st.sampled_from(["0", "1", "10", "01", "4294967294", "4294967295", "", "id"]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text, ascii_word)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
_iso = st.builds(
    lambda ms: times.ms_to_iso_z(ms), st.integers(min_value=-(10**14), max_value=NOW_MS + 3 * 86_400_000)
)
time_values = st.one_of(
    _iso,
    _iso.map(lambda s: s[:-1] + "+05:30"),
    _iso.map(lambda s: s[:19].replace("T", " ")),
    _iso.map(lambda s: s[:16] + "Z"),
    _iso.map(lambda s: s.lower()),
    st.integers(min_value=-(10**16), max_value=10**16),
    st.floats(allow_nan=False),
    st.integers(min_value=0, max_value=2 * NOW_MS).map(str),
    st.sampled_from(["", "2025-02-30T00:00:00Z", "2025-07-01T24:00:00Z", "yesterday", "1.5", "-0", "2025-07-01"]),
    st.none(),
    st.booleans(),
    json_values,
)
enum_words = ["practice", "PRACTICE", "Lesson", "status_change", "violin", "piano", "PIANO", "guitar", "satisfied",
              "SATISFIED", "proud", "neutral", "PRACTİCE", "p\u0131ano", "", "other", "technique"]  # fmt: skip
enums = st.one_of(st.sampled_from(enum_words), text, st.none(), numbers)
pieces = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "id": st.one_of(text, ascii_word, st.sampled_from(["score_abc-1", " Nocturne - Chopin ", "a||b"])),
                "title": st.one_of(
                    text, ascii_word, st.none(), numbers, st.sampled_from(["F\u00fcr Elise", "\u201cOp.\u201d\u20139"])
                ),
                "composer": st.one_of(text, ascii_word, st.none(), st.sampled_from(["J.S. Bach", "Chopin"])),
                "duration": st.one_of(numbers, st.none()),
                "measures": json_values,
            },
        ),
        json_values,
    ),
    max_size=3,
)
string_lists = st.one_of(st.lists(st.one_of(ascii_word, text), max_size=3), json_values)
entry_fields = {
    "id": st.one_of(ascii_word.filter(bool), text, st.none(), numbers),
    "timestamp": time_values,
    "duration": st.one_of(numbers, st.none(), text, st.booleans()),
    "type": enums,
    "instrument": enums,
    "mood": enums,
    "pieces": st.one_of(pieces, json_values),
    "techniques": string_lists,
    "tags": string_lists,
    "goalIds": string_lists,
    "goal_ids": string_lists,
    "notes": st.one_of(text, st.none(), json_values),
    "session_id": st.one_of(ascii_word, st.none(), numbers),
    "metadata": st.one_of(st.dictionaries(keys, json_values, max_size=3), json_values),
    "createdAt": time_values,
    "updatedAt": time_values,
    "created_at": time_values,
    "updated_at": time_values,
    "user_id": st.sampled_from([USER, "", None, 0, False, "user_other"]),
    "userId": st.sampled_from([USER, "", None, "user_other"]),
    "sync_version": st.one_of(st.integers(), st.none(), json_values),
    "checksum": st.one_of(st.none(), ascii_word, json_values),
    "device_id": st.one_of(st.none(), ascii_word),
    "deletedAt": st.one_of(st.sampled_from([None, "", 0, False, 0.0]), time_values),
    "deleted_at": st.one_of(st.none(), time_values),
    "extra": json_values,
}
# A common entry first (the fast path's shape), then any subset of fields replaced by generated values.
_common = {
    "id": "V1StGXR8_Z5jdHi6B-myT", "timestamp": "2025-07-01T17:45:00.000Z", "duration": 45, "type": "practice",
    "instrument": "piano", "pieces": [{"title": "Nocturne Op. 9 No. 2", "composer": "Chopin"}],
    "techniques": ["scales"], "goalIds": ["kX2o9Yw3Qd8aB7cL1mN0p"], "notes": "LH voicing", "mood": "satisfied",
    "tags": ["warmup"], "metadata": {"source": "manual"}, "createdAt": "2025-07-01T18:30:12.345Z",
    "updatedAt": "2025-07-01T18:30:12.345Z",
}  # fmt: skip


# Values an accepted entry may well hold, that the fast path must either get exactly right or leave alone.
_plausible = {
    "timestamp": st.one_of(_iso, _iso.map(lambda s: s[:-1] + "-08:00"), st.integers(0, NOW_MS)),
    "duration": st.one_of(st.integers(0, 600), st.floats(0, 600), st.sampled_from([0, 0.5, 2.5, 45.0, 2**53])),
    "type": st.sampled_from(["practice", "PRACTICE", "Lesson", "status_change", "other"]),
    # U+1C89 and U+A7CB lowercase in JavaScript (Unicode 16) but not in Python 3.11's Unicode database.
    "instrument": st.sampled_from(["piano", "PIANO", "violin", "guitar", "p\u0131ano", "Voice", "\u1c89", "\ua7cbX"]),
    "mood": st.sampled_from([None, "satisfied", "PROUD", "excited", "neutral"]),
    "metadata": st.dictionaries(st.one_of(ascii_word, keys), json_values, max_size=3),
    "pieces": pieces,
    "notes": st.one_of(text, st.none(), st.just("")),
    "createdAt": st.one_of(_iso, _iso.map(lambda s: s[:-1] + "+05:30"), st.just(""), st.none()),
    "updatedAt": st.one_of(_iso, _iso.map(lambda s: s[:19] + "Z"), st.just(""), st.none()),
    "created_at": st.one_of(st.integers(0, NOW_MS), _iso, st.none()),
    "updated_at": st.one_of(st.integers(0, NOW_MS), _iso, st.none()),
    "user_id": st.sampled_from([USER, "", None, 0, False]),
    "userId": st.sampled_from([USER, "", None]),
    "deletedAt": st.sampled_from([None, "", 0, False, 0.0]),
}


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for field in draw(st.permutations(list(entry_fields))):
        choice = draw(st.sampled_from(["common"] * 5 + ["plausible"] * 4 + ["generated", "absent"]))
        if choice == "plausible" and field in _plausible:
            entry[field] = draw(_plausible[field])
        elif choice == "generated":
            entry[field] = draw(entry_fields[field])
        elif choice != "absent" and field in _common:
            entry[field] = _common[field]
    return entry


# --- the comparisons -------------------------------------------------------------------------------------


def assert_same(new: object, old: object, *, oracle: bool = True) -> None:
    assert type(new).__name__ == type(old).__name__
    fields = [msgspec.structs.asdict(r) for r in (new, old)]  # type: ignore[arg-type]
    if oracle:  # the oracle predates `text_holds_state`
        for f in fields:
            f.pop("text_holds_state", None)
    assert fields[0] == fields[1]
    if isinstance(new, Normalised):
        assert isinstance(old, Normalised)
        assert new.text == old.text
        # 45 and 45.0 compare equal, but the relational copy stores them as INTEGER and REAL.
        rows = [None if n.logbook_row is None else msgspec.structs.asdict(n.logbook_row) for n in (new, old)]
        assert _kinds(rows[0]) == _kinds(rows[1])


def _kinds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _kinds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_kinds(v) for v in value]
    if isinstance(value, float) and math.copysign(1.0, value) < 0:
        return "-float"
    return type(value).__name__


@MANY
@given(entries())
def test_a_record_said_to_hold_its_state_in_its_text_gives_it_back(entry: dict[str, Any]) -> None:
    """What the merge reads back from a live row without a state row (its edit time from the document,
    its content key from the text) is what normalising gave, for every record that gets no state row."""
    new = nz.normalise(LOGBOOK_ENTRY, entry, USER, now_ms=NOW_MS)
    event(f"text holds state: {isinstance(new, Normalised) and new.text_holds_state}")
    if isinstance(new, Normalised) and new.text_holds_state:
        assert nz.content_key_of_text(new.text) == new.content_key
        assert nz.document_edit_ms(new.document()) == new.updated_ms


def test_an_edit_time_the_document_does_not_give_back_keeps_a_state_row() -> None:
    """`updated_at: 0` is the record's edit time, but a falsy time in a document is not read back as one
    (the document's own reading, `document_edit_ms`, goes on to the creation time): so the record must not
    be left to its row."""
    raw = {"id": "a", "timestamp": 1748799900000, "duration": 15, "type": "practice", "instrument": "piano",
           "updated_at": 0, "created_at": 1748799900000}
    for n in (nz._fast_entry(LOGBOOK_ENTRY, "a", dict(raw), USER, NOW_MS),
              nz._general_entry(LOGBOOK_ENTRY, "a", dict(raw), USER, NOW_MS)):
        assert isinstance(n, Normalised) and n.updated_ms == 0
        assert nz.document_edit_ms(n.document()) == 1748799900000
        assert not n.text_holds_state


@MANY
@given(entries())
def test_a_logbook_entry_normalises_as_before(entry: dict[str, Any]) -> None:
    raw = entry  # generated values are what a JSON decoder gives (str with surrogates, float, int)
    new = nz.normalise(LOGBOOK_ENTRY, raw, USER, now_ms=NOW_MS)
    assert_same(new, old_nz.normalise(LOGBOOK_ENTRY, raw, USER, now_ms=NOW_MS))
    event(type(new).__name__)
    if isinstance(new, Normalised) and not nz._js_truthy(raw.get("deletedAt")):
        # The fast path, where it answers at all, answers what the general path answers.
        fast = nz._fast_entry(LOGBOOK_ENTRY, new.entity_id, dict(raw), USER, NOW_MS)
        event("fast path" if fast is not None else "general path")
        if fast is not None:
            assert_same(fast, nz._general_entry(LOGBOOK_ENTRY, new.entity_id, dict(raw), USER, NOW_MS), oracle=False)


@MANY
@given(
    st.sampled_from(ENTITY_TYPES),
    st.dictionaries(
        st.sampled_from([*entry_fields, "title", "status", "scoreId", "score_id", "target_value"]),
        st.one_of(json_values, time_values, enums),
        max_size=8,
    ),
)
def test_every_entity_type_normalises_as_before(entity_type: str, document: dict[str, Any]) -> None:
    document.setdefault("id", "doc_1")
    raw = document
    assert_same(nz.normalise(entity_type, raw, USER, now_ms=NOW_MS), old_nz.normalise(entity_type, raw, USER,
                now_ms=NOW_MS))  # fmt: skip


@MANY
@given(json_values)
def test_canonical_json_is_as_before(value: Any) -> None:
    try:
        expected = old_ck.canonical_json(value)
    except (TypeError, RecursionError) as error:
        try:
            ck.canonical_json(value)
        except type(error):
            return
        raise AssertionError("the fast path encoded what the general path refuses") from None
    assert ck.canonical_json(value) == expected
    event("plain" if ck.is_plain(value) else "general")


@MANY
@given(st.dictionaries(keys, json_values, max_size=6), st.sets(keys, max_size=3))
def test_an_object_and_its_parts_encode_as_before(obj: dict[str, Any], omit: set[str]) -> None:
    new, old = ck.CanonicalObject(obj), old_ck.CanonicalObject(obj)
    assert new.text() == old.text()
    assert new.text(omit=omit) == old.text(omit=omit)
    assert new.checksum(omit=omit) == old_ck.checksum_of_text(old.text(omit=omit))
    for key in obj:
        assert new.value_text(key) == old.value_text(key)


@MANY
@given(time_values)
def test_times_parse_as_before_first_time_and_cached(value: Any) -> None:
    expected = old_times.to_epoch_ms(value)
    assert times.to_epoch_ms(value) == expected
    assert times.to_epoch_ms(value) == expected  # the second time from the cache


@MANY
@given(st.one_of(text, ascii_word), st.one_of(text, ascii_word, st.none()))
def test_score_ids_are_as_before_first_time_and_cached(title: str, composer: str | None) -> None:
    for _ in range(2):
        assert nz.score_id(title, composer) == old_nz.score_id(title, composer)
        assert nz.normalise_score_id(title) == old_nz.normalise_score_id(title)


def test_msgspec_escapes_every_character_as_json_stringify_does() -> None:
    """The fast path's premise for strings: every code point but the surrogates (which msgspec refuses),
    alone and next to others, is written exactly as JSON.stringify (the general path) writes it."""
    code_points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(code_points), 4096):
        chunk = "".join(map(chr, code_points[start : start + 4096]))
        assert msgspec.json.encode(chunk).decode() == json.encoder.encode_basestring(chunk)
    for cp in range(0x80):
        assert msgspec.json.encode(chr(cp)).decode() == json.encoder.encode_basestring(chr(cp))


def test_the_common_entries_take_the_fast_path() -> None:
    """The bench's shapes and the app's own (modern, after a round trip, old clients) skip the general path."""
    shapes = [
        _common,
        {**_common, "timestamp": 1751391900000, "created_at": 1751391900000, "updated_at": 1751391900000,
         "user_id": USER, "sync_version": 3},
        {**_common, "id": "entry_1751391900000_abc", "type": "PRACTICE", "instrument": "PIANO", "mood": "SATISFIED",
         "pieces": [{"title": "Für Elise", "composer": None}], "created_at": 1751391900000, "goal_ids": ["g1"]},
        {**_common, "timestamp": "2025-07-01T23:15:00+05:30"},
        {**_common, "timestamp": "2025-07-01 17:45:00", "duration": 44.5},
    ]  # fmt: skip
    for shape in shapes:
        fast = nz._fast_entry(LOGBOOK_ENTRY, shape["id"], dict(shape), USER, NOW_MS)
        assert fast is not None
        assert_same(fast, old_nz.normalise(LOGBOOK_ENTRY, shape, USER, now_ms=NOW_MS))


def test_the_caches_keep_no_huge_strings() -> None:
    """A 100k-character title or time is worked out every time, not kept for the process's lifetime."""
    huge = "Nocturne " * 12_000
    nz.score_id(huge, "Chopin")
    nz.normalise_score_id(huge)
    times.to_epoch_ms("2025-07-01T17:45:00." + "0" * 100_000 + "Z")
    assert all(len(key[0]) < 1000 for key in nz._score_ids)
    assert all(len(key) < 1000 for key in nz._normal_score_ids)
    assert all(len(key) < 1000 for key in times._string_ms)
