"""What the support page shows, in words a support person reads: labels, sentences and the chart's
geometry. Presentation only: every figure comes from the store's and `service.usecases.support`'s functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

import msgspec

from service.domain.outcomes import Outcome
from service.domain.progress import RecoveryState
from service.domain.records import ENTITY_TYPES, EntityType, QuarantineReason
from service.domain.sources import Source
from service.domain.times import app_hour
from service.store.rows import ArchivedConflict, Declaration, HourlyActivity, UserProgress
from service.usecases.support import declaration_differences

# Words for every member of each closed set (a test checks none is missing). Keyed by the enums; the
# templates look up the stored text, which is the same key (a StrEnum is its value), and fall back to the
# text itself for anything else (an entity type a device made up).
STATE_LABELS: dict[RecoveryState, str] = {
    RecoveryState.NOT_STARTED: "Not started",
    RecoveryState.IN_PROGRESS: "In progress",
    RecoveryState.COMPLETE: "Complete",
    RecoveryState.NEEDS_REVIEW: "Needs review",
}

ENTITY_LABELS: dict[EntityType, str] = {
    EntityType.LOGBOOK_ENTRY: "Logbook entries",
    EntityType.GOAL: "Goals",
    EntityType.PRACTICE_PLAN: "Practice plans",
    EntityType.PLAN_OCCURRENCE: "Plan occurrences",
    EntityType.PLAN_TEMPLATE: "Plan templates",
    EntityType.REPERTOIRE_ITEM: "Repertoire items",
    EntityType.USER_PREFERENCES: "Preferences",
}

ENTITY_ONE: dict[EntityType, str] = {
    EntityType.LOGBOOK_ENTRY: "logbook entry",
    EntityType.GOAL: "goal",
    EntityType.PRACTICE_PLAN: "practice plan",
    EntityType.PLAN_OCCURRENCE: "plan occurrence",
    EntityType.PLAN_TEMPLATE: "plan template",
    EntityType.REPERTOIRE_ITEM: "repertoire item",
    EntityType.USER_PREFERENCES: "preferences",
}


def kind(entity_type: str, n: int) -> str:
    """`3 logbook entries`, `1 goal` (an entity type the service does not know: its own name)."""
    if entity_type not in ENTITY_TYPES:
        return f"1 {entity_type}" if n == 1 else f"{n} {entity_type.lower()}"
    known = EntityType(entity_type)
    return f"1 {ENTITY_ONE[known]}" if n == 1 else f"{n} {ENTITY_LABELS[known].lower()}"


OUTCOME_LABELS: dict[Outcome, str] = {
    Outcome.INSERTED: "New, written",
    Outcome.UPDATED: "Newer version, written",
    Outcome.DUPLICATE: "Already there",
    Outcome.KEPT_EXISTING: "Older than the stored one",
    Outcome.DELETED: "Deleted",
    Outcome.SUPPRESSED: "Deleted later on a device",
    Outcome.CONTENT_DUPLICATE: "Same session under two ids",
    Outcome.QUARANTINED: "Quarantined",
}

REASON_WORDS: dict[QuarantineReason, str] = {
    QuarantineReason.UNKNOWN_USER: "The account it belongs to does not exist (yet). Re-create the user, then re-drive.",
    QuarantineReason.AMBIGUOUS_EMAIL: (
        "Several accounts share this email in different cases, so whose it is is unclear."
    ),
    QuarantineReason.USER_MISMATCH: "It names a different user than the one who sent it.",
    QuarantineReason.MISSING_ID: "It has no id, so it cannot be matched to anything the app stores.",
    QuarantineReason.UNKNOWN_ENTITY_TYPE: "Its type is not one the app stores.",
    QuarantineReason.NOT_AN_OBJECT: "It is not a JSON object (the device sent something else).",
    QuarantineReason.INVALID_VALUE: "A field holds a value the app does not accept.",
    QuarantineReason.MISSING_FIELD: "A field the app requires is missing.",
    QuarantineReason.INVALID_TIME: "A date or time in it cannot be read.",
    QuarantineReason.FUTURE_TIME: "A date in it lies in the future.",
    QuarantineReason.TOO_LARGE: "It is larger than the app accepts.",
    QuarantineReason.UNREADABLE_LINE: "It is a line of a replayed file that is not a record (kept as it was).",
}

SOURCE_LABELS: dict[Source, str] = {
    Source.PUSH: "App sync (push)",
    Source.RECOVERY: "Recovery upload",
    Source.REPLAY: "Replay of an export file",
    Source.EXPORT: "Export file upload",
    Source.REDRIVE: "Re-drive by support",
    Source.SOCKET: "Live sync",
    Source.REPERTOIRE: "Repertoire change",
    Source.PREFERENCES: "Preferences change",
}


def state_sentence(p: UserProgress) -> str:
    """Is this user's data back? The answer in one sentence."""
    match p.state:
        case RecoveryState.COMPLETE:
            return (f"Recovered: all {len(p.devices)} device(s) declared complete and the service holds what "
                    "they sent. Nothing waits for a person.")
        case RecoveryState.NEEDS_REVIEW:
            parts = []
            if p.quarantined_waiting:
                parts.append(f"{p.quarantined_waiting} quarantined record(s)")
            if p.archived_waiting:
                parts.append(f"{p.archived_waiting} conflict(s)")
            return f"Needs a person: {' and '.join(parts)} below."
        case RecoveryState.NOT_STARTED:
            return "Nothing recovered yet: no device of this user has uploaded anything."
        case RecoveryState.IN_PROGRESS:
            if not p.devices:
                return "Uploads arrived, but no device has declared itself complete."
            open_devices = [d for d in p.devices if not d.declared_complete]
            return (f"In progress: {len(open_devices)} of {len(p.devices)} device(s) have not declared "
                    "themselves complete (or declared counts that did not match).")
        case _:
            assert_never(p.state)


