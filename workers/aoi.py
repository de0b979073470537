"""The processing extent: an area of interest (AOI) that limits a job to part of its scene.

An AOI is GeoJSON — a Polygon or MultiPolygon geometry, a Feature holding one, or a FeatureCollection of
them — in EPSG:4326 (RFC 7946) unless it carries an old-style ``crs`` member naming another CRS. The CLI
takes a file (``--aoi FILE``: GeoJSON, or a polygon layer of any vector format GDAL reads, in its own
CRS), the API the object itself (field ``aoi``).

How it acts: ``Scene.read`` treats model pixels whose centre lies outside the AOI as no data, exactly as it
treats the scene's own nodata. So chips entirely outside have no valid pixel and are skipped before inference
(``pipeline.has_data``); output cells with no valid pixel are no data in every output; the input check counts
only pixels inside. The AOI is rasterised per window read (a chip row at most), never for the whole scene, so
memory stays bounded by the scene's width; windows wholly outside or inside its outline need no rasterising.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import box, mapping, shape

from spikescan.errors import InvalidInput, option

MAX_VERTICES = 200_000  # an outline, not a land-cover map: more than this is refused
_POLYGONS = ("Polygon", "MultiPolygon")
GEOGRAPHIC = CRS.from_epsg(4326)


@dataclass(frozen=True)
class Aoi:
    """The AOI as given: polygons (GeoJSON geometries) and their CRS."""

    geometries: tuple[dict[str, Any], ...]
    crs: CRS

    def to_json(self) -> str:
        """As the service keeps it in the job record (a FeatureCollection with its CRS named)."""
        return json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": self.crs.to_string()}},
                "features": [{"type": "Feature", "properties": {}, "geometry": g} for g in self.geometries],
            }
        )

    def on_grid(self, crs: CRS, transform: Affine, width: int, height: int, name: str) -> AoiMask:
        """The AOI in the scene's CRS over its ``width`` x ``height`` grid; refused if it misses the scene.

        Cut to the scene's bounds in the AOI's own CRS first: only the part that matters is reprojected, so
        a continent-sized outline, or one partly beyond the scene CRS's area of use, still works."""
        left, top = transform * (0, 0)
        right, bottom = transform * (width, height)
        scene = box(left, bottom, right, top)
        outline = shapely.make_valid(shapely.union_all([shape(g) for g in self.geometries]))
        try:
            if crs != self.crs:
                near = box(*transform_bounds(crs, self.crs, left, bottom, right, top, densify_pts=21))
                part = outline.intersection(near.buffer(near.length * 0.01))
                if part.is_empty:
                    raise self._misses(name, scene, crs)
                outline = shape(transform_geom(self.crs, crs, mapping(part)))
        except (RasterioError, CPLE_BaseError) as exc:
            raise InvalidInput(
                f"{option('aoi')}: cannot be expressed in the CRS of {name} ({crs.to_string()}): {exc}"
            ) from None
        outline = shapely.make_valid(outline).intersection(scene)
        if not outline.area > 0:
            raise self._misses(name, scene, crs)
        return AoiMask(outline, transform)

    @staticmethod
    def _misses(name: str, scene: shapely.Geometry, crs: CRS) -> InvalidInput:
        b = ", ".join(f"{v:.6g}" for v in scene.bounds)
        return InvalidInput(
            f"{option('aoi')}: the area of interest does not overlap {name} (scene bounds {b} in "
            f"{crs.to_string()}; is the AOI in the CRS it says, EPSG:4326 lon/lat by default?)"
        )


class AoiMask:
    """Which model pixels of a window lie inside the AOI (pixel centres).

    Pure shapely on the pixel centres, not ``rasterio.features.geometry_mask``: that one builds a GDAL MEM
    dataset, and rasterio silences a warning there with ``warnings.catch_warnings``, which is not
    thread-safe; with the reader thread masking while the write-behind thread vectorises regions, the
    warning escaped now and then (and failed a run under ``-W error``)."""

    def __init__(self, outline: shapely.Geometry, transform: Affine) -> None:
        self.outline = outline
        shapely.prepare(outline)
        self._transform = transform

    def inside(self, col_off: int, row_off: int, width: int, height: int) -> np.ndarray:
        """[height, width] bool for the window of model pixels at (col_off, row_off)."""
        t = self._transform * Affine.translation(col_off, row_off)
        left, top = t * (0, 0)
        right, bottom = t * (width, height)
        window = box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        if not shapely.intersects(self.outline, window):
            return np.zeros((height, width), bool)
        if shapely.contains(self.outline, window):
            return np.ones((height, width), bool)
        cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        xs, ys = t * (cols.ravel(), rows.ravel())
        return shapely.contains_xy(self.outline, xs, ys).reshape(height, width)


