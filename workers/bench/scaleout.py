"""Scale-out on hosts that share only Redis and a bucket: chips/s with 1, 2 and 3 inference workers, and
what each chip costs Redis and the bucket — the figures the sizing in docs/operations.md is built from.

The stack is ``workers.bench.service_e2e.ServiceStack`` (private redis-server, real API and worker processes)
with ``SPIKESCAN_STORAGE_URL`` on moto's S3 server (``workers.bench.s3server``, a process of its own), so
uploads, chip results and outputs cross processes only through the bucket. The scene is the mirrored Landsat
mosaic of ``workers.bench.service``. Per worker count: one warm job, then the best of ``repeats`` timed jobs
(submit→done as the job records it). Measured per job: Redis CPU (``INFO cpu``, user + sys) and the peak of
Redis's ``used_memory`` above its idle level, both per chip; the bucket's bytes per chip are the chip-row
objects the inference workers PUT (``workers.chipstore``'s format, measured by storing real chip results of
the same scene), and the outputs' bytes per km² are listed from the bucket after the job.

On a machine with fewer cores than processes the workers share cores: the chips/s column then shows where
this machine saturates, not how a cluster scales. The table says how many cores there were.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import redis

from models import package as model_package
from workers import chipstore, input_check, pipeline
from workers.backends import get_backend
from workers.bench.child import run_child
from workers.bench.s3server import S3Server
from workers.bench.service import build_scene
from workers.bench.service_e2e import ServiceStack, one_job
from workers.chips import ChipGrid
from workers.mosaic import ChipResult

MODEL = "landcover-landsat"
BUCKET = "spikescan-bench"


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _timed_job(stack: ServiceStack, scene: Path, client: redis.Redis) -> dict[str, float]:
    """One upload job: its submit→done seconds, Redis CPU seconds and Redis peak memory above idle."""
    idle = int(client.info("memory")["used_memory"])
    cpu0 = _redis_cpu_s(client)
    peak = idle

    def sample() -> None:
        nonlocal peak
        peak = max(peak, int(client.info("memory")["used_memory"]))

    st = one_job(stack.url, scene, MODEL, on_poll=sample)
    if st["status"] != "done":
        raise RuntimeError(f"bench job {st['id']} {st['status']}: {st.get('error')}")
    return {
        "seconds": float(st["finished"] - st["created"]),
        "chips": float(st["progress"]["chips_done"]),
        "redis_cpu_s": _redis_cpu_s(client) - cpu0,
        "redis_peak_bytes": float(peak - idle),
        "id": st["id"],
    }


def chip_row_objects(scene: Path, rows: int = 6, batch_size: int = 64) -> tuple[list[bytes], int]:
    """The chip-row objects inference workers PUT to a bucket, and how many chips they hold: real chips of
    ``rows`` evenly spread chip rows, inferred and encoded exactly as a worker stores a batch of
    ``batch_size`` in a bucket (``workers.chipstore``: one object per chip row of the batch, scores
    deflated)."""
    pkg = model_package.load(MODEL)
    objects: list[bytes] = []
    results: list[ChipResult] = []
    with (
        input_check.open_checked(scene, pkg.card) as src,
        get_backend("emulator", pkg) as engine,
    ):
        grid = ChipGrid.for_model(src.width, src.height, pkg.card.patch_size, pkg.card.output_stride, None)
        for row in np.linspace(0, grid.rows - 1, rows).round().astype(int):
            batch = src.read_chip_row(grid, int(row))
            scores = engine.infer(batch.pixels, batch.valid)
            results += pipeline.chip_results(batch, scores, grid.output_stride)
    for start in range(0, len(results), batch_size):
        by_row: dict[int, list[ChipResult]] = {}
        for r in results[start : start + batch_size]:
            by_row.setdefault(r.chip.row, []).append(r)
        objects += [chipstore.row_object(group, deflate=True)[1] for group in by_row.values()]
    return objects, len(results)


def chip_object_bytes(scene: Path, rows: int = 6) -> float:
    """Bytes per chip of the chip-row objects inference workers PUT."""
    objects, chips = chip_row_objects(scene, rows)
    return sum(len(o) for o in objects) / chips


def _bucket_bytes(s3: S3Server, prefix: str) -> int:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sum(int(o["Size"]) for page in pages for o in page.get("Contents", []))


def _km2(scene: Path) -> float:
    with rasterio.open(scene) as src:
        return abs(src.res[0] * src.res[1]) * src.width * src.height / 1e6


def measure(args: argparse.Namespace) -> dict[str, Any]:
    k, repeats, counts = (2, 1, (1, 2)) if args.quick else (4, 2, (1, 2, 3))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = build_scene(work / f"landsat_mirrored_{k}x{k}.tif", k)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spikescan-bench-") as tmp:
        root = Path(tmp)
        s3 = S3Server(root)
        try:
            s3.client().create_bucket(Bucket=BUCKET)
            env = {**s3.env, "SPIKESCAN_STORAGE_URL": f"s3://{BUCKET}/bench",
                   "SPIKESCAN_MAX_UPLOAD_MB": "512"}
            for n in counts:
                with ServiceStack(root / f"n{n}", n, env) as stack:
                    client = redis.Redis.from_url(stack.redis.url)
                    _timed_job(stack, scene, client)  # warm: models loaded, kernels compiled, page cache
                    runs = [_timed_job(stack, scene, client) for _ in range(repeats)]
                    best = min(runs, key=lambda r: r["seconds"])
                    out_bytes = _bucket_bytes(s3, f"bench/jobs/{best['id']}/")
                    client.close()
                rows.append({
                    "inference_workers": n,
                    "chips": int(best["chips"]),
                    "submit_to_done_s": round(best["seconds"], 2),
                    "chips_per_s": round(best["chips"] / best["seconds"], 1),
                    "redis_cpu_ms_per_chip": round(1e3 * best["redis_cpu_s"] / best["chips"], 4),
                    "redis_peak_bytes_per_chip": round(best["redis_peak_bytes"] / best["chips"], 1),
                    "bucket_job_bytes_after": out_bytes,
                })
        finally:
            s3.stop()
    km2 = _km2(scene)
    return {
        "model": MODEL,
        "scene": f"landsat_multiband.tif mirrored {k}x{k}",
        "scene_km2": round(km2, 1),
        "cores": os.cpu_count(),
        "repeats": repeats,
        "runs": rows,
        "bucket_chip_bytes_per_chip": round(chip_object_bytes(scene), 1),
        "bucket_output_bytes_per_km2": round(rows[0]["bucket_job_bytes_after"] / km2, 1),
    }


if __name__ == "__main__":
    run_child(measure)
