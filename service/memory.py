"""Keep glibc's malloc from growing one arena per thread.

The service allocates record batches on several threads (aiosqlite's connection threads, the threads
that plan large batches). glibc gives each thread its own arena and rarely returns their memory, so a
long replay's resident size settled at ~520 MB instead of ~150 MB. Two arenas are plenty: the heavy
work is in SQLite and in worker processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Best effort: True when glibc took the setting (False elsewhere, e.g. musl or macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
