"""Partial results: class tiles and the footprint of a job before it is done (``service.preview``).

The stack runs chippers and inference workers but no mosaicker at first, so the job waits in ``running``
with every chip finished: its tiles must come from the stored chip results, and agree with the final
layer once the mosaicker has blended them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import morecantile
import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from service.preview import NODATA, _paint_chip
from workers.chips import ChipGrid
from workers.mosaic import ChipResult

if TYPE_CHECKING:
    from tests.service.conftest import Stack


def _rgba(png: bytes) -> np.ndarray:
    with rasterio.MemoryFile(png) as mem, mem.open() as src:
        assert src.driver == "PNG" and (src.width, src.height) == (256, 256)
        return src.read()


def _wait_all_chips(http: httpx.Client, job: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get(f"/v1/jobs/{job}").json()
        p = status["progress"]
        if p["chipping_complete"] and p["chips_done"] + p["chips_failed"] == p["chips_total"]:
            return status  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"chips of job {job} did not finish: {status}")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a PNG tile has no CRS
def test_tiles_before_done_come_from_finished_chips(
    new_stack: Callable[..., Stack], landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    s = new_stack(SPIKESCAN_MAX_UPLOAD_MB="64")
    shutil.copy(landsat_tif, s.inputs / "landsat.tif")
    with s.client() as http:
        r = http.post("/v1/jobs", json={"uri": str(s.inputs / "landsat.tif"), "model": landsat_model.name})
        job = r.json()["id"]
        extent = http.get(f"/v1/jobs/{job}/extent")
        assert extent.status_code == 200 and extent.headers["content-type"] == "application/geo+json"
        west, south, east, north = extent.json()["bbox"]
        tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 13)
        url = f"/v1/jobs/{job}/tiles/{tile.z}/{tile.x}/{tile.y}.png"
        queued = http.get(url)  # nothing chipped, no worker running: nothing to draw yet
        assert queued.status_code == 404 and "no results yet" in queued.json()["error"]["message"]

        s.worker("chipper", "chip")
        s.worker("infer", "infer")
        assert _wait_all_chips(http, job)["status"] == "running"
        partial = http.get(url)
        assert partial.status_code == 200 and partial.headers["cache-control"] == "no-store"
        assert http.get(f"/v1/jobs/{job}/tiles/13/0/0.png").status_code == 404  # far from the scene

        s.worker("mosaicker", "mosaic")
        assert s.wait_done(http, job)["status"] == "done"
        final = http.get(url)
    assert final.status_code == 200 and final.headers["cache-control"].startswith("public")
    p, f = _rgba(partial.content), _rgba(final.content)
    colours = {tuple(c) for c in landsat_model.card.colors}
    opaque = p[3] > 0
    assert opaque.mean() > 0.2 and {tuple(c) for c in p[:, opaque].T} <= colours
    # Same cells covered; classes mostly equal (the preview paints unblended argmaxes, the mosaic blends).
    same_cover = (opaque == (f[3] > 0)).mean()
    both = opaque & (f[3] > 0)
    same_class = (p[:3, both] == f[:3, both]).all(axis=0).mean()
    assert same_cover > 0.98 and same_class > 0.6, (same_cover, same_class)


def _random_results(grid: ChipGrid, n_classes: int, seed: int = 0) -> list[ChipResult]:
    rng = np.random.default_rng(seed)
    out = []
    for row in range(grid.rows):
        for chip in grid.row(row):
            scores = rng.random((grid.cells, grid.cells, n_classes), dtype=np.float32)
            valid = rng.random((grid.cells, grid.cells)) > 0.1
            out.append(ChipResult(chip, scores, valid, 0))
    return out


@pytest.mark.parametrize("step", [2, 3, 7])
def test_decimated_preview_samples_the_full_one(step: int) -> None:
    """A low-zoom preview (every ``step``-th cell) shows exactly the cells the full-resolution one has."""
    grid = ChipGrid.for_model(70, 50, patch=16, output_stride=2, stride=None)
    results = _random_results(grid, 4)
    c0, r0, h, w = 3, 5, 19, 29  # a window not aligned with the chips
    full = np.full((h, w), NODATA, np.uint8)
    coarse = np.full((-(-h // step), -(-w // step)), NODATA, np.uint8)
    for res in results:
        _paint_chip(full, res, grid.output_stride, c0, r0, 1)
        _paint_chip(coarse, res, grid.output_stride, c0, r0, step)
    assert (full != NODATA).any()
    assert np.array_equal(full, _naive_paint(results, grid.output_stride, c0, r0, h, w))
    assert np.array_equal(coarse, full[::step, ::step])


def _naive_paint(results: list[ChipResult], os_: int, c0: int, r0: int, h: int, w: int) -> np.ndarray:
    out = np.full((h, w), NODATA, np.uint8)
    for res in results:
        for i, j in zip(*np.nonzero(res.cell_valid), strict=True):
            y, x = res.chip.y // os_ + i - r0, res.chip.x // os_ + j - c0
            if 0 <= y < h and 0 <= x < w:
                out[y, x] = res.scores[i, j].argmax()
    return out
