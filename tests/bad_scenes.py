"""Makers of the bad-input corpus, each a real file built from the real OSBS scene's pixels.

Shared by the HTTP tests (tests/service) and the in-process and CLI tests (tests/workers), so both edges are
checked against the very same bytes.
"""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds

# Source-pixel rows and columns of the NaN block in the NaN scenes (OSBS is 400 x 400 at 0.1 m).
NAN_BLOCK = (slice(100, 200), slice(100, 200))
# TIFF tags patched in ``claims_huge``, and the LONG field type they are rewritten as.
_SIZE_TAGS = frozenset({256, 257, 278})  # ImageWidth, ImageLength, RowsPerStrip
_LONG = 4


def _osbs(osbs: Path) -> tuple[np.ndarray, dict[str, object]]:
    with rasterio.open(osbs) as src:
        return src.read(), dict(src.profile)


def claims_huge(osbs: Path, dst: Path, side: int = 10**6) -> Path:
    """A real 64 x 64 GeoTIFF (uncompressed, one strip) whose header then claims ``side`` x ``side``."""
    pixels, profile = _osbs(osbs)
    small = profile | {"width": 64, "height": 64, "compress": None, "tiled": False, "blockysize": 64}
    small.pop("blockxsize", None)
    with rasterio.open(dst, "w", **small) as out:
        out.write(pixels[:, :64, :64])
    raw = bytearray(dst.read_bytes())
    if raw[:4] != b"II*\x00":
        raise ValueError(f"{dst}: expected a little-endian classic TIFF")
    (ifd,) = struct.unpack_from("<I", raw, 4)
    (entries,) = struct.unpack_from("<H", raw, ifd)
    patched = set()
    for i in range(entries):
        at = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", raw, at)[0]
        if tag in _SIZE_TAGS:
            # One value, stored in the entry itself: as LONG, whatever type (SHORT) GDAL chose for 64.
            struct.pack_into("<HHII", raw, at, tag, _LONG, 1, side)
            patched.add(tag)
    if patched != _SIZE_TAGS:
        raise ValueError(f"{dst}: size tags missing from the first IFD: {sorted(_SIZE_TAGS - patched)}")
    dst.write_bytes(bytes(raw))
    return dst


def jpeg_named_tif(osbs: Path, dst: Path) -> Path:
    """A real JPEG photo of the OSBS pixels, saved under a .tif name."""
    pixels, _ = _osbs(osbs)
    Image.fromarray(np.moveaxis(pixels, 0, -1)).save(dst, format="JPEG", quality=90)
    return dst


def retyped(osbs: Path, dst: Path, dtype: str) -> Path:
    """The OSBS scene with its pixels cast to ``dtype`` (georeferencing kept, no nodata)."""
    pixels, profile = _osbs(osbs)
    with rasterio.open(dst, "w", **(profile | {"dtype": dtype, "nodata": None})) as out:
        out.write(pixels.astype(dtype))
    return dst


def vrt_reading(target: Path, dst: Path) -> Path:
    """A GDAL VRT (XML) that shows ``target``'s pixels: a file that reads another file when opened."""
    with rasterio.open(target) as src:
        t = src.transform
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{target}</SourceFilename><SourceBand>{b}</SourceBand>'
            "</SimpleSource></VRTRasterBand>"
            for b in range(1, src.count + 1)
        )
        dst.write_text(
            f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">'
            f"<SRS>{src.crs.to_wkt()}</SRS><GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
            f"{bands}</VRTDataset>"
        )
    return dst


def nan_scene(osbs: Path, dst: Path, *, declared: bool, one_band: bool = False) -> Path:
    """OSBS as float32 with NaN over ``NAN_BLOCK``: in every band, or (``one_band``) only in green; with
    nodata=NaN declared or with no nodata at all."""
    pixels, profile = _osbs(osbs)
    data = pixels.astype(np.float32)
    bands = [1] if one_band else [0, 1, 2]
    for b in bands:
        data[(b, *NAN_BLOCK)] = np.nan
    nodata = float("nan") if declared else None
    with rasterio.open(dst, "w", **(profile | {"dtype": "float32", "nodata": nodata})) as out:
        out.write(data)
    return dst


def tampered_copy(package_dir: Path, dst: Path) -> Path:
    """A copy of a model package with one byte of its weights archive flipped."""
    shutil.copytree(package_dir, dst)
    weights = dst / "weights.npz"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    return dst


def cells_inside(classes_tif: Path, scene: Path, block: tuple[slice, slice]) -> np.ndarray:
    """The output cells of ``classes_tif`` that lie wholly inside ``block`` (source pixels of ``scene``)."""
    with rasterio.open(scene) as src:
        bounds = window_bounds(Window.from_slices(*block), src.transform)
    with rasterio.open(classes_tif) as out:
        w = from_bounds(*bounds, transform=out.transform)
        r0, c0 = math.ceil(w.row_off - 1e-6), math.ceil(w.col_off - 1e-6)
        r1 = math.floor(w.row_off + w.height + 1e-6)
        c1 = math.floor(w.col_off + w.width + 1e-6)
        return out.read(1)[r0:r1, c0:c1]
