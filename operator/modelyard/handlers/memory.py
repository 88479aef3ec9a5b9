"""Memory a burst used, handed back to the system once the work is done.

A burst of thousands of Models briefly needs a lot more memory than the operator holds once
they are reconciled, and the C allocator keeps freed memory for the process, so the resident
size would stay at the burst's peak. glibc's `malloc_trim` returns it; elsewhere (musl, macOS)
only the garbage collector runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

from modelyard.reconcile.runner import Runner


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


async def release_memory(runner: Runner, every: float = 20.0) -> None:
    """Every `every` seconds, when no pass is running and some ran since the last time: collect
    garbage and trim the allocator. Until cancelled."""
    trim = _malloc_trim()
    seen = runner.passes
    while True:
        await asyncio.sleep(every)
        if runner.passes != seen and not runner.busy():
            seen = runner.passes
            gc.collect()
            if trim is not None:
                trim(0)


__all__ = ["release_memory"]
