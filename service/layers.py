"""Map layers besides the class layer: the source scene itself (context) and a score ramp.

No web code here: each function takes paths and a card and returns PNG bytes, so the routes stay a few lines
and tests call them on files directly. Tiles are read through rio-tiler's ``Reader`` (a ``WarpedVRT`` to
Web-Mercator over the tile's window only), so memory is bounded by the tile, not by the scene.

* ``scene``: three bands of the scene as an RGB picture — the bands the card calls red, green and blue
  (name or common name), else the first three bands the job maps to the model (a single band is shown grey).
  Stretched per band between its 2nd and 98th percentile, computed once per scene from a bounded sample of
  windows (``workers.input_check.sample_windows``), never from the whole scene, and cached.
* ``scores``: the summed scores of the card's target classes (the "how likely is it a tree" surface), or
  of one class by name, or — for a card with no target classes — the winning class's score; a viridis ramp,
  transparent where no chip saw the cell (``hits`` = 0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform_bounds
from rio_tiler.colormap import cmap
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from models.card import ModelCard
from service.tiles import check_tile
from spikescan.errors import InvalidInput, NotFound
from workers.input_check import sample_windows
from workers.scene import map_bands

LAYERS = ("classes", "scene", "scores")
STRETCH_PERCENTILES = (2.0, 98.0)
# A tile that would decimate a scene without overviews more than this reads that many scene pixels per tile
# pixel (GDAL touches every block): refused, the client zooms in. Scenes with overviews read those instead.
MAX_DECIMATION = 64
_RAMP = cmap.get("viridis")


def check_layer(name: str) -> str:
    if name not in LAYERS:
        raise InvalidInput(f"unknown layer {name!r}: give layer= one of {', '.join(LAYERS)}")
    return name


# --- the scene --------------------------------------------------------------------------------------------
def rgb_bands(src: rasterio.DatasetReader, card: ModelCard, bands: str | None) -> list[int]:
    """1-based scene bands to show as red, green, blue (the same band thrice for a one-band model)."""
    mapped = map_bands(Path(src.name), src, card, bands or None)
    names = [{b.name.lower(), (b.common_name or "").lower()} for b in card.bands]
    rgb = ("red", "green", "blue")
    picked = [next((mapped[i] for i, n in enumerate(names) if c in n), None) for c in rgb]
    if all(picked):
        return [int(p) for p in picked if p]
    return mapped[:3] if len(mapped) >= 3 else [mapped[0]] * 3


Stretch = tuple[tuple[float, float], ...]


@lru_cache(maxsize=64)
def _stretch_cached(path: str, _stamp: tuple[int, int], indexes: tuple[int, ...]) -> Stretch:
    with rasterio.open(path) as src:
        parts: list[np.ndarray] = []
        for window in sample_windows(src.width, src.height):
            data = src.read(list(indexes), window=window, masked=True)
            keep = ~np.ma.getmaskarray(data).any(axis=0) & np.isfinite(data.filled(0)).all(axis=0)
            parts.append(data.data[:, keep])
    values = np.concatenate(parts, axis=1) if parts else np.empty((len(indexes), 0))
    out = []
    for band in values:
        if band.size == 0:
            out.append((0.0, 255.0))
            continue
        lo, hi = (float(v) for v in np.percentile(band, STRETCH_PERCENTILES))
        out.append((lo, hi if hi > lo else lo + 1.0))
    return tuple(out)


def stretch(path: str | Path, indexes: Sequence[int]) -> Stretch:
    """Per band, the (2nd, 98th) percentile of a bounded sample of valid pixels; once per scene file."""
    if str(path).startswith("/vsi"):  # a job's scene in a bucket: its key is never rewritten
        return _stretch_cached(str(path), (0, 0), tuple(indexes))
    st = os.stat(path)  # a replaced file (same name) gets its own stretch
    return _stretch_cached(str(path), (st.st_mtime_ns, st.st_size), tuple(indexes))


def scene_tile(scene: str | Path, card: ModelCard, bands: str | None, z: int, x: int, y: int) -> bytes:
    check_tile(z, x, y)
    with Reader(str(scene)) as src:
        rgb = rgb_bands(src.dataset, card, bands)
        img = _tile(src, z, x, y, rgb, "bilinear")
    return img.rescale(in_range=stretch(scene, rgb)).render(img_format="PNG")


# --- scores -----------------------------------------------------------------------------------------------
def score_bands(src: rasterio.DatasetReader, card: ModelCard, klass: str | None) -> tuple[list[int], int]:
    """1-based score bands to add up for the layer, and the ``hits`` band; found by band description,
    else by position (classes first, then hits)."""
    where = {d: i for i, d in enumerate(src.descriptions, start=1) if d}
    by_class = {c: where.get(f"score:{c}", where.get(c, i + 1)) for i, c in enumerate(card.classes)}
    if klass is not None:
        if klass not in by_class:
            raise InvalidInput(f"unknown class {klass!r}: give class= one of {', '.join(card.classes)}")
        chosen = [by_class[klass]]
    else:
        chosen = [by_class[c] for c in card.target_classes if c in by_class]
    return chosen, where.get("hits", len(card.classes) + 1)


def scores_tile(scores: Path, card: ModelCard, klass: str | None, z: int, x: int, y: int) -> bytes:
    check_tile(z, x, y)
    with Reader(str(scores)) as src:
        chosen, hits = score_bands(src.dataset, card, klass)
        every = chosen or [int(i) for i in range(1, len(card.classes) + 1)]
        img = _tile(src, z, x, y, [*every, hits], "nearest")
        scale = 1.0 if np.issubdtype(img.array.dtype, np.floating) else 1 / 255
        values = img.array.data[:-1].astype(np.float32) * scale
        # The chosen classes' summed score; with none chosen, the winning class's (the model's certainty).
        value = values.sum(axis=0) if chosen else values.max(axis=0)
        # Cells no chip saw are clear; the file's own mask is not asked (its alpha, if any, is not "no data").
        seen = img.array.data[-1] > 0
    level = np.clip(np.round(value * 255), 0, 255).astype(np.uint8)
    out = ImageData(np.ma.MaskedArray(level[None], mask=~seen[None]), bounds=img.bounds, crs=img.crs)
    return out.render(img_format="PNG", colormap=_RAMP)


def _tile(src: Reader, z: int, x: int, y: int, indexes: list[int], resampling: str) -> ImageData:
    _refuse_heavy(src, z, x, y)
    try:
        return src.tile(x, y, z, indexes=indexes, resampling_method=resampling, reproject_method=resampling)
    except TileOutsideBounds:
        raise NotFound(f"tile {z}/{x}/{y} is outside the job's extent") from None


def _refuse_heavy(src: Reader, z: int, x: int, y: int) -> None:
    ds = src.dataset
    if ds.overviews(1):
        return
    tile = src.tms.xy_bounds(x, y, z)
    left, _, right, _ = transform_bounds(ds.crs, "EPSG:3857", *ds.bounds)
    per_tile_pixel = (tile.right - tile.left) / 256 / ((right - left) / ds.width)  # scene pixels
    if per_tile_pixel > MAX_DECIMATION:
        raise NotFound(
            f"tile {z}/{x}/{y} would read {per_tile_pixel:.0f} scene pixels per tile pixel and the scene has "
            "no overviews: zoom in"
        )
