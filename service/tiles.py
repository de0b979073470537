"""Web-Mercator PNG tiles of a job's ``classes.tif`` (rio-tiler), coloured by the file's own colour table.

Nearest-neighbour throughout: a class index must never be averaged into another class. Cells with no data
(255) come out transparent through the dataset mask.
"""

from __future__ import annotations

from pathlib import Path

from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from spikescan.errors import InvalidInput, NotFound

MAX_ZOOM = 30


def check_tile(z: int, x: int, y: int) -> None:
    if not 0 <= z <= MAX_ZOOM or not (0 <= x < 2**z and 0 <= y < 2**z):
        raise InvalidInput(f"tile {z}/{x}/{y} does not exist in the Web-Mercator grid")


def render_tile(classes_tif: Path, z: int, x: int, y: int) -> bytes:
    check_tile(z, x, y)
    with Reader(str(classes_tif)) as src:
        try:
            img = src.tile(x, y, z, indexes=1, resampling_method="nearest", reproject_method="nearest")
        except TileOutsideBounds:
            raise NotFound(f"tile {z}/{x}/{y} is outside the job's extent") from None
        return img.render(img_format="PNG", colormap=src.colormap or None)
