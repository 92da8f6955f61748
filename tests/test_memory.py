"""The replay's memory stays flat because glibc is limited to two malloc arenas."""

from __future__ import annotations

import platform

import pytest

from service.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_arena_limit() -> None:
    assert limit_malloc_arenas() is True
