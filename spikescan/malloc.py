"""A fixed glibc mmap threshold for the processes that scan scenes (``predict``, ``worker``, ``serve``).

glibc raises its mmap threshold each time a large block is freed, up to 32 MB; after that, buffers of a few
MB (chip batches, strips, GDAL and pyogrio/Arrow buffers) come from the heap instead of their own mappings,
and a heap fragmented by them is not given back. Measured: the mosaicker's peak memory grew 43 MB over 21
jobs with the dynamic threshold, and stayed within the load test's 32 MB slack with a fixed 1 MB threshold
(tests/service/test_load.py). Blocks of 1 MB and more are then mapped and returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin the threshold (disables glibc's dynamic adjustment); False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt, nothing to pin
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
