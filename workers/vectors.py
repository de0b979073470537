"""``detections.geojson`` written while the mosaic streams: the task's vector output as RFC 7946 features.

``VectorWriter`` is a strip sink beside ``workers.cog.LayerWriter``: each blended strip goes to the model's
task plug-in (``models.tasks``: boxes at score peaks for a detector, class regions for a segmenter), and every
feature the task declares final is written at once — so the vector layer costs no second pass over the
rasters and memory holds only what crosses the current strip. Geometries arrive in output-cell coordinates;
here they are mapped through the output grid's transform to the scene's CRS, then to EPSG:4326 (lon, lat),
exterior rings counter-clockwise. ``area_m2`` is the geometry's own geodesic area on the WGS84 ellipsoid,
after densifying long edges so that a straight edge in the scene's CRS is followed closely.

The file is written under a temporary name and renamed when complete: a reader never sees half a layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.crs import CRS

from models.tasks import CellFeature, Footprint, Task, VectorParams
from workers.mosaic import Strip

_GEOD = Geod(ellps="WGS84")
# Edges longer than this many cells are split before reprojection, so the geodesic area follows the scene's
# straight edges (a 10 km edge in UTM bends measurably in lon/lat).
DENSIFY_CELLS = 64.0


class VectorWriter:
    def __init__(self, path: Path, task: Task, footprint: Footprint, transform: Affine, crs: CRS,
                 model_id: str, params: VectorParams | None = None) -> None:
        self.path = path
        self.count = 0
        self._output = task.vector_output(footprint, params)
        self._transform = transform
        self._to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        self._model_id = model_id
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._fh = self._tmp.open("w")
        self._fh.write('{"type": "FeatureCollection", "features": [\n')

    def write_strip(self, strip: Strip) -> None:
        self._write_all(list(self._output.feed(strip.y0, strip.scores, strip.hits > 0)))

    def finish(self) -> int:
        """Flush what is still pending, close the file and move it into place; the number of features."""
        self._write_all(list(self._output.close()))
        self._fh.write("\n]}\n")
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.count

    def abort(self) -> None:
        try:
            if not self._fh.closed:
                self._fh.close()
        except OSError:
            pass  # closing flushes the buffer, and a full disk fails that too: the file goes all the same
        finally:
            self._tmp.unlink(missing_ok=True)

    def _write_all(self, features: list[CellFeature]) -> None:
        """A strip's features at once: one reprojection of all their vertices, and orientation, bounds and
        geometry JSON vectorised; feature by feature these steps cost several times more."""
        if not features:
            return
        lonlat = self._lonlat(np.array([f.geometry for f in features], dtype=object))
        bounds = shapely.bounds(lonlat)
        geometries = shapely.to_geojson(lonlat)
        areas = geodesic_areas(lonlat)
        parts = []
        for feature, area, box, geometry in zip(features, areas, bounds, geometries, strict=True):
            properties = {
                "class": feature.class_name,
                "score": round(float(feature.score), 4),
                "model": self._model_id,
                "area_m2": round(abs(area), 3),
                **feature.properties,
            }
            bbox = json.dumps([round(float(v), 9) for v in box])
            parts.append(f'{{"type": "Feature", "bbox": {bbox}, "geometry": {geometry}, '
                         f'"properties": {json.dumps(properties)}}}')
        self._fh.write((",\n" if self.count else "") + ",\n".join(parts))
        self.count += len(parts)

    def _lonlat(self, geometries: np.ndarray) -> np.ndarray:
        """Cell coordinates -> lon/lat, long edges densified first; exterior rings counter-clockwise."""
        # Only a geometry whose bounding box's diagonal exceeds the limit can have an edge that does.
        x0, y0, x1, y1 = shapely.bounds(geometries).T
        long = np.hypot(x1 - x0, y1 - y0) > DENSIFY_CELLS
        dense = geometries.copy()
        if long.any():
            dense[long] = shapely.segmentize(geometries[long], DENSIFY_CELLS)
        a = self._transform

        def to_lonlat(xy: np.ndarray) -> np.ndarray:
            x = a.a * xy[:, 0] + a.b * xy[:, 1] + a.c
            y = a.d * xy[:, 0] + a.e * xy[:, 1] + a.f
            lon, lat = self._to_lonlat.transform(x, y)
            return np.column_stack([lon, lat])

        return shapely.orient_polygons(shapely.transform(dense, to_lonlat), exterior_cw=False)


def geodesic_areas(lonlat: np.ndarray) -> np.ndarray:
    """Signed geodesic area of each (multi)polygon on WGS84: the sum of its rings' areas, exterior rings
    counter-clockwise (positive), holes clockwise — what ``Geod.geometry_area_perimeter`` sums, in the same
    order, without its per-vertex Python iteration."""
    rings, owner = shapely.get_rings(lonlat, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    ends = np.searchsorted(ring_of, np.arange(1, len(rings) + 1))
    areas = np.zeros(len(lonlat))
    start = 0
    for ring, end in enumerate(ends):
        area, _ = _GEOD.polygon_area_perimeter(xy[start:end, 0], xy[start:end, 1])
        areas[owner[ring]] += area
        start = end
    return areas
