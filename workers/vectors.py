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
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

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
        for feature in self._output.feed(strip.y0, strip.scores, strip.hits > 0):
            self._write(feature)

    def finish(self) -> int:
        """Flush what is still pending, close the file and move it into place; the number of features."""
        for feature in self._output.close():
            self._write(feature)
        self._fh.write("\n]}\n")
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.count

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def _write(self, feature: CellFeature) -> None:
        self._fh.write((",\n" if self.count else "") + json.dumps(self.geojson(feature)))
        self.count += 1

    def geojson(self, feature: CellFeature) -> dict[str, object]:
        lonlat = self._lonlat(feature.geometry)
        area, _ = _GEOD.geometry_area_perimeter(lonlat)
        return {
            "type": "Feature",
            "bbox": [round(v, 9) for v in lonlat.bounds],
            "geometry": mapping(lonlat),
            "properties": {
                "class": feature.class_name,
                "score": round(float(feature.score), 4),
                "model": self._model_id,
                "area_m2": round(abs(area), 3),
                **feature.properties,
            },
        }

    def _lonlat(self, geometry: BaseGeometry) -> BaseGeometry:
        dense = shapely.segmentize(geometry, DENSIFY_CELLS)
        a = self._transform

        def to_lonlat(xy: np.ndarray) -> np.ndarray:
            x = a.a * xy[:, 0] + a.b * xy[:, 1] + a.c
            y = a.d * xy[:, 0] + a.e * xy[:, 1] + a.f
            lon, lat = self._to_lonlat.transform(x, y)
            return np.column_stack([lon, lat])

        out = shapely.transform(dense, to_lonlat)
        return orient(out, sign=1.0) if out.geom_type == "Polygon" else out
