"""Mosaic strips to ``scores.tif`` and ``classes.tif``: tiled temporary GeoTIFFs, then GDAL's COG driver.

``LayerWriter`` is the mosaicker's sink. Strips go straight to disk; ``finish()`` converts both files to
Cloud-Optimized GeoTIFFs with internal overviews (GDAL reads the temporary files block by block, so this step
is bounded in memory too) and removes the temporaries.

- ``classes.tif``: uint8 argmax class per output cell, 255 = no data (no valid chip saw the cell); a colour
  table from the card's colours; class names in the metadata (``CLASSES`` JSON list, ``CLASS_<i>``). Beside
  it ``classes.tif.aux.xml`` (``workers.pam``): the colours with their alpha, category names and a RAT.
- ``scores.tif``: one uint8 band per class (score × 255; the band scale 1/255 gives back 0..1), then ``hits``
  (chips that contributed, capped at 255) and ``disagreement`` (the mosaic's seam score × 510, i.e. 255 at
  the largest disagreement two chips can have). Band descriptions name each band. Every band is data:
  grey/undefined colour interpretation (GDAL's default for 3-4 uint8 bands is RGB(A), which made readers
  take ``disagreement`` for transparency).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from spikescan.errors import OutputError
from workers.mosaic import Strip
from workers.pam import write_class_sidecar

NODATA_CLASS = 255
TILE = 256
_LOW_SPACE_BYTES = 1 << 20  # less than one strip of a large output


class LayerWriter:
    def __init__(
        self,
        out_dir: Path,
        width: int,
        height: int,
        transform: Affine,
        crs: CRS,
        classes: list[str],
        colors: list[list[int]],
    ) -> None:
        self.out_dir = out_dir
        self.classes = classes
        self.colors = colors
        self._size = (width, height)
        base = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "transform": transform,
            "crs": crs,
            "dtype": "uint8",
            "tiled": True,
            "blockxsize": TILE,
            "blockysize": TILE,
        }
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._scores = rasterio.open(
                out_dir / ".scores.tmp.tif", "w", count=len(classes) + 2, photometric="MINISBLACK", **base
            )
            self._classes = rasterio.open(
                out_dir / ".classes.tmp.tif", "w", count=1, nodata=NODATA_CLASS, **base
            )
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise write_failed(out_dir, exc) from None
        self._describe(classes, colors)

    def _describe(self, classes: list[str], colors: list[list[int]]) -> None:
        names = [f"score:{c}" for c in classes] + ["hits", "disagreement"]
        for i, name in enumerate(names, start=1):
            self._scores.set_band_description(i, name)
        self._scores.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (len(names) - 1)
        self._scores.scales = [1 / 255] * len(classes) + [1.0, 1 / 510]
        self._scores.update_tags(
            CLASSES=json.dumps(classes),
            SCORE_SCALE="value / 255",
            DISAGREEMENT="weighted variance of overlapping chips' scores, x 510",
        )
        self._classes.set_band_description(1, "class")
        self._classes.update_tags(
            CLASSES=json.dumps(classes), **{f"CLASS_{i}": c for i, c in enumerate(classes)}
        )
        table = {i: tuple(int(v) for v in rgba) for i, rgba in enumerate(colors)}
        table[NODATA_CLASS] = (0, 0, 0, 0)
        self._classes.write_colormap(1, table)

    def write_strip(self, strip: Strip) -> None:
        window = Window(0, strip.y0, self._size[0], strip.height)
        seen = strip.hits > 0
        scores = np.rint(np.clip(strip.scores, 0.0, 1.0) * 255).astype(np.uint8)
        classes = np.where(seen, strip.scores.argmax(axis=-1), NODATA_CLASS).astype(np.uint8)
        extra = np.stack(
            [np.minimum(strip.hits, 255), np.rint(np.clip(strip.disagreement * 510, 0, 255))]
        ).astype(np.uint8)
        try:
            self._scores.write(np.concatenate([np.moveaxis(scores, -1, 0), extra]), window=window)
            self._classes.write(classes[None], window=window)
        except rasterio.errors.RasterioError as exc:
            raise write_failed(self.out_dir, exc) from None

    def finish(self) -> dict[str, Path]:
        """Close the temporaries, translate them to COGs, and return {"scores": path, "classes": path}.

        The two translations run side by side on two threads: GDAL releases the GIL while it reads, builds
        overviews and compresses, so on a machine with two cores they take the time of the larger one."""
        layers = (("scores", self._scores, "AVERAGE"), ("classes", self._classes, "MODE"))
        for _name, ds, _resampling in layers:
            ds.close()
        paths = {name: self.out_dir / f"{name}.tif" for name, _ds, _resampling in layers}
        with ThreadPoolExecutor(len(layers), thread_name_prefix="cog") as pool:
            done = [pool.submit(to_cog, Path(ds.name), paths[name], how) for name, ds, how in layers]
        for future in done:
            future.result()  # the first failure, once both have stopped
        for _name, ds, _resampling in layers:
            Path(ds.name).unlink()
        try:
            write_class_sidecar(paths["classes"], self.classes, self.colors, NODATA_CLASS)
        except OSError as exc:
            raise write_failed(self.out_dir, exc) from None
        return paths

    def abort(self) -> None:
        for ds in (self._scores, self._classes):
            if not ds.closed:
                ds.close()
            Path(ds.name).unlink(missing_ok=True)


def to_cog(src: Path, dst: Path, resampling: str) -> None:
    """GDAL's COG driver: deflate, 256-pixel tiles, overviews down to one tile (at least one level)."""
    try:
        with rasterio.open(src) as ds:
            levels = 1
            while max(ds.width, ds.height) / 2 ** (levels + 1) >= TILE / 2:
                levels += 1
    except rasterio.errors.RasterioError as exc:
        # GDAL flushes cached blocks when a dataset is closed and reports a failed flush only in its log:
        # an unreadable temporary is how a write that failed at close shows.
        raise write_failed(src.parent, exc) from None
    try:
        rasterio.shutil.copy(
            src,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=TILE,
            OVERVIEWS="IGNORE_EXISTING",
            OVERVIEW_COUNT=levels,
            RESAMPLING=resampling,
            BIGTIFF="IF_SAFER",
        )
    except rasterio.errors.RasterioError as exc:
        raise write_failed(dst.parent, exc) from None


def write_failed(directory: Path, exc: Exception) -> Exception:
    """What to raise for a GDAL write that failed. GDAL's errors do not carry errno; a full volume is told
    apart by its free space, and becomes the ENOSPC ``spikescan.errors.writing`` reports as such."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if shutil.disk_usage(existing).free < _LOW_SPACE_BYTES:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return OutputError(f"{directory}: cannot write outputs ({exc})")


def is_valid_cog(path: Path) -> bool:
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    return bool(valid) and not errors