def parse(data: Any, source: str) -> Aoi:
    """An ``Aoi`` from parsed GeoJSON; ``source`` names it in errors (a file name, or the API field)."""
    if not isinstance(data, dict) or "type" not in data:
        raise InvalidInput(f"{source}: not a GeoJSON object (a Polygon, Feature or FeatureCollection)")
    crs = _crs(data, source)
    geometries = tuple(_polygons(data, source))
    if not geometries:
        raise InvalidInput(f"{source}: holds no polygon")
    vertices = sum(_count(g["coordinates"]) for g in geometries)
    if vertices > MAX_VERTICES:
        raise InvalidInput(f"{source}: {vertices} vertices, more than {MAX_VERTICES}; simplify the outline")
    for g in geometries:
        try:
            geom = shape(g)
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as exc:
            raise InvalidInput(f"{source}: a {g.get('type')} with bad coordinates ({exc})") from None
        if geom.is_empty or geom.area <= 0:
            raise InvalidInput(f"{source}: a {g['type']} with no area")
    return Aoi(geometries, crs)


def from_text(text: str, source: str) -> Aoi:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{source}: not GeoJSON ({exc})") from None
    return parse(data, source)


def load(path: str | Path) -> Aoi:
    """``--aoi FILE``: GeoJSON, or any polygon layer GDAL reads (GeoPackage, Shapefile, FlatGeobuf, ...)
    through pyogrio, in its own CRS."""
    p = Path(path)
    source = f"{option('aoi')} {p}"
    if p.suffix.lower() not in (".geojson", ".json"):
        return parse(_vector_file(p, source), source)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{source}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{source}: not a GeoJSON text file") from None
    return from_text(text, source)


def _vector_file(p: Path, source: str) -> dict[str, Any]:
    """A vector file's first layer as a GeoJSON FeatureCollection naming its CRS (what ``parse`` takes)."""
    import pyogrio.raw
    from pyogrio.errors import DataLayerError, DataSourceError

    if not p.exists():
        raise InvalidInput(f"{source}: no such file")
    try:
        meta, _fids, geometry, _fields = pyogrio.raw.read(p, read_geometry=True, columns=[])
    except (DataSourceError, DataLayerError) as exc:
        raise InvalidInput(f"{source}: not a vector file GDAL reads ({str(exc).splitlines()[0]})") from None
    if not meta.get("crs"):
        raise InvalidInput(f"{source}: the layer has no CRS; give it one (e.g. ogr2ogr -a_srs EPSG:4326)")
    shapes = [shapely.from_wkb(g) for g in geometry if g is not None]
    features = [{"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(g))}
                for g in shapes]
    return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": meta["crs"]}},
            "features": features}


def _crs(data: dict[str, Any], source: str) -> CRS:
    named = data.get("crs")
    if named is None:
        return GEOGRAPHIC
    try:
        return CRS.from_user_input(named["properties"]["name"])
    except (KeyError, TypeError, CRSError):
        raise InvalidInput(f"{source}: unreadable 'crs' member {named!r} (give e.g. EPSG:32617)") from None


def _polygons(data: dict[str, Any], source: str) -> Iterable[dict[str, Any]]:
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise InvalidInput(f"{source}: a FeatureCollection needs a 'features' list")
        for f in features:
            yield from _polygons(f, source)
    elif kind == "Feature":
        if not isinstance(data.get("geometry"), dict):
            raise InvalidInput(f"{source}: a Feature with no geometry")
        yield from _polygons(data["geometry"], source)
    elif kind in _POLYGONS:
        if not isinstance(data.get("coordinates"), list):
            raise InvalidInput(f"{source}: a {kind} needs 'coordinates'")
        yield {"type": kind, "coordinates": data["coordinates"]}
    else:
        raise InvalidInput(f"{source}: a {kind!r} is no area; give a Polygon or MultiPolygon")


def _count(coords: Any) -> int:
    if isinstance(coords, list) and coords and isinstance(coords[0], (int, float)):
        return 1
    return sum(_count(c) for c in coords) if isinstance(coords, list) else 0
