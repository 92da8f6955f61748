"""Text and JSON output, and the exit code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .model import FileSimulation, Finding
from .rules import UNEXECUTABLE_STATEMENT

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNREADABLE = 2


@dataclass(frozen=True)
class LintReport:
    files: list[str]
    findings: list[Finding]
    simulation: list[FileSimulation] | None  # None when --simulate was not asked for
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)

    def exit_code(self) -> int:
        """1 on an error finding or a simulated loss; skipped statements alone are warnings."""
        failed = any(f.severity == "error" for f in self.findings) or any(
            result.failed for result in self.simulation or []
        )
        return EXIT_FINDINGS if failed else EXIT_OK


def render_json(report: LintReport) -> str:
    return json.dumps(
        {
            "files": report.files,
            "baseline": report.baseline,
            "findings": [asdict(finding) for finding in report.findings],
            "notes": report.notes,
            "simulation": [_simulation_dict(result) for result in report.simulation or []],
        },
        indent=2,
    )


def _simulation_dict(result: FileSimulation) -> dict[str, object]:
    return {**asdict(result), "rows_lost": bool(result.lost_rows)}


def render_text(report: LintReport) -> str:
    blocks = [_finding_block(finding) for finding in report.findings]
    if report.simulation is not None:
        blocks.append(_simulation_block(report.simulation))
    blocks += [f"note: {note}" for note in report.notes]
    blocks.append(_summary(report))
    return "\n\n".join(blocks)


def _finding_block(finding: Finding) -> str:
    lines = [
        f"{finding.file}:{finding.line}: {finding.severity} {finding.rule}: {finding.message}",
        f"    statement: {finding.statement}",
    ]
    if finding.children:
        children = ", ".join(child.describe(finding.table) for child in finding.children)
        lines.append(f"    children: {children}")
    lines.append(f"    safe pattern: {finding.safe_pattern}")
    return "\n".join(lines)


def _simulation_block(results: list[FileSimulation]) -> str:
    lines = ["Simulation (each file in one transaction, on a scratch database seeded with synthetic rows):"]
    for result in results:
        lines += _simulation_lines(result)
    return "\n".join(lines)


def _simulation_lines(result: FileSimulation) -> list[str]:
    if result.baseline:
        lines = [f"  {result.file}: baseline loaded"]
    elif result.error:
        lines = [f"  {result.file}:{result.error.line}: could not apply, rolled back: {result.error.message}"]
    elif result.lost_rows:
        losses = ", ".join(f"{loss.table} {loss.before} -> {loss.after}" for loss in result.lost_rows)
        lines = [f"  {result.file}: ROWS LOST: {losses}"]
    else:
        lines = [f"  {result.file}: no rows lost"]
    for skipped in result.skipped:
        lines.append(f"      skipped line {skipped.line}: {skipped.message}")
    if result.dropped_tables:
        dropped = ", ".join(f"{table.table} ({_count(table.rows, 'row')})" for table in result.dropped_tables)
        lines.append(f"      dropped: {dropped}")
    if result.seeded:
        seeded = ", ".join(f"{table.table} ({table.rows})" for table in result.seeded)
        lines.append(f"      then seeded: {seeded}")
    if result.staging:
        staging = ", ".join(f"{table.table} (copy at {table.filled_at})" for table in result.staging)
        lines.append(f"      left empty for a later copy into it: {staging}")
    for skipped_table in result.not_seeded:
        lines.append(f"      could not seed {skipped_table.table}: {skipped_table.reason}")
    return lines


def _summary(report: LintReport) -> str:
    files = _count(len(report.files), "migration file")
    where = f"{files} on the baseline {report.baseline}" if report.baseline else files
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = len(report.findings) - errors
    skipped = sum(f.rule == UNEXECUTABLE_STATEMENT for f in report.findings)
    summary = (
        f"{_count(errors, 'error')} and {_count(warnings, 'warning')} in {where}"
        if report.findings
        else f"No findings in {where}"
    )
    them = "it" if skipped == 1 else "them"
    summary += f" ({_count(skipped, 'statement')} skipped: SQLite could not execute {them})." if skipped else "."
    if report.simulation is None:
        return summary
    return f"{summary} {_simulation_summary(report.simulation)}"


def _simulation_summary(results: list[FileSimulation]) -> str:
    losing = sum(bool(result.lost_rows) for result in results)
    failed = sum(result.error is not None for result in results)
    skipped = sum(len(result.skipped) for result in results)
    parts = [f"rows lost in {_count(losing, 'migration file')}" if losing else "no rows lost"]
    if failed:
        parts.append(f"{_count(failed, 'file')} could not be applied")
    if skipped:
        parts.append(f"{_count(skipped, 'statement')} skipped")
    return f"Simulation: {', '.join(parts)}."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
