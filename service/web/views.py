"""What the support page shows, in words a support person reads: labels, sentences and the chart's
geometry. Presentation only: every figure comes from the store's and `service.usecases.support`'s functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.domain.times import app_hour
from service.store.rows import ArchivedConflict, Declaration, HourlyActivity, UserProgress
from service.usecases.support import declaration_differences

STATE_LABELS = {
    "not_started": "Not started",
    "in_progress": "In progress",
    "complete": "Complete",
    "needs_review": "Needs review",
}

ENTITY_LABELS = {
    "logbook_entry": "Logbook entries",
    "goal": "Goals",
    "practice_plan": "Practice plans",
    "plan_occurrence": "Plan occurrences",
    "plan_template": "Plan templates",
    "repertoire_item": "Repertoire items",
    "user_preferences": "Preferences",
}

ENTITY_ONE = {
    "logbook_entry": "logbook entry",
    "goal": "goal",
    "practice_plan": "practice plan",
    "plan_occurrence": "plan occurrence",
    "plan_template": "plan template",
    "repertoire_item": "repertoire item",
    "user_preferences": "preferences",
}


def kind(entity_type: str, n: int) -> str:
    """`3 logbook entries`, `1 goal`."""
    if n == 1:
        return f"1 {ENTITY_ONE.get(entity_type, entity_type)}"
    return f"{n} {ENTITY_LABELS.get(entity_type, entity_type).lower()}"


OUTCOME_LABELS = {
    "inserted": "New, written",
    "updated": "Newer version, written",
    "duplicate": "Already there",
    "kept_existing": "Older than the stored one",
    "deleted": "Deleted",
    "suppressed": "Deleted later on a device",
    "content_duplicate": "Same session under two ids",
    "quarantined": "Quarantined",
}

REASON_WORDS = {
    "unknown_user": "The account it belongs to does not exist (yet). Re-create the user, then re-drive.",
    "ambiguous_email": "Several accounts share this email in different cases, so whose it is is unclear.",
    "user_mismatch": "It names a different user than the one who sent it.",
    "missing_id": "It has no id, so it cannot be matched to anything the app stores.",
    "unknown_entity_type": "Its type is not one the app stores.",
    "not_an_object": "It is not a JSON object (the device sent something else).",
    "invalid_value": "A field holds a value the app does not accept.",
    "missing_field": "A field the app requires is missing.",
    "invalid_time": "A date or time in it cannot be read.",
    "future_time": "A date in it lies in the future.",
    "too_large": "It is larger than the app accepts.",
}

SOURCE_LABELS = {
    "push": "App sync (push)",
    "recovery": "Recovery upload",
    "replay": "Replay of an export file",
    "export": "Export file upload",
    "redrive": "Re-drive by support",
    "socket": "Live sync",
    "repertoire": "Repertoire change",
}


def state_sentence(p: UserProgress) -> str:
    """Is this user's data back? The answer in one sentence."""
    open_devices = [d for d in p.devices if not d.declared_complete]
    if p.state == "complete":
        return (f"Recovered: all {len(p.devices)} device(s) declared complete and the service holds what they "
                "sent. Nothing waits for a person.")
    if p.state == "needs_review":
        parts = []
        if p.quarantined_waiting:
            parts.append(f"{p.quarantined_waiting} quarantined record(s)")
        if p.archived_waiting:
            parts.append(f"{p.archived_waiting} conflict(s)")
        return f"Needs a person: {' and '.join(parts)} below."
    if p.state == "not_started":
        return "Nothing recovered yet: no device of this user has uploaded anything."
    if not p.devices:
        return "Uploads arrived, but no device has declared itself complete."
    return (f"In progress: {len(open_devices)} of {len(p.devices)} device(s) have not declared themselves "
            "complete (or declared counts that did not match).")


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
