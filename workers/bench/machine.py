"""The machine line every table carries, and its measured float32 matmul peak (the arithmetic limit)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from workers.bench.child import best_rate


def describe() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": round(load, 2) if load is not None else None,
    }


def matmul_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of numpy's float32 GEMM (BLAS) at the threads this process was given."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b  # warm up the BLAS pool
    return best_rate(lambda: a @ b, 2 * size**3, repeats) / 1e9
