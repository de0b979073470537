"""``detections.gpkg`` and ``detections.fgb``: the finished ``detections.geojson`` in the formats GIS desktops
and web clients open fastest, written through pyogrio (GDAL/OGR's vectorised reader and writer).

They are made from the finished GeoJSON file, not from the rasters, streamed as Arrow record batches
(``open_arrow`` into ``write_arrow``): the layer of a large scene (hundreds of thousands of crowns, or
land-cover polygons of many vertices) is never held whole, as the mosaic's whole-scene arrays are not. Every
property is a plain column (text, integer or real), so exporting on to Shapefile or another GeoPackage keeps
them. An empty layer still has the columns ``class``, ``score``, ``model``, ``area_m2``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyogrio.raw

LAYER = "detections"
# What every feature has (workers.vectors.VectorWriter), so an empty layer has the same columns.
BASE_FIELDS: dict[str, type] = {"class": str, "score": float, "model": str, "area_m2": float}
FORMATS = {"detections.gpkg": "GPKG", "detections.fgb": "FlatGeobuf"}
BATCH = 4096  # features per Arrow record batch: a few MB at most, whatever the layer's size


def export(geojson: Path, out_dir: Path) -> dict[str, Path]:
    """Write every format of ``FORMATS`` beside ``geojson``; {file name: path}. Each file is written under a
    temporary name and moved into place, so a reader never sees half a layer."""
    empty = pyogrio.read_info(geojson)["features"] == 0
    written = {}
    for name, driver in FORMATS.items():
        path = out_dir / name
        tmp = out_dir / f".tmp.{name}"
        tmp.unlink(missing_ok=True)
        if empty:
            _write_empty(tmp, driver)
        else:
            with pyogrio.raw.open_arrow(geojson, batch_size=BATCH) as (meta, stream):
                pyogrio.raw.write_arrow(
                    stream,
                    tmp,
                    driver=driver,
                    layer=LAYER,
                    geometry_name=meta["geometry_name"] or "wkb_geometry",
                    geometry_type=meta["geometry_type"],
                    crs="EPSG:4326",
                    encoding="UTF-8",
                )
        os.replace(tmp, path)
        written[name] = path
    return written


def _write_empty(path: Path, driver: str) -> None:
    """An empty layer with the typed base columns (a GeoJSON with no features has none to stream)."""
    columns = [np.array([], dtype=object if kind is str else np.float64) for kind in BASE_FIELDS.values()]
    pyogrio.raw.write(path, np.array([], dtype=object), columns, list(BASE_FIELDS), crs="EPSG:4326",
                      driver=driver, layer=LAYER, geometry_type="Polygon", encoding="UTF-8")
