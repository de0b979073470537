"""A user's vector labels and scenes → labelled scenes on the model's grid (``spikescan train --task``).

One job: read the label file through pyogrio (any vector format GDAL reads), check it is usable for the task,
reproject it to each scene's CRS and rasterise it onto the model's pixel grid. Only the window of each scene
that the labels touch (plus a patch of context) is read, so a huge scene with a few labelled fields costs
memory in proportion to the labelled area, not the scene.

Every problem with the labels is an ``InvalidInput`` naming the file: the CLI turns it into one line and
exit status 2.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import Window

from models.datasets import Scene
from models.user_images import TrainingImage, scene_gsd
from spikescan.errors import InvalidInput

# Geometry types each task can learn from: a segmentation needs areas (a point or line has none).
USABLE = {"segmentation": {"Polygon", "MultiPolygon"}}
CLASS_FIELD_GUESSES = ("class", "label", "landuse", "landcover", "category", "type")
GSD_MAX_FACTOR = 4.0  # as the scanner: resampling further than this is never what the user meant


@dataclass(frozen=True)
class Labels:
    """Usable label features: geometries in ``crs``, each with a class index into ``classes``."""

    path: Path
    sha256: str
    field: str
    crs: CRS
    geometries: np.ndarray  # shapely geometries
    class_of: np.ndarray  # int [n]
    classes: list[str]
    background: str | None
    features_read: int


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_vector(path: Path) -> tuple[dict, np.ndarray, list[np.ndarray], list[str]]:
    """(pyogrio metadata, WKB geometries, field values, field names) of a non-empty label file with a CRS,
    or an ``InvalidInput`` saying which of those it is not."""
    from pyogrio.errors import DataLayerError, DataSourceError
    from pyogrio.raw import read

    if not path.is_file():
        raise InvalidInput(f"{path}: no such label file")
    try:
        meta, _, wkb, values = read(path)
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"{path}: not a readable vector file ({reason})") from None
    if wkb is None or len(wkb) == 0:
        raise InvalidInput(f"{path}: the label file has no features")
    if not meta.get("crs"):
        raise InvalidInput(f"{path}: the label file has no coordinate reference system; "
                           "save it with one (e.g. the scene's) so it can be placed on the scene")
    return meta, wkb, values, [str(f) for f in meta["fields"]]


def read_labels(path: Path, field: str | None, task: str, background: str | None = None) -> Labels:
    """The label file's features and classes, or an ``InvalidInput`` saying what is wrong with it."""
    meta, wkb, values, fields = read_vector(path)
    name = _class_field(path, fields, field)
    raw = values[fields.index(name)]
    geoms = shapely.from_wkb(wkb)
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    keep &= np.array([v is not None and str(v).strip() != "" for v in raw], dtype=bool)
    types = Counter(g.geom_type for g in geoms[keep])
    bad = {t: n for t, n in types.items() if t not in USABLE[task]}
    if bad:
        listed = ", ".join(f"{n} {t}" for t, n in sorted(bad.items()))
        raise InvalidInput(f"{path}: {task} needs polygons, but the file has {listed} features")
    geoms, labels = shapely.make_valid(geoms[keep]), [str(v).strip() for v in raw[keep]]
    if not len(geoms):
        raise InvalidInput(f"{path}: no feature has both a geometry and a value in field {name!r}")
    classes = sorted(set(labels) | ({background} if background else set()))
    if len(classes) < 2:
        raise InvalidInput(f"{path}: field {name!r} holds only one class ({classes[0]!r}); a model needs at "
                           "least two (name the unlabelled area's class with --background)")
    index = {c: i for i, c in enumerate(classes)}
    return Labels(path, sha256_of(path), name, CRS.from_user_input(meta["crs"]), geoms,
                  np.array([index[v] for v in labels], np.int16), classes, background, len(wkb))


