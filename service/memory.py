"""Keep glibc's malloc from growing one arena per thread.

The service allocates record batches on several threads (its SQLite connection threads, the threads
that plan large batches). glibc gives each thread its own arena and rarely returns their memory, so a
long replay's resident size settled at ~520 MB instead of ~150 MB. Two arenas are plenty: the heavy
work is in SQLite and in worker processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

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


# The cyclic garbage collector's thresholds: young collections every 50,000 allocations instead of 700,
# and older generations rarely. An upload of 1,000 records allocates hundreds of thousands of objects,
# nearly all freed by reference counting; with the default thresholds the collector ran every few
# milliseconds, each time holding the GIL, and its full passes over the heap stalled every other
# request (support reads waited 100 ms and more behind them).
GC_THRESHOLDS = (50_000, 50, 1_000)


def tune_garbage_collector() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup_objects() -> None:
    """Objects alive once the app is built (modules, routes, schemas) live as long as the process: move
    them out of the collector's view so that no collection walks them again."""
    gc.collect()
    gc.freeze()
