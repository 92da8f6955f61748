"""Seeded, realistic logbook entries as the app's devices hold them, and what the service must make of them.

Every user has an endless stream of records (`EntryStream`). Most are new practice sessions; some are
the same record sent again (a copy: outcome `duplicate`), some the same session logged again under
another id, from another client version (a twin: outcome `content_duplicate`). Records come in every
shape clients ever produced (CONTRACT section 3): modern ISO-Z records, records that went through a
server round trip (epoch-ms numbers, `user_id`, `sync_version`), and pre-July-2025 records with
UPPERCASE enums, `composer: null`, `created_at` in ms and legacy `YYYY-MM-DD HH:MM:SS` timestamps.

The stream keeps only a small window of recent records (for copies and twins), so a file of any size
is generated in flat memory, and it counts what the service must end with (`Expected`). The same seed
always gives the same records.
"""

from __future__ import annotations

import base64
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec

# Real pieces as users log them; None: the client knew no composer.
CATALOGUE: tuple[tuple[str, str | None], ...] = (
    ("Nocturne Op. 9 No. 2", "Chopin"),
    ("Für Elise", None),
    ("Clair de Lune", "Claude Debussy"),
    ("Prelude in C", "J.S. Bach"),
    ("Lágrima", "F. Tárrega"),
    ("Gymnopédie No. 1", "Erik Satie"),
    ("Sonata K. 331 - Rondo alla Turca", "W. A. Mozart"),
    (
        "Piano Sonata No. 14 \u201cMoonlight\u201d \u2013 I. Adagio sostenuto",
        "Ludwig van Beethoven",
    ),  # curly quotes, en dash
    ("Recuerdos de la Alhambra", "Francisco Tárrega"),
    ("Asturias (Leyenda)", "Isaac Albéniz"),
    ("Invention No. 8 in F major", "J. S. Bach"),
    ("Träumerei", "Robert Schumann"),
    ("Étude Op. 10 No. 3", "Chopin"),
    ("Arabesque No. 1", "Debussy"),
    ("Romanza", None),
    ("Greensleeves", None),
    ("Canon in D", "Johann Pachelbel"),
    ("Maple Leaf Rag", "Scott Joplin"),
    ("Waltz in A minor, B. 150", "Frédéric Chopin"),
    ("Study in B minor, Op. 35 No. 22", "Fernando Sor"),
    ("Un Sospiro", "Franz Liszt"),
    ("Prelude in E minor, Op. 28 No. 4", "Chopin"),
)
TECHNIQUES = ("scales", "arpeggios", "sight-reading", "hanon", "tremolo", "legato", "octaves")
TAGS = ("recital", "exam", "warm-up", "memorised", "slow practice")
NOTES = (
    "left hand alone",
    "metronome at 60",
    "hands together at last",
    "worked on the coda",
    "memory slips in bar 12",
    "recorded myself",
    None,
    None,
    None,
)


class Weighted:
    """A weighted choice among (value, weight) pairs, integer weights; one random() call per draw."""

    def __init__(self, *choices: tuple[Any, int]) -> None:
        self._table = tuple(value for value, weight in choices for _ in range(weight))

    def pick(self, rng: random.Random) -> Any:
        return self._table[int(rng.random() * len(self._table))]


def pick(rng: random.Random, values: tuple[Any, ...]) -> Any:
    return values[int(rng.random() * len(values))]


def some(rng: random.Random, values: tuple[Any, ...], counts: tuple[int, ...]) -> tuple[Any, ...]:
    """None, one or two distinct values (how many: drawn from `counts`)."""
    k, n = pick(rng, counts), len(values)
    if k == 0:
        return ()
    first = int(rng.random() * n)
    if k == 1:
        return (values[first],)
    second = int(rng.random() * (n - 1))
    return (values[first], values[second + (second >= first)])


# The values the app's legacy `logbook_entries` CHECKs refuse (status_change, custom instruments, proud)
# are rarer; such entries live in sync_data only.
TYPES = Weighted(
    ("practice", 70), ("lesson", 10), ("performance", 6), ("rehearsal", 5), ("technique", 7), ("status_change", 2)
)  # fmt: skip
INSTRUMENTS = Weighted(("piano", 75), ("guitar", 18), ("violin", 4), ("voice", 3))
MOODS = Weighted((None, 35), ("satisfied", 30), ("neutral", 15), ("excited", 8), ("frustrated", 9), ("proud", 3))
ROW_TYPES = frozenset({"practice", "performance", "lesson", "rehearsal", "technique"})
ROW_INSTRUMENTS = frozenset({"piano", "guitar"})
ROW_MOODS = frozenset({None, "frustrated", "neutral", "satisfied", "excited"})

