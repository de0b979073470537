"""Open and validate a scene, map its bands to the model's, and read chips through windows only.

``open_scene(path, card, bands)`` returns a ``Scene``: the raster as the model sees it — the chosen bands,
in the card's order, on a grid of the model's ground sample distance (GSD). When the scene's GSD is more than
10 % off the model's, a ``WarpedVRT`` resamples on the fly onto a grid anchored at the scene's top-left
corner; an integer factor therefore keeps every model pixel on a whole block of scene pixels. Nothing here
ever reads more than one chip row (scene width × patch) at a time.

Validity follows GDAL's dataset-mask rule: a pixel is valid if any of the used bands is valid (nodata value,
internal mask or alpha); padding outside the scene is invalid too, and so is a pixel with NaN or infinity in
any used band, declared nodata or not: a network cannot take it, and any stand-in value would be made up.

Undeclared fill: a pixel whose used bands all hold one of ``Scene.fill_values`` is invalid too. Those are
the common sentinels (−9999, −99999, float32's lowest; only where the pixel type can hold them) from the
start, plus what ``workers.input_check`` adds after looking at a sample (0 at the scene's border, the user's
``--nodata``). ``Scene.configure`` also sets a ``--scale`` factor and the card's normalisation, applied to
every pixel read, so every reader — the in-process pipeline, the chipper, the inference workers — sees the
same numbers. ``read_chip_row`` counts each scene pixel once (valid, outside the model's range per band, and
masked per fill value) into ``Scene.tally``: the exact figures report.json's warnings come from.

``open_scene`` refuses, before reading a single pixel: empty files, headers claiming more pixels than
``SPIKESCAN_MAX_SCENE_PIXELS``, complex or other non-real pixel types, and (``geotiff_only``, for the service)
anything but a GeoTIFF.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from models import normalisation
from models.card import ModelCard, Normalisation
from spikescan.config import get_settings
from spikescan.errors import BandMismatch, InvalidScene, ResolutionMismatch, SceneTooLarge, option
from workers import acquisition, sources
from workers.chips import Chip, ChipGrid
from workers.sources import SceneSource

if TYPE_CHECKING:
    from workers.aoi import Aoi, AoiMask

GSD_TOLERANCE = 0.10  # resample when the scene's GSD is more than 10 % off the model's
GSD_MAX_FACTOR = 4.0  # refuse beyond this: resampling that far is never what the user meant
# Pixel types the backends can take (cast to float32). Complex pixels (SAR single-look) would lose their
# imaginary part without a word, so they are refused instead.
REAL_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"}
)
# Values producers write for "no data" without always declaring them; masked where every used band holds one.
SENTINELS = (-9999.0, -99999.0, float(np.finfo(np.float32).min))


def model_ranges(card: ModelCard) -> list[tuple[float, float] | None]:
    """Per band, the input range the model was trained on: its first and last thermometer thresholds (the
    training pixels' 1/2K and 1 − 1/2K quantiles) widened by their spread on either side; None where the
    card has a single level (no spread to judge by). Outside it every level is off or on whatever the value:
    the network cannot tell such pixels apart, and never saw their like in training."""
    out: list[tuple[float, float] | None] = []
    for row in card.encoding.thresholds:
        spread = row[-1] - row[0]
        out.append((row[0] - spread, row[-1] + spread) if spread > 0 else None)
    return out


def representable(value: float, dtypes: Sequence[str]) -> bool:
    """Whether every one of ``dtypes`` holds ``value`` exactly (a uint16 band never holds −9999)."""
    for name in dtypes:
        dt = np.dtype(name)
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            if not (float(value).is_integer() and info.min <= value <= info.max):
                return False
        elif float(dt.type(value)) != value:
            return False
    return True


@dataclass
class PixelCounts:
    """Pixels of the scene counted once each: valid ones, those below/above the model's range per band, and
    those masked as each fill value. Adds up across chip rows, and (as JSON) across processes."""

    bands: int
    valid: int = 0
    below: list[int] = field(default_factory=list)
    above: list[int] = field(default_factory=list)
    fill: dict[float, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.below = self.below or [0] * self.bands
        self.above = self.above or [0] * self.bands

    def add_range(
        self, pixels: np.ndarray, ok: np.ndarray, ranges: Sequence[tuple[float, float] | None]
    ) -> None:
        """Count the valid pixels of ``pixels`` [..., B] (validity ``ok`` [...]) against ``ranges``."""
        self.valid += int(np.count_nonzero(ok))
        for b, lim in enumerate(ranges):
            if lim is not None:
                band = pixels[..., b]
                self.below[b] += int(np.count_nonzero((band < lim[0]) & ok))
                self.above[b] += int(np.count_nonzero((band > lim[1]) & ok))

    def add_fill(self, value: float, pixels: int) -> None:
        if pixels:
            self.fill[value] = self.fill.get(value, 0) + pixels

    def to_dict(self) -> dict[str, object]:
        return {
            "valid": self.valid,
            "below": list(self.below),
            "above": list(self.above),
            "fill": [[v, n] for v, n in sorted(self.fill.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelCounts:
        below = [int(x) for x in data["below"]]
        return cls(
            len(below),
            int(data["valid"]),
            below,
            [int(x) for x in data["above"]],
            {float(v): int(n) for v, n in data["fill"]},
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
        self, source: SceneSource, src: rasterio.DatasetReader, band_indexes: list[int], card: ModelCard
    ) -> None:
        self.source = source
        self.path = source.ref  # what every message names: the user's own reference
        self._src = src
        self.band_indexes = band_indexes
        self.source_bounds = tuple(src.bounds)
        self.source_shape = (src.height, src.width)
        self.resampled = _resampling_plan(self.path, src, card.gsd_m)
        self._ds: rasterio.DatasetReader | WarpedVRT = src
        if self.resampled:
            with source.env():
                self._ds = _warped(src, self.resampled)
        self._transform = _model_transform(src.transform, self.resampled) if self.resampled else src.transform
        self.dtypes = [src.dtypes[i - 1] for i in band_indexes]
        self.band_names = [b.name for b in card.bands]
        self.ranges = model_ranges(card)
        self.fill_values: tuple[float, ...] = tuple(v for v in SENTINELS if representable(v, self.dtypes))
        self.warp_nodata: float | None = None  # a fill value the resampler is told to leave out
        self.scale: float | None = None
        self.norm: tuple[Normalisation, normalisation.SceneStats] | None = None
        self.tally = PixelCounts(len(band_indexes))
        self.check: Any = None  # what workers.input_check decided (its InputCheck), for the report
        self.acquired = acquisition.from_dataset(src)  # for STAC's datetime
        self.aoi: AoiMask | None = None  # the processing extent (``clip_to``)

    @property
    def block_shape(self) -> tuple[int, int] | None:
        """The file's internal block (width, height) in model pixels; None when it is stored in strips one
        row high or blocks of unequal size across bands (no layout worth aligning reads to)."""
        shapes = {self._src.block_shapes[i - 1] for i in self.band_indexes}
        if len(shapes) != 1:
            return None
        (bh, bw), = shapes
        if bh <= 1:
            return None
        fx, fy = self.resampled.factor if self.resampled else (1.0, 1.0)
        return int(bw // fx), int(bh // fy)

    @property
    def declares_nodata(self) -> bool:
        """Whether the file itself marks invalid pixels of the used bands (nodata value, mask or alpha)."""
        return any(self._src.mask_flag_enums[i - 1] != [MaskFlags.all_valid] for i in self.band_indexes)

    def configure(
        self,
        *,
        fill_values: Sequence[float] | None = None,
        warp_nodata: float | None = None,
        scale: float | None = None,
        norm: tuple[Normalisation, normalisation.SceneStats] | None = None,
    ) -> None:
        """Set what every later read applies: fill values masked (every used band equal to one), the value a
        resampled scene's warp leaves out, a factor on the pixels and the card's normalisation."""
        if fill_values is not None:
            self.fill_values = tuple(dict.fromkeys(float(v) for v in fill_values))
        if warp_nodata != self.warp_nodata and self.resampled:
            if self._ds is not self._src:
                self._ds.close()
            with self.source.env():
                self._ds = _warped(self._src, self.resampled, warp_nodata)
            self.__dict__.pop("_nodata", None)
        self.warp_nodata = warp_nodata
        self.scale = scale
        self.norm = norm

    def clip_to(self, aoi: Aoi) -> None:
        """Read pixels outside ``aoi`` as no data from now on (``workers.aoi``); refused if it misses us."""
        self.aoi = aoi.on_grid(self.crs, self.transform, self.width, self.height, str(self.path))

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

    def read(
        self, window: Window, counts: PixelCounts | None = None, count_rows: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boundless read: pixels [h, w, B] float32 (0 outside) and validity [h, w] (False outside), with the
        fill values masked, the scale and normalisation applied. The window's first ``count_rows`` rows are
        counted into ``counts``."""
        h, w = int(window.height), int(window.width)
        pixels = np.zeros((h, w, len(self.band_indexes)), np.float32)
        valid = np.zeros((h, w), bool)
        inner = _clip(window, self.width, self.height)
        if inner is None:
            return pixels, valid
        (r0, r1), (c0, c1) = inner.toranges()
        dy, dx = r0 - int(window.row_off), c0 - int(window.col_off)
        try:
            with self.source.env():  # a remote scene's GDAL options, in whichever thread reads
                data = self._ds.read(self.band_indexes, window=inner)
                ok = self._validity(data, inner)
            if self.aoi is not None:
                ok &= self.aoi.inside(c0, r0, c1 - c0, r1 - r0)
        except RasterioError as exc:
            raise InvalidScene(f"{self.path}: unreadable pixels near row {r0}, column {c0} ({exc})") from None
        counted = slice(0, max(0, count_rows - dy)) if counts is not None else slice(0, 0)
        self._mask_fill(data, ok, counts, counted)
        target = pixels[dy : dy + r1 - r0, dx : dx + c1 - c0]
        target[...] = np.moveaxis(data, 0, -1)  # cast into place: no full-size temporaries
        if np.issubdtype(data.dtype, np.floating):
            ok &= np.isfinite(target).all(axis=-1)
        if self.scale is not None:
            target *= np.float32(self.scale)
        if self.norm is not None:
            normalisation.apply_in_place(target, *self.norm)
        # Nodata values (e.g. -99999) never reach a backend: invalid pixels read as 0 like the padding.
        target[~ok] = 0
        valid[dy : dy + r1 - r0, dx : dx + c1 - c0] = ok
        if counts is not None:
            counts.add_range(target[counted], ok[counted], self.ranges)
        return pixels, valid

    def _mask_fill(
        self, data: np.ndarray, ok: np.ndarray, counts: PixelCounts | None, counted: slice
    ) -> None:
        """Invalidate pixels whose bands all hold one fill value; count those that were valid till now."""
        if not self.fill_values or data.size == 0:
            return
        lo, hi = data.min(axis=0), data.max(axis=0)
        for value in self.fill_values:
            if lo.min() > value or hi.max() < value:
                continue
            hit = (lo == value) & (hi == value)
            if value != self.warp_nodata:  # the warp marks that one invalid itself: still undeclared fill
                hit &= ok
            if counts is not None:
                counts.add_fill(value, int(np.count_nonzero(hit[counted])))
            ok &= ~hit

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
        """Every chip of one chip row from a single (width × patch) read; chips are views of that strip.
        The rows no later chip row reads again are counted into ``tally``: read every chip row once (the
        pipeline and the chipper do) and each scene pixel is counted exactly once."""
        own = grid.stride if row < grid.rows - 1 else grid.patch
        pixels, valid = self.read(grid.row_window(row), self.tally, own)
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
    path: str | Path | SceneSource,
    card: ModelCard,
    bands: str | Sequence[int] | None = None,
    *,
    geotiff_only: bool = False,
    max_pixels: int | None = None,
) -> Scene:
    """Open ``path`` (anything ``workers.sources`` resolves: a path, an http(s) or s3 URL, a STAC Item) for
    ``card``; an ``InvalidScene`` subclass naming it if it cannot be scanned.

    ``geotiff_only`` is for files a remote caller chose: GDAL's other drivers would let an upload be a VRT
    that reads any raster on the server, or a WMS description that makes it fetch URLs (remote scenes are
    GeoTIFFs only anyway). ``max_pixels`` (default: the configured ``max_scene_pixels``) caps what the header
    may claim."""
    source = _source(path, card, geotiff_only)
    src = sources.open_dataset(source)
    try:
        _check_size(source.ref, src, get_settings().max_scene_pixels if max_pixels is None else max_pixels)
        _check_dtypes(source.ref, src)
        _check_georeferencing(source, src)
        indexes = map_bands(source.ref, src, card, bands)
        return Scene(source, src, indexes, card)
    except BaseException:
        src.close()
        raise