def _class_field(path: Path, fields: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in fields:
            raise InvalidInput(f"{path}: no field {wanted!r} (fields: {', '.join(fields) or 'none'})")
        return wanted
    lower = {f.lower(): f for f in fields}
    for guess in CLASS_FIELD_GUESSES:
        if guess in lower:
            return lower[guess]
    raise InvalidInput(f"{path}: which field holds the class? name it with --label-field "
                       f"(fields: {', '.join(fields) or 'none'})")


def to_crs(geometries: np.ndarray, crs: CRS, target: CRS) -> np.ndarray:
    """Shapely geometries reprojected from ``crs`` to ``target`` (x, y order whatever the CRSs' axes)."""
    move = Transformer.from_crs(crs, target, always_xy=True)
    return shapely.transform(geometries, lambda xy: np.column_stack(move.transform(*xy.T)))


@dataclass(frozen=True)
class SceneRead:
    """What was read of one scene: its labelled window on the model's grid."""

    scene: Scene
    image: TrainingImage
    crs: str
    transform: Affine
    native_gsd_m: float
    window_px: tuple[int, int, int, int]  # col, row, width, height in the scene's own pixels


def read_scene(image: TrainingImage, labels: Labels, gsd_m: float, margin_px: int) -> SceneRead | None:
    """The labels' window of one scene (``margin_px`` model pixels of context around them), resampled to
    ``gsd_m`` by area averaging, with per-pixel class labels (-1 unlabelled, or the background class); None
    when no label falls on the scene."""
    with image.opened() as src:
        native = scene_gsd(src, image.source.ref)
        if not 1 / GSD_MAX_FACTOR <= gsd_m / native <= GSD_MAX_FACTOR:
            raise InvalidInput(f"{image.ref}: pixels of {native:g} m are more than {GSD_MAX_FACTOR:g}x off "
                               f"--gsd {gsd_m:g}")
        bands = image.bands
        geoms = to_crs(labels.geometries, labels.crs, CRS.from_user_input(src.crs))
        window = _labelled_window(src, geoms, margin_px * gsd_m / native)
        if window is None:
            return None
        scale = native / gsd_m
        shape = (max(int(window.height * scale), 1), max(int(window.width * scale), 1))
        data = src.read(bands, window=window, out_shape=(len(bands), *shape), masked=True,
                        resampling=Resampling.average)
        cell = Affine.scale(window.width / shape[1], window.height / shape[0])
        transform = src.window_transform(window) * cell
        pixels = np.moveaxis(data.astype(np.float32).filled(np.nan), 0, -1)
        crs = src.crs.to_string()
        px_window = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    fill = labels.classes.index(labels.background) if labels.background else -1
    # Pixel centres decide (all_touched=False): a border pixel is mostly outside its polygon half the time.
    shapes = zip(geoms, labels.class_of.tolist(), strict=True)
    raster = rasterize(shapes, out_shape=shape, transform=transform, fill=fill, dtype="int16")
    raster[~np.isfinite(pixels).all(axis=-1)] = -1  # no data: nothing to learn or score there
    scene = Scene(image.name, pixels, raster.astype(np.int16), 1)
    return SceneRead(scene, image, crs, transform, native, px_window)


def _labelled_window(src: rasterio.DatasetReader, geoms: np.ndarray, margin: float) -> Window | None:
    """The scene pixels the labels cover, grown by ``margin`` scene pixels and clipped to the scene."""
    footprint = shapely.box(*src.bounds)
    inside = geoms[shapely.intersects(geoms, footprint)]
    if not len(inside):
        return None
    x0, y0, x1, y1 = shapely.total_bounds(inside)
    inv = ~src.transform
    cols, rows = zip(*(inv * (x, y) for x, y in ((x0, y0), (x1, y1))), strict=True)
    c0, c1 = max(math.floor(min(cols) - margin), 0), min(math.ceil(max(cols) + margin), src.width)
    r0, r1 = max(math.floor(min(rows) - margin), 0), min(math.ceil(max(rows) + margin), src.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_scenes(images: list[TrainingImage], labels: Labels, gsd_m: float, margin_px: int) -> list[SceneRead]:
    """Every scene's labelled window; an error when the labels lie on none of them."""
    found = [r for r in (read_scene(i, labels, gsd_m, margin_px) for i in images) if r is not None]
    found = [r for r in found if (r.scene.labels >= 0).any()]
    if not found:
        x0, y0, x1, y1 = (round(v, 1) for v in shapely.total_bounds(labels.geometries))
        raise InvalidInput(f"{labels.path}: no label overlaps any scene's valid pixels (labels span "
                           f"{x0}, {y0} .. {x1}, {y1} in {labels.crs.to_string()})")
    return found