# Record shapes and timestamp forms.
STYLES = Weighted(("modern", 60), ("round_trip", 20), ("old_client", 20))
TIMESTAMP_FORMS = Weighted(("iso_z", 50), ("offset", 20), ("epoch_ms", 15), ("legacy", 15))
OLD_CLIENT_TIMESTAMP_FORMS = Weighted(("legacy", 50), ("epoch_ms", 25), ("iso_z", 25))
OFFSETS = tuple(
    timezone(timedelta(minutes=m)) for m in (120, -300, 330, 60, -480, 540)
)  # fmt: skip
DURATIONS = (5, 10, 15, 20, 25, 30, 45, 60, 90, 120)

COPY_RATE = 0.02  # the same record sent again
TWIN_RATE = 0.03  # the same session under another id
WINDOW = 256  # recent records and sessions that copies and twins are drawn from

# Practice times fall in this window (long past, so never "in the future" for the service).
START = datetime(2018, 1, 1, tzinfo=UTC)
END = datetime(2025, 6, 1, tzinfo=UTC)

NANOID = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # base64url's alphabet
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class BenchUser:
    index: int
    id: str
    email: str
    device_id: str
    role: str = "user"


def make_users(count: int) -> list[BenchUser]:
    """`count` users (ids `user_` + 21 chars, some emails in mixed case as in older rows)."""
    return [
        BenchUser(
            index=i,
            id=f"user_bench{i:016d}",
            email=(f"Pianist{i:03d}@Example.com" if i % 5 == 0 else f"pianist{i:03d}@example.com"),
            device_id=f"dev_bench{i:011d}",
        )
        for i in range(count)
    ]


ADMIN = BenchUser(
    index=-1, id="user_benchAdmin0000000000", email="support@example.com", device_id="dev_benchAdmin00000", role="admin"
)


@dataclass
class Expected:
    """What one user's records must end as (CONTRACT section 8)."""

    sent: int = 0
    sessions: int = 0  # distinct content: the user's live logbook rows
    twins: int = 0  # ids whose content another id already has: content duplicates
    copies: int = 0  # records sent again verbatim
    row_eligible: int = 0  # sessions the legacy `logbook_entries` CHECKs accept

    @property
    def keys(self) -> int:
        """Distinct entity ids sent."""
        return self.sessions + self.twins

    def add(self, other: Expected) -> None:
        self.sent += other.sent
        self.sessions += other.sessions
        self.twins += other.twins
        self.copies += other.copies
        self.row_eligible += other.row_eligible


def total(expected: dict[str, Expected]) -> Expected:
    overall = Expected()
    for each in expected.values():
        overall.add(each)
    return overall


@dataclass(slots=True)
class Session:
    """The content of one practice session, whatever shape a device stores it in."""

    start_ms: int
    duration: int
    type: str
    instrument: str
    pieces: tuple[tuple[str, str | None], ...]
    techniques: tuple[str, ...]
    goal_ids: tuple[str, ...]
    notes: str | None
    mood: str | None
    tags: tuple[str, ...]
    source: str  # metadata.source

    @property
    def row_eligible(self) -> bool:
        return self.type in ROW_TYPES and self.instrument in ROW_INSTRUMENTS and self.mood in ROW_MOODS


