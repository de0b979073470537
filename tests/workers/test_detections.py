"""Detections: union of fragments across strips, and RFC 7946 GeoJSON on real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from jsonschema import Draft7Validator
from pyproj import Transformer
from pystac.validation.local_validator import get_local_schema_cache
from scipy import ndimage
from shapely.geometry import Polygon, shape

from workers import detections
from workers.detections import find_regions

FEATURE_SCHEMA = "https://geojson.org/schema/Feature.json"


def _write(path: Path, array: np.ndarray) -> Path:
    profile = {
        "driver": "GTiff",
        "width": array.shape[-1],
        "height": array.shape[-2],
        "count": array.shape[0],
        "dtype": "uint8",
        "crs": "EPSG:32617",
        "transform": Affine(1, 0, 400000, 0, -1, 3300000),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
    return path


def test_regions_spanning_strips_are_merged_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small strips so regions cross many strip boundaries, including U shapes joined only at the bottom.
    monkeypatch.setattr(detections, "STRIP_ROWS", 7)
    rng = np.random.default_rng(3)
    classes = (ndimage.uniform_filter(rng.random((90, 70)), 5) > 0.52).astype(np.uint8)
    classes[5:60, 10] = 1
    classes[5:60, 14] = 1
    classes[60, 10:15] = 1
    classes[5:60, 11:14] = 0
    scores = rng.integers(0, 256, size=(2, 90, 70)).astype(np.uint8)
    cls_tif, sc_tif = _write(tmp_path / "c.tif", classes[None]), _write(tmp_path / "s.tif", scores)

    found = sorted(
        (r.row0, r.row1, r.col0, r.col1, r.cells, round(r.score, 9)) for r in find_regions(cls_tif, sc_tif, 1)
    )
    labels, n = ndimage.label(classes == 1)
    expected = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        cells = labels == k
        expected.append(
            (
                sl[0].start,
                sl[0].stop,
                sl[1].start,
                sl[1].stop,
                int(cells.sum()),
                round(float(scores[1][cells].mean() / 255), 9),
            )
        )
    assert n > 3 and found == sorted(expected)


@pytest.mark.parametrize("run", ["osbs_run", "landsat_run"])
def test_geojson_is_rfc7946(run: str, request: pytest.FixtureRequest) -> None:
    out, rep = request.getfixturevalue(run)
    doc: dict[str, Any] = json.loads((out / "detections.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == rep["detections"] > 0
    schema = Draft7Validator(get_local_schema_cache()[FEATURE_SCHEMA])
    with rasterio.open(rep["scene"]) as src:
        to_lonlat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        b = src.bounds
        lon, lat = to_lonlat.transform([b.left, b.right, b.right, b.left], [b.top, b.top, b.bottom, b.bottom])
    # Output cells may run past the scene's right/bottom edge by less than one cell.
    footprint = Polygon(zip(lon, lat, strict=True)).buffer(1e-3)
    for f in doc["features"]:
        assert not list(schema.iter_errors(f))
        geom = shape(f["geometry"])
        ring = f["geometry"]["coordinates"][0]
        assert geom.is_valid and ring[0] == ring[-1]
        assert geom.exterior.is_ccw  # RFC 7946 right-hand rule
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
        assert footprint.contains(geom)  # lon/lat order: swapped axes would land far outside
        p = f["properties"]
        assert p["class"] in ("crown", "forest", "water") and 0 <= p["score"] <= 1
        assert p["model"] == rep["model"]["id"] and p["area_m2"] > 0


def test_area_is_geodesic_and_matches_the_cells(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = osbs_run
    with rasterio.open(out / "classes.tif") as ds:
        cell_area = ds.res[0] * ds.res[1]
    for f in json.loads((out / "detections.geojson").read_text())["features"]:
        c0, r0, c1, r1 = f["properties"]["cell_bbox"]
        # UTM near its central meridian: grid area and ellipsoidal area agree to well under 1 %.
        assert f["properties"]["area_m2"] == pytest.approx((c1 - c0) * (r1 - r0) * cell_area, rel=0.01)
