"""What a replay did: per file (status, records, bad lines, owners it could not resolve) and per user
and outcome. Lists are capped so that the summary, like the replay, stays small whatever the input;
what is beyond a cap is still counted, and kept in the database (ledger, quarantine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from service.domain.outcomes import OUTCOMES
from service.domain.records import QuarantineReason
from service.replay.grouping import PlannedUpload
from service.replay.inputs import InputFile, Skipped
from service.replay.shards import Shard
from service.usecases.ingest import UploadResult


class FileStatus(StrEnum):
    """What a replay did with one file (the summary's `status`)."""

    REPLAYED = "replayed"
    RESUMED = "resumed"
    ALREADY_REPLAYED = "already_replayed"
    DUPLICATE_INPUT = "duplicate_input"  # the same file (and owner option) twice in one run
    UNREADABLE = "unreadable"
    NOTHING_TO_REPLAY = "nothing_to_replay"  # read, and no record in it: exit 2, so an empty input is noticed
    STOPPED = "stopped"  # interrupted, or another run moved the checkpoint


REPLAYED = FileStatus.REPLAYED
RESUMED = FileStatus.RESUMED
ALREADY_REPLAYED = FileStatus.ALREADY_REPLAYED
DUPLICATE_INPUT = FileStatus.DUPLICATE_INPUT
UNREADABLE = FileStatus.UNREADABLE
NOTHING_TO_REPLAY = FileStatus.NOTHING_TO_REPLAY
STOPPED = FileStatus.STOPPED

MAX_LISTED_PER_FILE = 1000
MAX_LISTED_USERS = 10_000
OTHER_USERS = "(other users)"


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


@dataclass
class OwnerProblem:
    reason: QuarantineReason  # the owner's problem: unknown_user, user_mismatch, unreadable_line...
    owner: str
    detail: str
    first_line: int | None
    records: int = 0


@dataclass
class FileReport:
    source: InputFile
    status: FileStatus = REPLAYED
    kind: str | None = None  # the recognised format, e.g. "full export 2.0"
    records: int = 0  # units replayed by this run
    resumed_from: int = 0
    counts: dict[str, int] = field(default_factory=zero_counts)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    bad_lines_total: int = 0
    not_replayed: list[str] = field(default_factory=list)
    error: str | None = None
    _problems: dict[tuple[QuarantineReason, str], OwnerProblem] = field(default_factory=dict)
    problems_total: int = 0

    def bad_line(self, line: int, reason: str) -> None:
        self.bad_lines_total += 1
        if len(self.bad_lines) < MAX_LISTED_PER_FILE:
            self.bad_lines.append((line, reason))

    def owner_problem(self, planned: PlannedUpload, records: int) -> None:
        owner = planned.owner
        if owner.problem is None:
            return
        self.problems_total += records
        key = (owner.problem, owner.owner)
        problem = self._problems.get(key)
        if problem is None:
            if len(self._problems) >= MAX_LISTED_PER_FILE:
                return
            first = planned.lines[0] if planned.lines else None
            problem = self._problems[key] = OwnerProblem(owner.problem, owner.owner, owner.detail, first)
        problem.records += records

    @property
    def owner_problems(self) -> list[OwnerProblem]:
        return list(self._problems.values())


@dataclass
class ReplaySummary:
    database: str
    dry_run: bool
    files: list[FileReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # inputs that could not be read at all
    users: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=zero_counts)
    interrupted: bool = False  # Ctrl-C or SIGTERM: the summary covers what was done before
    shard: Shard | None = None  # --shard i/n: the counts are this shard's

    def add(self, report: FileReport, planned: list[PlannedUpload], results: list[UploadResult]) -> None:
        for plan, result in zip(planned, results, strict=True):
            counts = result.receipt.counts()
            user = plan.upload.owner
            if user not in self.users and len(self.users) >= MAX_LISTED_USERS:
                user = OTHER_USERS
            _add_into(self.users.setdefault(user, zero_counts()), counts)
            _add_into(self.counts, counts)
            _add_into(report.counts, counts)
            report.owner_problem(plan, result.receipt.received)

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    @property
    def bad_lines(self) -> int:
        return sum(f.bad_lines_total for f in self.files)

    @property
    def exit_code(self) -> int:
        """0 when every record was processed; 2 when an input could not be read (or held nothing to replay);
        1 when a run stopped; 130 when it was interrupted."""
        if self.interrupted:
            return 130
        if self.problems or any(f.status in (UNREADABLE, NOTHING_TO_REPLAY) for f in self.files):
            return 2
        return 1 if any(f.status == STOPPED for f in self.files) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "dry_run": self.dry_run,
            "shard": None if self.shard is None else {"index": self.shard.index, "count": self.shard.count},
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "records": self.records,
            "counts": self.counts,
            "bad_lines": self.bad_lines,
            "files": [_file_json(f) for f in self.files],
            "users": self.users,
            "skipped": [{"location": s.location, "reason": s.reason} for s in self.skipped],
            "problems": self.problems,
            "next_steps": self.next_steps,
        }

    @property
    def unknown_users(self) -> bool:
        return any(p.reason == QuarantineReason.UNKNOWN_USER for f in self.files for p in f.owner_problems)

    @property
    def next_steps(self) -> list[str]:
        """What the operator does about records quarantined for owners that are not (yet) users."""
        if not self.unknown_users:
            return []
        return [
            "records of unknown users are quarantined, not lost; a re-run of the replay says 'already replayed'",
            "create each user as the app would: python -m service create-user --email ADDR [--id USER_ID]",
            "then bring their records in: python -m service redrive --user USER_ID (or --email ADDR, or --all)",
        ]


def _add_into(total: dict[str, int], counts: dict[str, int]) -> None:
    for outcome, n in counts.items():
        total[outcome] = total.get(outcome, 0) + n


def _file_json(report: FileReport) -> dict[str, Any]:
    source = report.source
    return {
        "location": source.location,
        "file_name": source.file_name,
        "sha256": source.sha256,
        "format": report.kind or source.format,
        "status": report.status,
        "records": report.records,
        "resumed_from": report.resumed_from,
        "counts": report.counts,
        "bad_lines": [{"line": line, "reason": reason} for line, reason in report.bad_lines],
        "bad_lines_total": report.bad_lines_total,
        "owner_problems": [
            {"reason": p.reason, "owner": p.owner, "detail": p.detail, "first_line": p.first_line,
             "records": p.records}
            for p in report.owner_problems
        ],
        "owner_problem_records": report.problems_total,
        "not_replayed": report.not_replayed,
        "error": report.error,
    }


def users_by_volume(summary: ReplaySummary) -> list[tuple[str, dict[str, int]]]:
    return sorted(summary.users.items(), key=lambda item: (-sum(item[1].values()), item[0]))