def iso_z(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{ms % 1000:03d}Z")  # fmt: skip


def timestamp_in(form: str, ms: int, rng: random.Random) -> str | int:
    """`ms` (whole seconds) in one of the forms devices send; all parse back to the same instant."""
    if form == "iso_z":
        return iso_z(ms)
    if form == "epoch_ms":
        return ms
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if form == "offset":
        return moment.astimezone(pick(rng, OFFSETS)).isoformat(timespec="seconds")
    return moment.strftime("%Y-%m-%d %H:%M:%S")  # legacy, meaning UTC


class EntryStream:
    """One user's records, endlessly: new sessions, copies and twins, in bounded memory."""

    def __init__(self, user: BenchUser, seed: str, expected_records: int) -> None:
        self.user = user
        self.expected = Expected()
        self._rng = random.Random(f"{seed}:{user.id}")
        self._counter = 0  # makes every id unique
        self._goal_ids = tuple(self._nanoid() for _ in range(self._rng.randint(2, 6)))
        span_minutes = (END - START) // timedelta(minutes=1)
        # Mean gap between sessions so that even 1.5x the expected records stay inside the window.
        self._mean_gap = max(2, int(span_minutes / (max(expected_records, 1) * 1.5)))
        self._next_ms = int(START.timestamp() * 1000) + self._rng.randrange(0, 7 * 24 * 60) * 60_000
        self._recent_records: deque[dict[str, Any]] = deque(maxlen=WINDOW)
        self._recent_sessions: deque[Session] = deque(maxlen=WINDOW)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        roll = self._rng.random()
        if roll < COPY_RATE and self._recent_records:
            record = pick(self._rng, self._recent_records)
            self.expected.copies += 1
        elif roll < COPY_RATE + TWIN_RATE and self._recent_sessions:
            record = self._render(pick(self._rng, self._recent_sessions), logged_later=True)
            self.expected.twins += 1
        else:
            session = self._new_session()
            record = self._render(session, logged_later=False)
            self._recent_sessions.append(session)
            self.expected.sessions += 1
            self.expected.row_eligible += session.row_eligible
        self._recent_records.append(record)
        self.expected.sent += 1
        return record

    def take(self, count: int) -> list[dict[str, Any]]:
        return [next(self) for _ in range(count)]

    # --- sessions -----------------------------------------------------------------------------------

    def _new_session(self) -> Session:
        rng = self._rng
        # Strictly increasing start times: no two sessions of a user have the same content.
        self._next_ms += (1 + rng.randrange(2 * self._mean_gap)) * 60_000
        return Session(
            start_ms=self._next_ms,
            duration=pick(rng, DURATIONS),
            type=TYPES.pick(rng),
            instrument=INSTRUMENTS.pick(rng),
            pieces=some(rng, CATALOGUE, (0, 1, 1, 1, 2)),
            techniques=some(rng, TECHNIQUES, (0, 0, 1, 2)),
            goal_ids=some(rng, self._goal_ids, (0, 0, 0, 1, 1, 2)),
            notes=pick(rng, NOTES),
            mood=MOODS.pick(rng),
            tags=some(rng, TAGS, (0, 0, 0, 1)),
            source=pick(rng, ("timer", "timer", "manual")),
        )

    # --- records --------------------------------------------------------------------------------------

    def _render(self, session: Session, *, logged_later: bool) -> dict[str, Any]:
        rng = self._rng
        style = STYLES.pick(rng)
        created_ms = session.start_ms + session.duration * 60_000 + rng.randrange(0, 600_000)
        if logged_later:  # entered again on another device, hours or days later
            created_ms += rng.randrange(3_600_000, 5 * 86_400_000)
        updated_ms = created_ms if rng.random() < 0.8 else created_ms + rng.randrange(60_000, 86_400_000)
        if style == "old_client":
            return self._old_client(session, created_ms, updated_ms)
        record = self._modern(session, created_ms, updated_ms)
        if style == "round_trip":  # as the server handed it back: times in ms, owner and version filled in
            record.update(
                timestamp=session.start_ms,
                user_id=self.user.id,
                created_at=created_ms,
                updated_at=updated_ms,
                sync_version=1,
            )
        return record

    def _modern(self, session: Session, created_ms: int, updated_ms: int) -> dict[str, Any]:
        rng = self._rng
        return {
            "id": self._nanoid(),
            "timestamp": timestamp_in(TIMESTAMP_FORMS.pick(rng), session.start_ms, rng),
            "duration": session.duration,
            "type": session.type,
            "instrument": session.instrument,
            "pieces": [_piece(title, composer, rng, keep_null=False) for title, composer in session.pieces],
            "techniques": list(session.techniques),
            "goalIds": list(session.goal_ids),
            "notes": session.notes,
            "mood": session.mood,
            "tags": list(session.tags),
            "metadata": {"source": session.source},
            "createdAt": iso_z(created_ms),
            "updatedAt": iso_z(updated_ms),
        }

    def _old_client(self, session: Session, created_ms: int, updated_ms: int) -> dict[str, Any]:
        """Before July 2025: UPPERCASE enums, `composer: null`, snake/camel times mixed, ms numbers."""
        rng = self._rng
        return {
            "id": f"entry_{created_ms}_{self._base36(9)}",
            "timestamp": timestamp_in(OLD_CLIENT_TIMESTAMP_FORMS.pick(rng), session.start_ms, rng),
            "duration": session.duration,
            "type": session.type.upper(),
            "instrument": session.instrument.upper(),
            "pieces": [_piece(title, composer, rng, keep_null=True) for title, composer in session.pieces],
            "techniques": list(session.techniques),
            "notes": session.notes,
            "mood": session.mood.upper() if session.mood else None,
            "tags": list(session.tags),
            "metadata": {"source": session.source},
            "updatedAt": iso_z(updated_ms),
            "created_at": created_ms,
            "user_id": self.user.id,
            "goal_ids": list(session.goal_ids),
        }

    def _nanoid(self) -> str:
        """21 characters like the client's nanoid; the last 5 count up, so ids never collide."""
        self._counter += 1
        return base64.urlsafe_b64encode(self._rng.randbytes(12)).decode()[:16] + _digits(self._counter, NANOID, 5)

    def _base36(self, length: int) -> str:
        """`length` base-36 characters; the last 4 count up, so ids never collide."""
        self._counter += 1
        random_part = _digits(self._rng.getrandbits(32), BASE36, length - 4)
        return random_part + _digits(self._counter, BASE36, 4)


def _digits(n: int, alphabet: str, width: int) -> str:
    """The last `width` digits of `n` in base len(alphabet)."""
    base = len(alphabet)
    digits = []
    for _ in range(width):
        n, digit = divmod(n, base)
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def _piece(title: str, composer: str | None, rng: random.Random, *, keep_null: bool) -> dict[str, Any]:
    piece: dict[str, Any] = {"title": title}
    if composer is not None or keep_null:
        piece["composer"] = composer
    piece["measures"] = pick(rng, (None, None, "1-16", "17-32"))
    piece["tempo"] = pick(rng, (None, None, 60, 72, 96))
    return piece


# --- data sets --------------------------------------------------------------------------------------


@dataclass
class PushDataset:
    """Every user's records, in the order the device holds them, and what they must end as."""

    records: dict[str, list[dict[str, Any]]]  # user id -> records
    expected: dict[str, Expected]

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.records.values())

    def pairs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for user_id, records in self.records.items():
            for record in records:
                yield user_id, record


