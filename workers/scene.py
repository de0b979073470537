"""Open and validate a scene, map its bands to the model's, and read chips through windows only.

``open_scene(path, card, bands)`` returns a ``Scene``: the raster as the model sees it — the chosen bands,
in the card's order, on a grid of the model's ground sample distance (GSD). When the scene's GSD is more than
10 % off the model's, a ``WarpedVRT`` resamples on the fly onto a grid anchored at the scene's top-left
corner; an integer factor therefore keeps every model pixel on a whole block of scene pixels. Nothing here
ever reads more than one chip row (scene width × patch) at a time.

Validity follows GDAL's dataset-mask rule: a pixel is valid if any of the used bands is valid (nodata value,
internal mask or alpha); padding outside the scene is invalid too, and so is a pixel with NaN or infinity in
any used band, declared nodata or not: a network cannot take it, and any stand-in value would be made up.

``open_scene`` refuses, before reading a single pixel: empty files, headers claiming more pixels than
``SPIKESCAN_MAX_SCENE_PIXELS``, complex or other non-real pixel types, and (``geotiff_only``, for the service)
anything but a GeoTIFF.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from models.card import ModelCard
from spikescan.config import get_settings
from spikescan.errors import BandMismatch, InvalidScene, ResolutionMismatch, SceneTooLarge
from workers.chips import Chip, ChipGrid

GSD_TOLERANCE = 0.10  # resample when the scene's GSD is more than 10 % off the model's
GSD_MAX_FACTOR = 4.0  # refuse beyond this: resampling that far is never what the user meant
# Pixel types the backends can take (cast to float32). Complex pixels (SAR single-look) would lose their
# imaginary part without a word, so they are refused instead.
REAL_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"}
)
# What a file that is not a TIFF most often is, from its first bytes: for a message better than GDAL's.
_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"<", "an XML or HTML document (a GDAL VRT, say)"),
)


@dataclass(frozen=True)
class Resampled:
    """What the on-the-fly resampling did, for report.json."""

    source_gsd_m: tuple[float, float]
    model_gsd_m: float
    factor: tuple[float, float]  # model GSD / scene GSD, per axis (2.0 = two scene pixels per model pixel)
    method: str

    def note(self) -> str:
        gx, gy = self.source_gsd_m
        return (
            f"scene GSD {gx:.4g} x {gy:.4g} m resampled on the fly to the model's {self.model_gsd_m:g} m "
            f"({self.method}, factor {self.factor[0]:.4g} x {self.factor[1]:.4g})"
        )


@dataclass
class ChipBatch:
    """Chips with their pixels [N, P, P, B] float32 and validity [N, P, P] bool (possibly read-only views)."""

    chips: list[Chip]
    pixels: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.chips)

    def select(self, keep: np.ndarray) -> ChipBatch:
        """The chips where ``keep`` (a mask or indices) holds, copied out of the row strip."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ChipBatch([self.chips[i] for i in idx], self.pixels[idx], self.valid[idx])


