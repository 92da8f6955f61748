"""Chromium (the Debian package) driven by Playwright for Python, for the support page's browser tests.

Never `playwright install`: the browser is the system's `chromium`. When it is missing the tests are
skipped with a loud reason (scripts/test installs it where it can; on CI it does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# Where the screenshots go: a scratch folder unless asked for the README's (RESYNC_SCREENSHOTS=docs/screenshots).
SCREENSHOTS_ENV = "RESYNC_SCREENSHOTS"


def chromium_path() -> str:
    """The system Chromium, or a skip that says loudly why the browser tests did not run."""
    path = os.environ.get("RESYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = ("BROWSER TESTS NOT RUN: no `chromium` on PATH (Debian: apt-get install -y chromium; "
                  "scripts/test installs it when run as root)")
        pytest.skip(reason)
    return path


def screenshot_dir(fallback: Path) -> Path:
    target = os.environ.get(SCREENSHOTS_ENV)
    path = Path(target) if target else fallback
    path.mkdir(parents=True, exist_ok=True)
    return path