def _source(path: str | Path | SceneSource, card: ModelCard, geotiff_only: bool) -> SceneSource:
    if isinstance(path, SceneSource):
        return path
    if sources.is_stac(path):
        from workers import stac_input  # the STAC reader needs the card: which bands to stack

        return stac_input.source(str(path), card)
    return sources.resolve(path, geotiff_only=geotiff_only)


def _check_size(path: str, src: rasterio.DatasetReader, max_pixels: int) -> None:
    if src.width * src.height > max_pixels:
        raise SceneTooLarge(
            f"{path}: header claims {src.width:,} x {src.height:,} pixels ({src.width * src.height:.3g} per "
            f"band), more than the limit of {max_pixels:.3g} (SPIKESCAN_MAX_SCENE_PIXELS); split it into "
            "tiles first (e.g. gdal_retile.py)"
        )


def _check_dtypes(path: str, src: rasterio.DatasetReader) -> None:
    unsupported = sorted(set(src.dtypes) - REAL_DTYPES)
    if unsupported:
        raise InvalidScene(
            f"{path}: pixel data type {', '.join(unsupported)} is not supported; bands must hold real "
            f"numbers ({', '.join(sorted(REAL_DTYPES))}): convert it first (e.g. the amplitude of complex "
            "data)"
        )