def device_rows(p: UserProgress, declarations: dict[str, Declaration]) -> list[dict[str, Any]]:
    """Each device, with its latest declaration when that one did not match (and the differences)."""
    rows = []
    for d in p.devices:
        mismatch = declarations.get(d.device_id)
        if d.declared_complete or mismatch is None or mismatch.matched:
            mismatch = None
        differences = declaration_differences(mismatch.expected, d.received) if mismatch else {}
        rows.append({"device": d, "mismatch": mismatch, "differences": differences})
    return rows


def received_total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def pretty_json(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def pretty_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def raw_json(value: Any) -> str:
    return value if isinstance(value, str) else pretty_value(value)


def conflict_fields(c: ArchivedConflict) -> list[dict[str, Any]]:
    """The kept and the archived version field by field, with the fields that differ marked."""
    def fields(text: str | None) -> dict[str, Any]:
        if text is None:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            return {"(text)": text}
        return value if isinstance(value, dict) else {"(value)": value}

    kept, archived = fields(c.kept_data), fields(c.archived_data)
    names = sorted(set(kept) | set(archived), key=lambda n: (n not in ("id", "updatedAt", "updated_at"), n))
    rows = []
    for name in names:
        rows.append({
            "name": name,
            "kept": pretty_value(kept[name]) if name in kept else "(absent)",
            "archived": pretty_value(archived[name]) if name in archived else "(absent)",
            "differs": kept.get(name, msgspec.UNSET) != archived.get(name, msgspec.UNSET),
        })
    return rows


def hours_back(now: datetime, hours: int) -> list[str]:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    return [app_hour(start + timedelta(hours=i)) for i in range(hours)]


def since_text(now: datetime, hours: int) -> str:
    return hours_back(now, hours)[0] + ":00:00"


class Bar(msgspec.Struct):
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str


def chart(activity: list[HourlyActivity], *, hours: int, now: datetime | None = None) -> dict[str, Any]:
    """Two bar rows (records, uploads) per hour over the last `hours` hours, as SVG geometry."""
    now = now or datetime.now(UTC)
    slots = hours_back(now, hours)
    by_hour = {a.hour: a for a in activity}
    width, left, plot_h = 720.0, 48.0, 90.0
    step = (width - left) / hours
    series = []
    for key, title in (("records", "Records received per hour"), ("uploads", "Uploads per hour")):
        values = [getattr(by_hour[h], key) if h in by_hour else 0 for h in slots]
        top = max(values) or 1
        bars = [
            Bar(x=left + i * step + 1, y=plot_h - (v / top) * plot_h, width=max(step - 2, 1),
                height=(v / top) * plot_h, value=v, label=f"{slots[i][11:]}:00")
            for i, v in enumerate(values)
        ]
        series.append({"key": key, "title": title, "bars": bars, "max": max(values), "total": sum(values)})
    ticks = [{"x": left + i * step + step / 2, "label": f"{slots[i][11:]}h"} for i in range(0, hours, 3)]
    return {"series": series, "ticks": ticks, "width": width, "plot_h": plot_h, "left": left,
            "first": slots[0], "last": slots[-1], "hours": hours}
