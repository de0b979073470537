"""What a job shows before it is done: the scene's footprint, and class tiles of the chips finished so far.

The mosaicker blends chips only once every chip is in, so a running job has no ``classes.tif`` yet. A partial
tile is drawn instead from the inference workers' stored chip results (``workers.chipstore``): every finished
chip paints its cells with their argmax class (no blending: a preview only has to show where work is done;
later chips simply paint over earlier ones). Only the output cells under the tile are built, decimated so a
low-zoom tile never holds more than ``PREVIEW_CELLS``² cells, and only the chip rows crossing the tile are
read: memory is bounded by the tile, never by the scene. The little raster is written to GDAL's in-memory
filesystem and rendered by the same ``render_tile`` as the final layer, so colours and masking match.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from models.card import ModelCard
from service.tiles import check_tile, render_tile
from spikescan.errors import NotFound
from workers import chipstore, stac
from workers.chips import ChipGrid
from workers.jobs import Job, JobStore
from workers.mosaic import ChipResult
from workers.scene import open_scene

PREVIEW_CELLS = 512
NODATA = 255
_TMS = morecantile.tms.get("WebMercatorQuad")


def extent(job: Job, card: ModelCard) -> dict[str, Any]:
    """The scene's footprint as a GeoJSON Feature in lon/lat, with its ``bbox``. Opened as the workers open
    it (``workers.sources``): the scene may be a URL, an object in a bucket or a STAC Item."""
    with open_scene(job.scene, card, job.bands or None) as scene:
        geometry = stac.footprint(scene.source_bounds, scene.crs)
    lons = [c[0] for c in geometry["coordinates"][0]]
    lats = [c[1] for c in geometry["coordinates"][0]]
    return {
        "type": "Feature",
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "geometry": geometry,
        "properties": {"job": job.id, "status": job.status},
    }


def partial_tile(store: JobStore, job: Job, card: ModelCard, z: int, x: int, y: int) -> bytes:
    """A PNG tile of the class layer from the chips finished so far (transparent where none is)."""
    check_tile(z, x, y)
    if "grid" not in job.extra:
        raise NotFound(f"job {job.id} has not been chipped yet (status {job.status})")
    grid = ChipGrid.from_dict(json.loads(job.extra["grid"]))
    with open_scene(job.scene, card, job.bands or None) as scene:
        crs, transform = scene.crs, scene.transform * Affine.scale(grid.output_stride)
    window = _tile_window(grid, crs, transform, z, x, y)
    step = max(1, math.ceil(max(window.width, window.height) / PREVIEW_CELLS))
    classes = _paint(store, job, grid, window, step)
    profile = {
        "driver": "GTiff",
        "width": classes.shape[1],
        "height": classes.shape[0],
        "count": 1,
        "dtype": "uint8",
        "nodata": NODATA,
        "crs": crs,
        "transform": transform * Affine.translation(window.col_off, window.row_off) * Affine.scale(step),
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(classes, 1)
            dst.write_colormap(1, {i: tuple(c) for i, c in enumerate(card.colors)})
        return render_tile(Path(mem.name), z, x, y)


def _tile_window(grid: ChipGrid, crs: Any, transform: Affine, z: int, x: int, y: int) -> Window:
    """Output cells under tile z/x/y (rounded outwards), clipped to the output grid."""
    b = _TMS.xy_bounds(x, y, z)
    left, bottom, right, top = transform_bounds("EPSG:3857", crs, b.left, b.bottom, b.right, b.top)
    win = from_bounds(left, bottom, right, top, transform)
    c0, r0 = max(0, math.floor(win.col_off)), max(0, math.floor(win.row_off))
    c1 = min(grid.out_width, math.ceil(win.col_off + win.width))
    r1 = min(grid.out_height, math.ceil(win.row_off + win.height))
    if c1 <= c0 or r1 <= r0:
        raise NotFound(f"tile {z}/{x}/{y} is outside the job's extent")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _paint(store: JobStore, job: Job, grid: ChipGrid, window: Window, step: int) -> np.ndarray:
    """Argmax classes of the finished chips on the window's cells, every ``step``-th cell; 255 elsewhere."""
    c0, r0 = int(window.col_off), int(window.row_off)
    out = np.full((math.ceil(window.height / step), math.ceil(window.width / step)), NODATA, np.uint8)
    done = store.done_chips(job.id)
    span = grid.stride // grid.output_stride  # output cells between chip rows
    first = max(0, (r0 - grid.cells) // span)
    last = min(grid.rows - 1, (r0 + int(window.height)) // span)
    for row in range(first, last + 1):
        for result in chipstore.load_row(store.chips(job.id), row, done):
            _paint_chip(out, result, grid.output_stride, c0, r0, step)
    return out


def _paint_chip(out: np.ndarray, result: ChipResult, output_stride: int, c0: int, r0: int, step: int) -> None:
    cells = result.scores.shape[0]
    gy, gx = result.chip.y // output_stride, result.chip.x // output_stride  # chip's first output cell
    # Sampled cells are those at window offset ≡ 0 (mod step); find the chip's first such cell on each axis.
    oy, ox = (-(gy - r0)) % step, (-(gx - c0)) % step
    ys, xs = np.arange(oy, cells, step), np.arange(ox, cells, step)
    ty, tx = (gy - r0 + ys) // step, (gx - c0 + xs) // step
    keep_y = (ty >= 0) & (ty < out.shape[0])
    keep_x = (tx >= 0) & (tx < out.shape[1])
    ys, ty, xs, tx = ys[keep_y], ty[keep_y], xs[keep_x], tx[keep_x]
    if not len(ys) or not len(xs):
        return
    labels = result.scores[np.ix_(ys, xs)].argmax(axis=-1).astype(np.uint8)
    valid = result.cell_valid[np.ix_(ys, xs)]
    block = out[np.ix_(ty, tx)]
    out[np.ix_(ty, tx)] = np.where(valid, labels, block)
