"""What the reliability suites generate: one user's records as their devices hold them, seeded."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

START_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class DeviceHistory:
    """A user's growing history: new entries with ids under `prefix`, a clock a minute per change, and
    every version of each entry sent so far (subclasses add edits, deletions, stale copies...)."""

    def __init__(self, prefix: str, rng: random.Random, start_ms: int = START_MS) -> None:
        self.prefix = prefix
        self.rng = rng
        self.clock = start_ms
        self.entries: dict[str, list[dict[str, Any]]] = {}  # id -> versions sent so far
        self.goals: dict[str, dict[str, Any]] = {}
        self.serial = 0

    def tick(self) -> str:
        self.clock += MINUTE
        return iso(self.clock)

    def new_id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.prefix}-{kind}-{self.serial}"

    def new_entry(self) -> dict[str, Any]:
        entity_id = self.new_id("e")
        now = self.tick()
        entry = {
            "id": entity_id, "timestamp": now, "duration": self.rng.randint(5, 90), "type": "practice",
            "instrument": self.rng.choice(["piano", "guitar", "cello"]),
            "pieces": [{"title": self.rng.choice(["Nocturne", "Prelude", "Étude"]), "composer": "Chopin"}],
            "notes": f"session {entity_id}", "mood": "satisfied", "tags": [], "createdAt": now, "updatedAt": now,
        }  # fmt: skip
        self.entries[entity_id] = [entry]
        return entry
