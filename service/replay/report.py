"""The replay summary for people (text, or a rich table on a terminal) and for machines (`--json`)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from service.domain.outcomes import OUTCOMES
from service.replay.grouping import UNREADABLE_LINE
from service.replay.summary import ReplaySummary, users_by_volume

USERS_SHOWN = 50


def render_json(summary: ReplaySummary) -> str:
    return json.dumps(summary.as_json(), indent=2, ensure_ascii=False)


def render_text(summary: ReplaySummary) -> str:
    if not summary.users:
        return "\n".join([*_sections(summary), "no records were replayed"])
    rows = _user_rows(summary)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
             strict=True))).rstrip() for row in rows]
    return "\n".join([*_sections(summary), "per user and outcome:", *(f"  {line}" for line in table)])


def print_rich(summary: ReplaySummary, console: Console) -> None:
    for line in _sections(summary):
        console.print(line, markup=False, highlight=False)
    if not summary.users:
        console.print("no records were replayed")
        return
    rows = _user_rows(summary)
    table = Table(title="per user and outcome")
    for i, heading in enumerate(rows[0]):
        table.add_column(heading, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows[1:]:
        table.add_row(*row, style="bold" if row[0] == "total" else None)
    # Each column: its widest cell, a space either side and a border; one more border at the end.
    needed = sum(max(len(row[i]) for row in rows) + 3 for i in range(len(rows[0]))) + 1
    if needed > console.width:
        # Too wide for the terminal: rich would cut the user ids; the plain table never does.
        for line in render_text(summary).splitlines()[len(_sections(summary)):]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    console.print(table)


def _columns(summary: ReplaySummary) -> list[str]:
    """Outcomes that happened (inserted always shown, so an empty replay still has a table)."""
    return [o for o in OUTCOMES if summary.counts.get(o) or o == "inserted"]


def _user_rows(summary: ReplaySummary) -> list[list[str]]:
    columns = _columns(summary)
    rows = [["user", *columns, "total"]]
    users = users_by_volume(summary)
    for user, counts in users[:USERS_SHOWN]:
        rows.append([user, *(f"{counts.get(c, 0):,}" for c in columns), f"{sum(counts.values()):,}"])
    if len(users) > USERS_SHOWN:
        more = len(users) - USERS_SHOWN
        rows.append([f"... {more:,} more user{'s' if more > 1 else ''} (see --json)", *([""] * (len(columns) + 1))])
    rows.append(["total", *(f"{summary.counts.get(c, 0):,}" for c in columns), f"{summary.records:,}"])
    return rows


def _sections(summary: ReplaySummary) -> list[str]:
    dry = (" (dry run: nothing was written; the run was judged in one transaction, rolled back: these are the "
           "real run's counts)" if summary.dry_run else "")
    stopped = " (interrupted: these are the records done before it stopped)" if summary.interrupted else ""
    shard = "" if summary.shard is None else f" (shard {summary.shard}: the users whose records fall in it)"
    lines = [f"replay into {summary.database}{shard}: {len(summary.files)} file(s), {summary.records:,} records"
             f"{dry}{stopped}"]
    lines += [f"  cannot read {problem}" for problem in summary.problems]
    for report in summary.files:
        source = report.source
        status = report.status.replace("_", " ")
        detail = f"{report.records:,} records" if report.records else ""
        if report.resumed_from:
            detail += f" (resumed after {report.resumed_from:,})"
        if report.error:
            detail = f"error: {report.error}"
        lines.append(f"  {status}: {source.location} [{report.kind or source.format or '?'}] "
                     f"sha256 {source.sha256} {detail}".rstrip())
        lines += [f"    not replayed (no entity type for it): {key}" for key in report.not_replayed]
    lines += [f"  skipped {s.location}: {s.reason}" for s in summary.skipped]
    if summary.bad_lines:
        lines.append(f"bad lines: {summary.bad_lines:,} (each kept in quarantine under owner 'unknown')")
        for report in summary.files:
            lines += [f"  {report.source.location}:{line}: {reason}" for line, reason in report.bad_lines]
            if report.bad_lines_total > len(report.bad_lines):
                lines.append(f"  {report.source.location}: {report.bad_lines_total - len(report.bad_lines):,} more")
    problems = [(r, p) for r in summary.files for p in r.owner_problems if p.reason != UNREADABLE_LINE]
    if problems:
        lines.append("owners not resolved (their records are quarantined, not lost):")
        for report, p in problems:
            where = f" from line {p.first_line}" if p.first_line is not None else ""
            lines.append(f"  {report.source.location}{where}: {p.reason} {p.owner}: {p.records:,} records "
                         f"({p.detail})")
    lines += [f"next: {step}" for step in summary.next_steps]
    return lines
