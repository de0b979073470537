"""What every sub-benchmark child shares: its arguments, the thread pinning it inherits, its JSON answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """The environment a child needs: BLAS pools size themselves at import, so this must precede numpy."""
    return {**os.environ, **{v: str(threads) for v in THREAD_VARS}, "TF_CPP_MIN_LOG_LEVEL": "3"}


def best_rate(fn: Callable[[], Any], items: int, repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` calls: on a shared machine the minimum is the least
    disturbed, and every side of a comparison is measured the same way."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def run_child(measure: Callable[[argparse.Namespace], dict[str, Any]]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/spikescan-bench")
    json.dump(measure(parser.parse_args()), sys.stdout)
    sys.stdout.write("\n")
