"""Stop glibc's ``malloc`` from returning large buffers to the OS after every training step.

By default glibc serves allocations above 128 KiB-32 MiB (its threshold adapts) with fresh
``mmap`` calls and trims the heap when they are freed, so every forward/backward pass of a CNN
on the CPU maps, page-faults and unmaps the same activation buffers again.  On the project's
2-core machines that was a third of fine-tuning's CPU time (system time, millions of minor page
faults).  Raising the mmap and trim thresholds keeps freed buffers in the heap for reuse:
``benchmarks/finetune.py`` measures the effect.  Users who set ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` themselves keep their settings; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are set."""
    global _done
    if _done:
        return True
    user_set = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
    if user_set or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, 2 * _THRESHOLD) == 1 and ok
    _done = ok
    return ok
