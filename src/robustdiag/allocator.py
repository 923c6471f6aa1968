"""Keep freed memory for reuse: glibc's allocator settings for a process that corrupts, attacks and
measures in large batches.

glibc gives every allocation above its mmap threshold (at most 32 MiB by default) fresh pages from the
kernel and returns them on free, so a 224 px batch of 64 images (38 MiB per float32 tensor) costs a page
fault per 4 KiB every time an operation makes a new tensor; on a virtual machine that can cost more than
the arithmetic (a batched JPEG round trip: 72 ms with fresh pages, 22 ms with reused ones). Raising the
mmap and trim thresholds keeps such buffers in the heap for the next batch, as jemalloc or tcmalloc
(PyTorch's performance guide) would. The resident set stays near the run's peak instead of shrinking
between batches. Other C libraries and platforms are left as they are.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB free at its top stays mapped


def reuse_freed_memory(enabled: object = True) -> bool:
    """Make glibc keep large freed blocks for reuse when ``enabled``; returns whether that is in effect.

    ``enabled`` must be a boolean (the ``reuse_freed_memory`` config key). ``False`` leaves the allocator
    as it is (a setting made earlier in the process stays)."""
    if not isinstance(enabled, bool):
        raise ValueError(f"reuse_freed_memory={enabled!r} must be true or false")
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    if not done:
        log.debug("the C library refused the mmap/trim thresholds; freed memory is not kept")
    return done
