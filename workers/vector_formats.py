"""``detections.gpkg`` and ``detections.fgb``: the finished ``detections.geojson`` in the formats GIS desktops
and web clients open fastest, written through pyogrio (GDAL/OGR's vectorised reader and writer).

They are made from the finished GeoJSON file, not from the rasters: the vector layer is small (one feature
per object or region), so reading it whole costs little while the mosaic's whole-scene arrays are never held.
Every property is a plain column — text, integer or real — so exporting on to Shapefile or another GeoPackage
keeps them; a list or object property (none today) would be written as its JSON text rather than dropped.
An empty layer still has the columns ``class``, ``score``, ``model``, ``area_m2``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyogrio.raw

LAYER = "detections"
# What every feature has (workers.vectors.VectorWriter), so an empty layer has the same columns.
BASE_FIELDS: dict[str, type] = {"class": str, "score": float, "model": str, "area_m2": float}
FORMATS = {"detections.gpkg": "GPKG", "detections.fgb": "FlatGeobuf"}


def export(geojson: Path, out_dir: Path) -> dict[str, Path]:
    """Write every format of ``FORMATS`` beside ``geojson``; {file name: path}. Each file is written under a
    temporary name and moved into place, so a reader never sees half a layer."""
    meta, _fids, geometry, field_data = pyogrio.raw.read(geojson)
    fields, columns = _columns(list(meta["fields"]), field_data, len(geometry))
    geometry_type = meta["geometry_type"] if len(geometry) else "Polygon"
    written = {}
    for name, driver in FORMATS.items():
        path = out_dir / name
        tmp = out_dir / f".tmp.{name}"
        tmp.unlink(missing_ok=True)
        pyogrio.raw.write(
            tmp,
            geometry,
            columns,
            fields,
            crs="EPSG:4326",
            driver=driver,
            layer=LAYER,
            geometry_type=geometry_type,
            encoding="UTF-8",
        )
        os.replace(tmp, path)
        written[name] = path
    return written


def _columns(
    names: list[str], data: list[np.ndarray], n: int
) -> tuple[list[str], list[np.ndarray]]:
    """The columns to write: the GeoJSON's, with any list/object values as JSON text, and the base fields
    (typed) when the layer is empty."""
    out = {name: _flat(col) for name, col in zip(names, data, strict=True)}
    for name, kind in BASE_FIELDS.items():
        if name not in out and n == 0:
            out[name] = np.array([], dtype=object if kind is str else np.float64)
    return list(out), list(out.values())


def _flat(column: np.ndarray) -> np.ndarray:
    if column.dtype != object or all(v is None or isinstance(v, str) for v in column):
        return column
    return np.array(
        [v if v is None or isinstance(v, str) else json.dumps(_plain(v)) for v in column], dtype=object
    )


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value
