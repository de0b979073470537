"""A user's objects for ``spikescan train --task detection``: boxes/polygons or points → boxes on each scene.

Polygons (boxes are polygons) become their bounding boxes; points become squares of ``--size-field`` metres
(or the default crown size) around them. Boxes are made in each scene's own CRS, after reprojection, so a
point's size is metres on the ground whatever CRS the file uses. Every problem is an ``InvalidInput`` naming
the file (exit status 2 from the CLI).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS

from models.user_labels import Labels, SceneRead, read_vector, sha256_of, to_crs
from spikescan.errors import InvalidInput

AREAS = {"Polygon", "MultiPolygon"}
POINTS = {"Point", "MultiPoint"}
DEFAULT_SIDE_M = 4.0  # median crown side of DeepForest's training crowns (docs: shared data brief)


@dataclass(frozen=True)
class Objects:
    path: Path
    sha256: str
    crs: CRS
    geometries: np.ndarray  # shapely polygons or points, in ``crs``
    sides_m: np.ndarray  # float [n]: a point's box side in metres; NaN for polygons (their own extent)
    features_read: int
    size_rule: str
    kind: str  # what the objects are: the --label-field's one value, else "object"


def read_objects(path: Path, size_field: str | None, default_side_m: float, label_field: str | None = None
                 ) -> Objects:
    meta, wkb, values, fields = read_vector(path)
    kind = object_kind(path, fields, values, label_field)
    geoms = shapely.from_wkb(wkb)
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    types = Counter(g.geom_type for g in geoms[keep])
    bad = {t: n for t, n in types.items() if t not in AREAS | POINTS}
    if bad or not keep.any():
        listed = ", ".join(f"{n} {t}" for t, n in sorted(bad.items())) or "no usable geometry"
        raise InvalidInput(f"{path}: detection needs boxes/polygons or points, but the file has {listed}")
    sides = np.full(len(geoms), np.nan)
    rule = "bounding box of each polygon"
    is_point = np.array([g is not None and g.geom_type in POINTS for g in geoms], bool)
    if is_point.any():
        if size_field is not None:
            if size_field not in fields:
                raise InvalidInput(f"{path}: no field {size_field!r} (fields: {', '.join(fields) or 'none'})")
            raw = values[fields.index(size_field)]
            try:
                sides[is_point] = np.asarray([float(v) for v in raw[is_point]])
            except (TypeError, ValueError):
                raise InvalidInput(f"{path}: field {size_field!r} must hold box sides in m") from None
            rule = f"points: squares of field {size_field!r} metres"
        else:
            sides[is_point] = default_side_m
            rule = f"points: squares of {default_side_m:g} m (no --size-field)"
        if not (np.isfinite(sides[is_point]) & (sides[is_point] > 0)).all():
            raise InvalidInput(f"{path}: every point needs a positive box side (m)")
        if not is_point[keep].all():
            rule = "bounding box of each polygon; " + rule
    return Objects(path, sha256_of(path), CRS.from_user_input(meta["crs"]), geoms[keep], sides[keep],
                   len(wkb), rule, kind)


def object_kind(path: Path, fields: list[str], values: list[np.ndarray], field: str | None) -> str:
    """The name of the objects: the one value of ``field``. A detector here learns one kind of object (its
    classes are size bins), so a field naming several kinds is refused rather than silently merged."""
    if field is None:
        return "object"
    if field not in fields:
        raise InvalidInput(f"{path}: no field {field!r} (fields: {', '.join(fields) or 'none'})")
    kinds = sorted({str(v).strip() for v in values[fields.index(field)] if v is not None and str(v).strip()})
    if len(kinds) > 1:
        shown = ", ".join(repr(k) for k in kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        raise InvalidInput(f"{path}: field {field!r} names {len(kinds)} kinds of object ({shown}); detection "
                           "learns one kind at a time: keep one kind's features, or drop --label-field")
    return kinds[0].replace(" ", "_") if kinds else "object"


def as_labels(objects: Objects) -> Labels:
    """The objects as one-class ``Labels``: what ``user_labels.read_scenes`` needs to find and read the
    windows of the scenes they lie on (their rasterised classes are not used)."""
    return Labels(objects.path, objects.sha256, "", objects.crs, objects.geometries,
                  np.zeros(len(objects.geometries), np.int16), ["object"], None, objects.features_read)


def scene_boxes(objects: Objects, read: SceneRead) -> np.ndarray:
    """[n, 4] boxes (x0, y0, x1, y1) in the model pixels of the scene window ``read``, for every object
    whose centre lies in the window."""
    geoms = to_crs(objects.geometries, objects.crs, CRS.from_user_input(read.crs))
    bounds = shapely.bounds(geoms)  # x0, y0, x1, y1 in scene CRS units
    units = CRS.from_user_input(read.crs).axis_info[0].unit_conversion_factor  # metres per CRS unit
    half = np.where(np.isnan(objects.sides_m), 0.0, objects.sides_m / 2 / units)
    bounds = bounds + np.column_stack([-half, -half, half, half])
    inverse: Affine = ~read.transform
    c0, r0 = inverse * (bounds[:, 0], bounds[:, 3])
    c1, r1 = inverse * (bounds[:, 2], bounds[:, 1])
    boxes = np.column_stack([np.minimum(c0, c1), np.minimum(r0, r1), np.maximum(c0, c1), np.maximum(r0, r1)])
    h, w = read.scene.pixels.shape[:2]
    mx, my = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
    return boxes[inside]
