"""detections.geojson: RFC 7946 features from the task plug-ins, written while the mosaic streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from jsonschema import Draft7Validator
from pyproj import Geod, Transformer
from pystac.validation.local_validator import get_local_schema_cache
from shapely import box as shapely_box
from shapely.geometry import Polygon, shape
from shapely.ops import transform as reproject

FEATURE_SCHEMA = "https://geojson.org/schema/Feature.json"


def _features(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "detections.geojson").read_text())["features"]


def _in_scene(feature: dict[str, Any], crs: object) -> Polygon:
    to_scene = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return reproject(to_scene.transform, shape(feature["geometry"]))


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
    footprint = Polygon(zip(lon, lat, strict=True)).buffer(1e-7)
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
        assert all(not isinstance(v, list | dict) for v in p.values())  # flat: Shapefile export keeps them


def test_boxes_lie_inside_the_scene_and_do_not_overlap(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, rep = osbs_run
    with rasterio.open(rep["scene"]) as src:
        scene = shapely_box(*src.bounds)
        crs = src.crs
    boxes = [_in_scene(f, crs) for f in _features(out)]
    assert boxes
    for b in boxes:
        assert scene.buffer(1e-6).contains(b)  # clipped to the scene, not merely to the output grid
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            inter = a.intersection(b).area
            assert inter / (a.area + b.area - inter) <= 0.3 + 1e-6  # the card's nms_iou


def test_area_is_the_geometry_s_own_geodesic_area(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, rep = osbs_run
    geod = Geod(ellps="WGS84")
    with rasterio.open(rep["scene"]) as src:
        crs = src.crs
    for f in _features(out):
        area, _ = geod.geometry_area_perimeter(shape(f["geometry"]))
        assert f["properties"]["area_m2"] == pytest.approx(abs(area), abs=1e-3)
        # UTM near its central meridian: grid area and ellipsoidal area agree to well under 1 %.
        assert f["properties"]["area_m2"] == pytest.approx(_in_scene(f, crs).area, rel=0.01)


def test_land_cover_regions_sum_to_the_class_raster(landsat_run: tuple[Path, dict[str, Any]]) -> None:
    """Polygons, not boxes: per target class, the features' areas add up to the class raster's cells."""
    out, rep = landsat_run
    features = _features(out)
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
        names = json.loads(ds.tags()["CLASSES"])
        cell_area = ds.res[0] * ds.res[1]
        crs = ds.crs
    seen = set()
    for name in {f["properties"]["class"] for f in features}:
        seen.add(name)
        cells = int((classes == names.index(name)).sum())
        polygons = [_in_scene(f, crs) for f in features if f["properties"]["class"] == name]
        assert sum(p.area for p in polygons) == pytest.approx(cells * cell_area, rel=1e-6)
        geodesic = sum(f["properties"]["area_m2"] for f in features if f["properties"]["class"] == name)
        assert geodesic == pytest.approx(cells * cell_area, rel=0.01)
    assert seen
    assert any(len(shape(f["geometry"]).exterior.coords) > 5 for f in features)  # regions, not boxes


def test_the_vector_layer_is_written_whole_or_not_at_all(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = osbs_run
    assert not list(out.glob(".*.tmp"))
    assert np.isfinite([f["properties"]["score"] for f in _features(out)]).all()
