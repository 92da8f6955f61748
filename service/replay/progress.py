"""Progress while replaying: a rich progress bar on a terminal, else a line on stderr every few seconds.

A phase is one file being hashed or replayed. Its `total` is in whatever unit the source can measure
ahead (bytes of an NDJSON file, records of an export or a dump); records per second are counted apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn


class ProgressReporter(Protocol):
    def start(self, label: str, total: int | None) -> None: ...

    def update(self, done: int, records: int | None = None) -> None: ...

    def finish(self) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def progress_for(stream: TextIO) -> ProgressReporter:
    return BarProgress(Console(file=stream)) if stream.isatty() else LineProgress(stream)


class BarProgress:
    """One bar, reset for each phase (messages print above it), gone when the summary is printed."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[records]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID = self._bar.add_task("", total=None, records="", rate="", visible=False)
        self._started = 0.0
        self._bar.start()

    def start(self, label: str, total: int | None) -> None:
        self._started = time.monotonic()
        self._bar.reset(self._task, total=total, description=label, records="", rate="", visible=True)

    def update(self, done: int, records: int | None = None) -> None:
        if records is None:
            self._bar.update(self._task, completed=done)
            return
        rate = records / max(time.monotonic() - self._started, 1e-6)
        self._bar.update(self._task, completed=done, records=f"{records:,} records", rate=f"{rate:,.0f} records/s")

    def finish(self) -> None:
        self._bar.update(self._task, visible=False)

    def message(self, text: str) -> None:
        self._bar.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._bar.stop()


class LineProgress:
    """For logs and pipes: one line per phase every `interval` seconds, and one when it ends."""

    def __init__(
        self, stream: TextIO, *, interval: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._label: str | None = None
        self._total: int | None = None
        self._started = self._last = 0.0
        self._done = 0
        self._records: int | None = None
        self._written = False  # a line was printed for this phase: end it with one too

    def start(self, label: str, total: int | None) -> None:
        self.finish()
        self._label, self._total = label, total
        self._started = self._last = self._clock()
        self._done, self._records, self._written = 0, None, False

    def update(self, done: int, records: int | None = None) -> None:
        self._done, self._records = done, records
        now = self._clock()
        if self._label is not None and now - self._last >= self._interval:
            self._last = now
            self._write(now)

    def finish(self) -> None:
        if self._label is not None and self._records is not None and self._written:
            self._write(self._clock(), finished=True)
        self._label = None

    def message(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        self.finish()

    def _write(self, now: float, *, finished: bool = False) -> None:
        self._written = True
        elapsed = max(now - self._started, 1e-6)
        parts = [f"replay: {self._label}:"]
        if self._records is not None:
            parts.append(f"{self._records:,} records, {self._records / elapsed:,.0f} records/s,")
        else:
            parts.append(f"{self._done / 1e6:,.1f} MB read,")
        if finished:
            parts.append(f"done in {timedelta(seconds=round(elapsed))}")
        elif self._total:
            fraction = min(self._done / self._total, 1.0)
            parts.append(f"{fraction:.0%}")
            if fraction > 0:
                parts.append(f"about {timedelta(seconds=round(elapsed * (1 - fraction) / fraction))} left")
        print(" ".join(parts), file=self._stream, flush=True)