def _check_georeferencing(source: SceneSource, src: rasterio.DatasetReader) -> None:
    path = source.ref
    if src.width < 1 or src.height < 1 or src.count < 1:
        raise InvalidScene(f"{path}: empty raster ({src.width}x{src.height}, {src.count} bands)")
    t = src.transform
    if src.crs is None or t == Affine.identity():
        gcps, _ = src.gcps
        hint = " (only ground control points: warp it to a map grid first, e.g. gdalwarp)" if gcps else ""
        if src.driver != "GTiff":
            kind = sources.sniff_source(source)
            hint += f" (the file is {kind or 'a ' + src.driver + ' raster'}, not a GeoTIFF)"
        raise InvalidScene(f"{path}: not georeferenced: no CRS and geotransform{hint}")
    if t.b != 0 or t.d != 0:
        raise InvalidScene(
            f"{path}: rotated or sheared geotransform is not supported (warp it north-up first)"
        )
    if t.a <= 0 or t.e >= 0:
        raise InvalidScene(f"{path}: geotransform is not north-up (pixel size {t.a}, {t.e})")


def map_bands(
    path: str, src: rasterio.DatasetReader, card: ModelCard, bands: str | Sequence[int] | None
) -> list[int]:
    """1-based scene bands in the card's order: explicit ``bands``, else names, else all bands in order."""
    want = [b.name for b in card.bands]
    if bands is not None:
        return _explicit_bands(path, src.count, want, bands)
    if src.count < len(want):
        raise BandMismatch(
            f"{path}: has {src.count} band(s), the model needs {len(want)} ({', '.join(want)})"
        )
    by_name = bands_by_name(src)
    matched = [by_name.get(b.name.lower()) or by_name.get((b.common_name or "").lower()) for b in card.bands]
    if all(matched) and len(set(matched)) == len(matched):
        return [int(m) for m in matched if m]
    if src.count == len(want):
        return list(range(1, src.count + 1))
    raise BandMismatch(
        f"{path}: has {src.count} bands and their names do not identify the model's {len(want)} "
        f"({', '.join(want)}); set {option('bands')} to {len(want)} 1-based band numbers in the model's order"
    )


