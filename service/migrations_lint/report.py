"""Text and JSON output, and the exit code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .model import FileSimulation, Finding, MigrationInputError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNREADABLE = 2


@dataclass(frozen=True)
class LintReport:
    files: list[str]
    findings: list[Finding]
    simulation: list[FileSimulation] | None  # None when --simulate was not asked for (or could not run)
    error: MigrationInputError | None = None  # a statement SQLite could not execute; linting stopped there

    def exit_code(self) -> int:
        if self.error:
            return EXIT_UNREADABLE
        failed = any(f.severity == "error" for f in self.findings) or any(
            result.failed for result in self.simulation or []
        )
        return EXIT_FINDINGS if failed else EXIT_OK


def render_json(report: LintReport) -> str:
    return json.dumps(
        {
            "files": report.files,
            "findings": [asdict(finding) for finding in report.findings],
            "simulation": [_simulation_dict(result) for result in report.simulation or []],
            "error": {"location": report.error.location, "message": report.error.message} if report.error else None,
        },
        indent=2,
    )


def _simulation_dict(result: FileSimulation) -> dict[str, object]:
    return {**asdict(result), "rows_lost": bool(result.lost_rows)}


def render_text(report: LintReport) -> str:
    blocks = [_finding_block(finding) for finding in report.findings]
    if report.simulation is not None:
        blocks.append(_simulation_block(report.simulation))
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
    if result.error:
        return [f"  {result.file}:{result.error.line}: could not apply: {result.error.message}"]
    if result.lost_rows:
        losses = ", ".join(f"{loss.table} {loss.before} -> {loss.after}" for loss in result.lost_rows)
        lines = [f"  {result.file}: ROWS LOST: {losses}"]
    else:
        lines = [f"  {result.file}: no rows lost"]
    if result.dropped_tables:
        dropped = ", ".join(f"{table.table} ({_count(table.rows, 'row')})" for table in result.dropped_tables)
        lines.append(f"      dropped: {dropped}")
    if result.seeded:
        seeded = ", ".join(f"{table.table} ({table.rows})" for table in result.seeded)
        lines.append(f"      then seeded: {seeded}")
    for skipped in result.not_seeded:
        lines.append(f"      could not seed {skipped.table}: {skipped.reason}")
    return lines


def _summary(report: LintReport) -> str:
    files = _count(len(report.files), "migration file")
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = len(report.findings) - errors
    summary = (
        f"{_count(errors, 'error')} and {_count(warnings, 'warning')} in {files}."
        if report.findings
        else f"No findings in {files}."
    )
    if report.error:
        return f"Linting stopped at {report.error.location}: {report.error.message}. Before that: {summary}"
    if report.simulation is None:
        return summary
    losing = sum(bool(result.lost_rows) for result in report.simulation)
    failed = [result for result in report.simulation if result.error]
    if failed:
        return f"{summary} Simulation stopped: {failed[0].file} could not be applied."
    if losing:
        return f"{summary} Simulation: rows lost in {_count(losing, 'migration file')}."
    return f"{summary} Simulation: no rows lost."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