class Scene:
    """An open scene on the model's grid. Use as a context manager; ``read`` takes model-grid windows."""

    def __init__(
        self, path: Path, src: rasterio.DatasetReader, band_indexes: list[int], card: ModelCard
    ) -> None:
        self.path = path
        self._src = src
        self.band_indexes = band_indexes
        self.source_bounds = tuple(src.bounds)
        self.source_shape = (src.height, src.width)
        self.resampled = _resampling_plan(path, src, card.gsd_m)
        self._ds: rasterio.DatasetReader | WarpedVRT = _warped(src, self.resampled) if self.resampled else src
        self._transform = _model_transform(src.transform, self.resampled) if self.resampled else src.transform

    @property
    def crs(self) -> CRS:
        return self._ds.crs

    @property
    def transform(self) -> Affine:
        """Model-pixel → scene CRS."""
        return self._transform

    @property
    def width(self) -> int:
        return self._ds.width

    @property
    def height(self) -> int:
        return self._ds.height

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Boundless read: pixels [h, w, B] float32 (0 outside) and validity [h, w] (False outside)."""
        h, w = int(window.height), int(window.width)
        pixels = np.zeros((h, w, len(self.band_indexes)), np.float32)
        valid = np.zeros((h, w), bool)
        inner = _clip(window, self.width, self.height)
        if inner is None:
            return pixels, valid
        (r0, r1), (c0, c1) = inner.toranges()
        dy, dx = r0 - int(window.row_off), c0 - int(window.col_off)
        try:
            data = self._ds.read(self.band_indexes, window=inner)
            ok = self._validity(data, inner)
        except RasterioError as exc:
            raise InvalidScene(f"{self.path}: unreadable pixels near row {r0}, column {c0} ({exc})") from None
        target = pixels[dy : dy + r1 - r0, dx : dx + c1 - c0]
        target[...] = np.moveaxis(data, 0, -1)  # cast into place: no full-size temporaries
        if np.issubdtype(data.dtype, np.floating):
            ok &= np.isfinite(target).all(axis=-1)
        # Nodata values (e.g. -99999) never reach a backend: invalid pixels read as 0 like the padding.
        target[~ok] = 0
        valid[dy : dy + r1 - r0, dx : dx + c1 - c0] = ok
        return pixels, valid

    def _validity(self, data: np.ndarray, window: Window) -> np.ndarray:
        """Valid if any band is valid. Masks that are only nodata values are computed from the pixels already
        read — the same rule as GDAL's nodata mask, without a second (warped) read of the window."""
        nodata = self._nodata
        if nodata is None:
            return (self._ds.read_masks(self.band_indexes, window=window) > 0).any(axis=0)
        ok = np.zeros(data.shape[1:], bool)
        for band, value in zip(data, nodata, strict=True):
            ok |= ~np.isnan(band) if math.isnan(value) else band != band.dtype.type(value)
        return ok

    @functools.cached_property
    def _nodata(self) -> list[float] | None:
        # rasterio rebuilds mask_flag_enums on every access: asked once per read, it cost as much as the read.
        flags = [self._ds.mask_flag_enums[i - 1] for i in self.band_indexes]
        if all(f == [MaskFlags.nodata] for f in flags):
            return [float(self._ds.nodatavals[i - 1]) for i in self.band_indexes]
        return None

    def read_chips(self, chips: Sequence[Chip]) -> ChipBatch:
        """Any chips (an inference worker's batch), in one read per chip row they come from: a batch is
        mostly a run of one row's neighbours, and one strip read costs about what one chip read does."""
        if not chips:
            raise ValueError("no chips to read")
        size = chips[0].size
        pixels = np.empty((len(chips), size, size, len(self.band_indexes)), np.float32)
        valid = np.empty((len(chips), size, size), bool)
        by_row: dict[int, list[int]] = {}
        for i, chip in enumerate(chips):
            if chip.size != size:
                raise ValueError("chips of one batch must have one size")
            by_row.setdefault(chip.y, []).append(i)
        for y, members in by_row.items():
            x0 = min(chips[i].x for i in members)
            x1 = max(chips[i].x for i in members) + size
            strip, strip_valid = self.read(Window(x0, y, x1 - x0, size))
            for i in members:
                dx = chips[i].x - x0
                pixels[i] = strip[:, dx : dx + size]
                valid[i] = strip_valid[:, dx : dx + size]
        return ChipBatch(list(chips), pixels, valid)

    def read_chip_row(self, grid: ChipGrid, row: int) -> ChipBatch:
        """Every chip of one chip row from a single (width × patch) read; chips are views of that strip."""
        pixels, valid = self.read(grid.row_window(row))
        p, s = grid.patch, grid.stride
        # sliding_window_view puts the window axis last: [P, cols, B, P] → [cols, P, P, B], no copy.
        chip_pixels = sliding_window_view(pixels, p, axis=1)[:, ::s].transpose(1, 0, 3, 2)
        chip_valid = sliding_window_view(valid, p, axis=1)[:, ::s].transpose(1, 0, 2)
        return ChipBatch(grid.row(row), chip_pixels, chip_valid)

    def close(self) -> None:
        if self._ds is not self._src:
            self._ds.close()
        self._src.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_scene(
    path: str | Path,
    card: ModelCard,
    bands: str | Sequence[int] | None = None,
    *,
    geotiff_only: bool = False,
    max_pixels: int | None = None,
) -> Scene:
    """Open ``path`` for ``card``; an ``InvalidScene`` subclass naming the file if it cannot be scanned.

    ``geotiff_only`` is for files a remote caller chose: GDAL's other drivers would let an upload be a VRT
    that reads any raster on the server, or a WMS description that makes it fetch URLs. ``max_pixels``
    (default: the configured ``max_scene_pixels``) caps what the header may claim."""
    path = Path(path)
    _check_file(path)
    src = _open(path, geotiff_only)
    try:
        _check_size(path, src, get_settings().max_scene_pixels if max_pixels is None else max_pixels)
        _check_dtypes(path, src)
        _check_georeferencing(path, src)
        indexes = map_bands(path, src, card, bands)
        return Scene(path, src, indexes, card)
    except BaseException:
        src.close()
        raise


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidScene(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise InvalidScene(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if size == 0:
        raise InvalidScene(f"{path}: the file is empty (0 bytes)")


def _open(path: Path, geotiff_only: bool) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            # We refuse ungeoreferenced scenes ourselves, with a message naming the file.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, driver="GTiff" if geotiff_only else None)
    except RasterioError as exc:
        kind = _sniff(path)
        if kind and geotiff_only:
            raise InvalidScene(f"{path}: not a GeoTIFF: the file is {kind}") from None
        raise InvalidScene(f"{path}: not a raster GDAL can read ({_first_line(exc)})") from None


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None  # GDAL's own message says enough
    return next((kind for magic, kind in _SIGNATURES if head.lstrip().startswith(magic)), None)


def _check_size(path: Path, src: rasterio.DatasetReader, max_pixels: int) -> None:
    if src.width * src.height > max_pixels:
        raise SceneTooLarge(
            f"{path}: header claims {src.width:,} x {src.height:,} pixels ({src.width * src.height:.3g} per "
            f"band), more than the limit of {max_pixels:.3g} (SPIKESCAN_MAX_SCENE_PIXELS); split it into "
            "tiles first (e.g. gdal_retile.py)"
        )


def _check_dtypes(path: Path, src: rasterio.DatasetReader) -> None:
    unsupported = sorted(set(src.dtypes) - REAL_DTYPES)
    if unsupported:
        raise InvalidScene(
            f"{path}: pixel data type {', '.join(unsupported)} is not supported; bands must hold real "
            f"numbers ({', '.join(sorted(REAL_DTYPES))}): convert it first (e.g. the amplitude of complex "
            "data)"
        )


def _check_georeferencing(path: Path, src: rasterio.DatasetReader) -> None:
    if src.width < 1 or src.height < 1 or src.count < 1:
        raise InvalidScene(f"{path}: empty raster ({src.width}x{src.height}, {src.count} bands)")
    t = src.transform
    if src.crs is None or t == Affine.identity():
        gcps, _ = src.gcps
        hint = " (only ground control points: warp it to a map grid first, e.g. gdalwarp)" if gcps else ""
        if src.driver != "GTiff":
            hint += f" (the file is {_sniff(path) or 'a ' + src.driver + ' raster'}, not a GeoTIFF)"
        raise InvalidScene(f"{path}: not georeferenced: no CRS and geotransform{hint}")
    if t.b != 0 or t.d != 0:
        raise InvalidScene(
            f"{path}: rotated or sheared geotransform is not supported (warp it north-up first)"
        )
    if t.a <= 0 or t.e >= 0:
        raise InvalidScene(f"{path}: geotransform is not north-up (pixel size {t.a}, {t.e})")


def map_bands(
    path: Path, src: rasterio.DatasetReader, card: ModelCard, bands: str | Sequence[int] | None
) -> list[int]:
    """1-based scene bands in the card's order: explicit ``bands``, else names, else all bands in order."""
    want = [b.name for b in card.bands]
    if bands is not None:
        return _explicit_bands(path, src.count, want, bands)
    if src.count < len(want):
        raise BandMismatch(
            f"{path}: has {src.count} band(s), the model needs {len(want)} ({', '.join(want)})"
        )
    by_name = _bands_by_name(src)
    matched = [by_name.get(b.name.lower()) or by_name.get((b.common_name or "").lower()) for b in card.bands]
    if all(matched) and len(set(matched)) == len(matched):
        return [int(m) for m in matched if m]
    if src.count == len(want):
        return list(range(1, src.count + 1))
    raise BandMismatch(
        f"{path}: has {src.count} bands and their names do not identify the model's {len(want)} "
        f"({', '.join(want)}); pass --bands with {len(want)} 1-based band numbers"
    )


def _explicit_bands(path: Path, count: int, want: list[str], bands: str | Sequence[int]) -> list[int]:
    try:
        idx = [int(b) for b in (bands.split(",") if isinstance(bands, str) else bands)]
    except ValueError:
        raise BandMismatch(f"{path}: --bands must be comma-separated band numbers, got {bands!r}") from None
    if len(idx) != len(want):
        raise BandMismatch(
            f"{path}: --bands names {len(idx)} band(s), the model needs {len(want)} ({', '.join(want)})"
        )
    bad = [i for i in idx if not 1 <= i <= count]
    if bad:
        raise BandMismatch(f"{path}: --bands {bad} out of range (the scene has {count} bands)")
    return idx


def _bands_by_name(src: rasterio.DatasetReader) -> dict[str, int]:
    names: dict[str, int] = {}
    for i, (desc, ci) in enumerate(zip(src.descriptions, src.colorinterp, strict=True), start=1):
        for key in (desc, ci.name if ci not in (ColorInterp.undefined, ColorInterp.gray) else None):
            if key:
                names.setdefault(key.strip().lower(), i)
    return names


def scene_gsd_m(src: rasterio.DatasetReader) -> tuple[float, float]:
    """Pixel size in metres (x, y); a geographic CRS is measured along the axes at the scene centre."""
    t = src.transform
    if src.crs.is_geographic:
        lon, lat = t * (src.width / 2, src.height / 2)
        geod = Geod(ellps="WGS84")
        return abs(geod.inv(lon, lat, lon + t.a, lat)[2]), abs(geod.inv(lon, lat, lon, lat + t.e)[2])
    try:
        factor = src.crs.linear_units_factor[1]
    except CRSError:
        factor = 1.0
    return abs(t.a) * factor, abs(t.e) * factor


def _resampling_plan(path: Path, src: rasterio.DatasetReader, model_gsd: float) -> Resampled | None:
    gsd = scene_gsd_m(src)
    factor = (model_gsd / gsd[0], model_gsd / gsd[1])
    if any(f > GSD_MAX_FACTOR or f < 1 / GSD_MAX_FACTOR for f in factor):
        raise ResolutionMismatch(
            f"{path}: ground sample distance {gsd[0]:.4g} m is more than {GSD_MAX_FACTOR:g}x off the model's "
            f"{model_gsd:g} m; resample it yourself or use a model made for this resolution"
        )
    if all(abs(f - 1) <= GSD_TOLERANCE for f in factor):
        return None
    # Downsampling averages the scene pixels under a model pixel; upsampling interpolates.
    method = "average" if min(factor) >= 1 else "bilinear"
    return Resampled(gsd, model_gsd, factor, method)


def _model_transform(t: Affine, plan: Resampled) -> Affine:
    fx, fy = plan.factor
    return Affine(t.a * fx, 0.0, t.c, 0.0, t.e * fy, t.f)  # anchored at the scene's top-left corner


def _warped(src: rasterio.DatasetReader, plan: Resampled) -> WarpedVRT:
    # Warped in the scene's own pixel frame (origin 0), not in map coordinates: at eastings of 10^5 m GDAL's
    # pixel footprints come out ~1e-9 pixel wide of the mark, and an average then takes a sliver of the next
    # scene pixel — enough, at a nodata edge, to make a model pixel whose own scene pixels are all nodata
    # "valid" with its neighbour's value. ``Scene.transform`` puts the result back on the map.
    t = src.transform
    local = Affine(t.a, 0.0, 0.0, 0.0, t.e, 0.0)
    fx, fy = plan.factor
    width, height = math.ceil(src.width / fx - 1e-9), math.ceil(src.height / fy - 1e-9)
    return WarpedVRT(
        src,
        crs=src.crs,
        src_transform=local,
        transform=_model_transform(local, plan),
        width=width,
        height=height,
        resampling=Resampling[plan.method],
    )


def _clip(window: Window, width: int, height: int) -> Window | None:
    c0, r0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
    c1 = min(int(window.col_off + window.width), width)
    r1 = min(int(window.row_off + window.height), height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