def _explicit_bands(path: str, count: int, want: list[str], bands: str | Sequence[int]) -> list[int]:
    try:
        idx = [int(b) for b in (bands.split(",") if isinstance(bands, str) else bands)]
    except ValueError:
        raise BandMismatch(
            f"{path}: {option('bands')} must be comma-separated band numbers, got {bands!r}"
        ) from None
    if len(idx) != len(want):
        raise BandMismatch(
            f"{path}: {option('bands')} names {len(idx)} band(s), the model needs {len(want)} "
            f"({', '.join(want)})"
        )
    bad = [i for i in idx if not 1 <= i <= count]
    if bad:
        raise BandMismatch(f"{path}: {option('bands')} {bad} out of range (the scene has {count} bands)")
    return idx


def bands_by_name(src: rasterio.DatasetReader) -> dict[str, int]:
    """1-based band of each lower-cased description and colour interpretation (the first band wins)."""
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


def _resampling_plan(path: str, src: rasterio.DatasetReader, model_gsd: float) -> Resampled | None:
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


def _warped(src: rasterio.DatasetReader, plan: Resampled, nodata: float | None = None) -> WarpedVRT:
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
        # An undeclared fill value declared to the warp: averaged in, it would bleed into the data's edge.
        **({"src_nodata": nodata, "nodata": nodata} if nodata is not None else {}),
        # A mask band (a JPEG orthophoto's internal mask) is honoured by the warp, but without a destination
        # alpha the masked area comes out as valid zeros — "background" in the map. An alpha band carries
        # the mask through, and read_masks then sees it. (A source alpha band is carried through by GDAL.)
        add_alpha=_mask_band_only(src),
    )


def _mask_band_only(src: rasterio.DatasetReader) -> bool:
    """Whether validity comes from a GDAL mask band (internal or .msk), not from nodata or an alpha band."""
    flags = src.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags and MaskFlags.nodata not in flags


def _clip(window: Window, width: int, height: int) -> Window | None:
    c0, r0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
    c1 = min(int(window.col_off + window.width), width)
    r1 = min(int(window.row_off + window.height), height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)
