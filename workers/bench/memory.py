"""Peak memory of ``spikescan predict`` on a 2k x 2k and a 16k x 16k scene: it must stay flat (within ~20 %).

Not a unit test: run it by hand, e.g.

    python -m workers.bench.memory --model trees-rgb            # JSON table on stdout
    python -m workers.bench.memory --model DIR --sizes 2048 8192

``spikescan bench pipeline`` reuses it (its scene and its peak-RSS table).

The scenes are built from REAL pixels: mirrored copies of the NEON aerial tile OSBS_029.tif (400 x 400 RGB,
0.1 m, EPSG:32617, from the deepforest package), tiled out from the original's corner with a correct
geotransform — mirroring keeps tile seams continuous, so the scene looks like one large aerial mosaic. They
are written strip by strip (this script is bounded in memory too) to a scratch directory.

Each size runs ``spikescan predict`` in a fresh process and reads that process's peak resident set size from
the kernel (``wait4`` rusage), so nothing of this script's own memory is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from spikescan import data

TILE = 400  # OSBS_029 is 400 x 400


def build_scene(path: Path, size: int) -> Path:
    """A size x size mirrored mosaic of OSBS_029, written one 400-row strip at a time."""
    if path.exists():
        return path
    source = data.ensure("deepforest") / "OSBS_029.tif"
    with rasterio.open(source) as src:
        tile = src.read()
        profile = {
            **src.profile,
            "width": size,
            "height": size,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
    variants = {
        (fy, fx): tile[:, :: (-1 if fy else 1), :: (-1 if fx else 1)] for fy in (0, 1) for fx in (0, 1)
    }
    tmp = path.with_suffix(".part.tif")
    # A small GDAL cache (in bytes): otherwise GDAL keeps up to 5 % of RAM of written tiles while building it.
    with rasterio.Env(GDAL_CACHEMAX=64 << 20), rasterio.open(tmp, "w", **profile) as dst:  # bytes
        for y0 in range(0, size, TILE):
            h = min(TILE, size - y0)
            row = np.concatenate(
                [variants[(y0 // TILE) % 2, tx % 2] for tx in range(-(-size // TILE))], axis=2
            )
            dst.write(row[:, :h, :size], window=Window(0, y0, size, h))
    tmp.rename(path)
    return path


def peak_rss_of_predict(scene: Path, model: str, out: Path) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from spikescan.cli import main; sys.exit(main())",
        "predict",
        str(scene),
        "--model",
        model,
        "--out",
        str(out),
        "--quiet",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"spikescan predict failed on {scene} (exit {proc.returncode})")
    report = json.loads((out / "report.json").read_text())
    return {
        "scene": scene.name,
        "pixels": report["scene_shape"],
        "chips": report["chips"]["total"],
        "seconds": round(time.perf_counter() - t0, 1),
        "chips_per_s": report["chips_per_s"],
        "megapixels_per_s": report["megapixels_per_s"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="trees-rgb", help="model name or package directory (RGB, any GSD)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384])
    parser.add_argument("--work", type=Path, default=Path("/tmp/spikescan-bench"), help="scratch directory")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        scene = build_scene(args.work / f"osbs_mirrored_{size}.tif", size)
        rows.append(peak_rss_of_predict(scene, args.model, args.work / f"out_{size}"))
        print(json.dumps(rows[-1]), file=sys.stderr)
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1  # type: ignore[operator]
    print(
        json.dumps(
            {"runs": rows, "peak_rss_growth": round(growth, 3), "flat_within_20pct": abs(growth) <= 0.2},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
