"""Fixtures of the reliability suites: the real service in a subprocess, with Ada, Ben and an admin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADA, ADMIN, BEN, add_users
from tests.reliability.liveserver import ServerProcess, live_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A healthy service on a fresh database holding Ada, Ben and an admin; always stopped afterwards."""
    with live_server(tmp_path / "app.db") as running:
        add_users(running.db_path, ADA, BEN, ADMIN)
        yield running