def push_dataset(users: list[BenchUser], entries: int, seed: str) -> PushDataset:
    """`entries` records spread evenly over `users` (the first users get one more when it does not divide)."""
    per_user, extra = divmod(entries, len(users))
    records: dict[str, list[dict[str, Any]]] = {}
    expected: dict[str, Expected] = {}
    for user in users:
        count = per_user + (user.index < extra)
        stream = EntryStream(user, f"{seed}:push", count)
        records[user.id] = stream.take(count)
        expected[user.id] = stream.expected
    return PushDataset(records, expected)


@dataclass
class NdjsonFile:
    path: Path
    entries: int
    lines: int
    expected: dict[str, Expected] = field(default_factory=dict)


_encode = msgspec.json.Encoder().encode


def write_ndjson(path: Path, users: list[BenchUser], entries: int, seed: str) -> NdjsonFile:
    """A replay file of `entries` records: lines of one user's push body, 100-500 entries each, users
    interleaved at random. Streamed to disk; only each user's small window is ever in memory."""
    rng = random.Random(f"{seed}:ndjson-lines")
    streams = {user.id: EntryStream(user, f"{seed}:ndjson", entries // len(users)) for user in users}
    written = lines = 0
    with path.open("wb") as out:
        while written < entries:
            user = rng.choice(users)
            count = min(rng.randint(100, 500), entries - written)
            line = {
                "user_id": user.id,
                "device_id": user.device_id,
                "changes": {"entries": streams[user.id].take(count)},
            }
            out.write(_encode(line))
            out.write(b"\n")
            written += count
            lines += 1
    return NdjsonFile(path, written, lines, {user_id: s.expected for user_id, s in streams.items()})
