"""The processing extent (``workers.aoi``): chips outside the AOI are skipped, outputs are no data outside it.

On the real Landsat scene (LCC, 28.5 m) with an AOI given in lon/lat, through the whole in-process pipeline
and the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_geom

from models.package import ModelPackage
from spikescan.errors import InvalidInput
from workers import aoi, pipeline


def _polygon_lonlat(scene: Path, cols: tuple[float, float], rows: tuple[float, float]) -> dict[str, Any]:
    """A rectangle of the scene's pixel grid (fractions of width and height) as a lon/lat Polygon."""
    with rasterio.open(scene) as src:
        t, crs, w, h = src.transform, src.crs, src.width, src.height
    (c0, c1), (r0, r1) = cols, rows
    ring = [t * (c * w, r * h) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))]
    return transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})  # type: ignore[no-any-return]


def _band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _predict(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", *args, "--quiet"],
        capture_output=True, text=True, timeout=300,
    )


def test_geojson_forms_parse_and_non_areas_are_refused_by_name() -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    feature = {"type": "Feature", "properties": {}, "geometry": square}
    for data in (square, feature, {"type": "FeatureCollection", "features": [feature, feature]}):
        parsed = aoi.parse(data, "test")
        assert parsed.crs == aoi.GEOGRAPHIC and parsed.geometries[0] == square
    utm = aoi.parse({**feature, "crs": {"type": "name", "properties": {"name": "EPSG:32617"}}}, "t")
    assert utm.crs.to_epsg() == 32617
    assert aoi.from_text(utm.to_json(), "t") == utm  # what the service keeps reads back the same
    for bad, words in (
        ({"type": "Point", "coordinates": [0, 0]}, "'Point' is no area"),
        ({"type": "FeatureCollection", "features": []}, "holds no polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "no area"),
        ([1, 2], "not a GeoJSON object"),
    ):
        with pytest.raises(InvalidInput, match=words):
            aoi.parse(bad, "test")


def test_the_mask_is_rasterised_per_window_and_agrees_with_pixel_centres() -> None:
    square = {"type": "Polygon", "coordinates": [[[10, -10], [20, -10], [20, -20], [10, -20], [10, -10]]]}
    mask = aoi.Aoi((square,), aoi.GEOGRAPHIC).on_grid(aoi.GEOGRAPHIC, Affine(1, 0, 0, 0, -1, 0), 40, 40, "s")
    inside = mask.inside(0, 0, 40, 40)
    assert inside.sum() == 100 and inside[10:20, 10:20].all()  # centres of rows/cols 10..19
    assert not mask.inside(25, 25, 10, 10).any() and mask.inside(12, 12, 5, 5).all()  # the two fast paths
    assert (mask.inside(5, 8, 20, 7) == inside[8:15, 5:25]).all()  # any window: the same pixels
    with pytest.raises(InvalidInput, match="does not overlap"):
        aoi.Aoi((square,), aoi.GEOGRAPHIC).on_grid(aoi.GEOGRAPHIC, Affine(1, 0, 50, 0, -1, 0), 40, 40, "s")


def test_chips_outside_are_skipped_and_outputs_are_nodata_outside(
    landsat_tif: Path, landsat_model: ModelPackage, tmp_path: Path
) -> None:
    area = aoi.parse(_polygon_lonlat(landsat_tif, (0.1, 0.45), (0.2, 0.6)), "test")
    rep = pipeline.run(landsat_tif, landsat_model, tmp_path, aoi=area)
    chips = rep["chips"]
    # About 14 % of the scene is inside: most chips never reach the backend.
    assert chips["skipped"] > 0.6 * chips["total"] and chips["processed"] < 0.35 * chips["total"], chips
    with rasterio.open(tmp_path / "classes.tif") as src:
        classes, t, crs = src.read(1), src.transform, src.crs
    rows, cols = np.indices(classes.shape)
    with rasterio.open(landsat_tif) as scene:
        assert crs == scene.crs
        # Each output cell's centre as a fraction of the scene's width and height.
        sc, sr = ~scene.transform * (t * (cols + 0.5, rows + 0.5))
        fc, fr = sc / scene.width, sr / scene.height
    well_outside = (fc < 0.05) | (fc > 0.5) | (fr < 0.15) | (fr > 0.65)
    well_inside = (fc > 0.15) & (fc < 0.4) & (fr > 0.25) & (fr < 0.55)
    assert (classes[well_outside] == 255).all(), "a class outside the AOI"
    assert (classes[well_inside] != 255).mean() > 0.95  # inside: the scene's data (a few nodata pixels)
    assert rep["inputs"]["aoi_bounds"] is not None


def test_a_geopackage_aoi_in_the_scenes_crs_acts_as_the_same_geojson(
    landsat_tif: Path, landsat_model: ModelPackage, tmp_path: Path
) -> None:
    """ArcGIS/QGIS users keep AOIs as GeoPackages in the project's CRS: read through pyogrio, reprojected like
    a GeoJSON's, the same cells are kept."""
    import pyogrio.raw
    import shapely
    from shapely.geometry import shape

    lonlat = _polygon_lonlat(landsat_tif, (0.1, 0.45), (0.2, 0.6))
    with rasterio.open(landsat_tif) as scene:
        projected = shape(transform_geom("EPSG:4326", scene.crs, lonlat))
        crs = scene.crs.to_string()
    gpkg = tmp_path / "aoi.gpkg"
    pyogrio.raw.write(gpkg, np.array([shapely.to_wkb(projected)], dtype=object), [], [], crs=crs,
                      driver="GPKG", geometry_type="Polygon")
    from_gpkg = aoi.load(gpkg)
    from_geojson = aoi.parse(lonlat, "test")
    a = pipeline.run(landsat_tif, landsat_model, tmp_path / "gpkg", aoi=from_gpkg)
    b = pipeline.run(landsat_tif, landsat_model, tmp_path / "geojson", aoi=from_geojson)
    assert a["chips"] == b["chips"] and a["chips"]["skipped"] > 0
    cx, cy = (_band(tmp_path / d / "classes.tif") for d in ("gpkg", "geojson"))
    assert (cx != cy).mean() < 0.005, (cx != cy).mean()  # at most the odd edge cell of a reprojected outline


def test_cli_refuses_an_aoi_that_misses_the_scene_or_is_no_geojson(
    landsat_tif: Path, landsat_model: ModelPackage, tmp_path: Path
) -> None:
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}))
    junk = tmp_path / "aoi.gpkg"
    junk.write_bytes(b"SQLite format 3\x00\xff\xfe")
    for path, words in ((far, "does not overlap"), (junk, "not a vector file GDAL reads")):
        r = _predict(str(landsat_tif), "--model", str(landsat_model.path), "--out", str(tmp_path / "o"),
                     "--aoi", str(path))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith("spikescan: error: --aoi") and words in lines[0], lines[0]
    assert not (tmp_path / "o" / "report.json").exists()
