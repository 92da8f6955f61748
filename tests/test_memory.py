"""Process-wide memory settings: two malloc arenas (flat replay memory), and the collector's thresholds."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from service.memory import GC_THRESHOLDS, limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_arena_limit() -> None:
    assert limit_malloc_arenas() is True


_SHOW_THRESHOLDS_AFTER_MAIN = """
import contextlib, gc, io
from service.cli import main
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
    main(["--help"])
print(gc.get_threshold())
"""


def test_every_command_runs_with_the_service_collector_thresholds() -> None:
    """`python -m service ...` sets the collector's thresholds before any work (a fresh interpreter shows it)."""
    shown = subprocess.run(
        [sys.executable, "-c", _SHOW_THRESHOLDS_AFTER_MAIN], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == str(GC_THRESHOLDS)
