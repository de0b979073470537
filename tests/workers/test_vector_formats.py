"""detections.gpkg and detections.fgb: the same features and properties as detections.geojson, readable by
OGR (``ogrinfo`` when installed), and exportable on to Shapefile without losing a property."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest

from workers.vector_formats import BASE_FIELDS, FORMATS, export


@pytest.mark.parametrize("run", ["osbs_run", "landsat_run"])  # boxes of a detector; regions of a segmenter
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_hold_the_geojsons_features(run: str, name: str, request: pytest.FixtureRequest) -> None:
    out, rep = request.getfixturevalue(run)
    fc = json.loads((out / "detections.geojson").read_text())
    meta, _, geometry, columns = pyogrio.raw.read(out / name)
    assert len(geometry) == len(fc["features"]) == rep["detections"] > 0
    assert meta["crs"] == "EPSG:4326"
    got = dict(zip(meta["fields"], columns, strict=True))
    assert set(BASE_FIELDS) <= set(got)
    keys = sorted(fc["features"][0]["properties"])
    # FlatGeobuf's spatial index orders features along a Hilbert curve: compare them as a multiset.
    expected = sorted(tuple(f["properties"][k] for k in keys) for f in fc["features"])
    written = sorted(zip(*(got[k].tolist() for k in keys), strict=True))
    assert written == expected


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's command-line tools are not installed")
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_ogrinfo_opens_them(name: str, osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, rep = osbs_run
    done = subprocess.run(
        ["ogrinfo", "-so", "-al", str(out / name)], capture_output=True, text=True, check=True
    )
    assert f"Feature Count: {rep['detections']}" in done.stdout
    assert "class: String" in done.stdout and "area_m2: Real" in done.stdout


def test_a_shapefile_export_keeps_every_property(
    osbs_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = osbs_run
    meta, _, geometry, columns = pyogrio.raw.read(out / "detections.gpkg")
    shp = tmp_path / "detections.shp"
    pyogrio.raw.write(shp, geometry, columns, list(meta["fields"]), crs=meta["crs"], driver="ESRI Shapefile",
                      geometry_type=meta["geometry_type"])
    back, _, _, back_columns = pyogrio.raw.read(shp)
    assert list(back["fields"]) == list(meta["fields"])
    for a, b in zip(columns, back_columns, strict=True):
        assert list(a) == pytest.approx(list(b)) if a.dtype != object else list(a) == list(b)


def test_an_empty_layer_keeps_its_columns(tmp_path: Path) -> None:
    (tmp_path / "detections.geojson").write_text('{"type": "FeatureCollection", "features": [\n\n]}\n')
    written = export(tmp_path / "detections.geojson", tmp_path)
    for path in written.values():
        meta, _, geometry, _ = pyogrio.raw.read(path)
        assert len(geometry) == 0 and set(BASE_FIELDS) <= set(meta["fields"])


def test_list_properties_become_json_text(tmp_path: Path) -> None:
    props = {"class": "tree", "score": 0.5, "model": "m", "area_m2": 0.0, "cell_bbox": [1, 2, 3, 4]}
    point = {"type": "Point", "coordinates": [1.0, 2.0]}
    feature = {"type": "Feature", "geometry": point, "properties": props}
    source = tmp_path / "detections.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    meta, _, _, columns = pyogrio.raw.read(export(source, tmp_path)["detections.gpkg"])
    got = dict(zip(meta["fields"], columns, strict=True))
    assert json.loads(got["cell_bbox"][0]) == [1, 2, 3, 4]
    assert isinstance(got["score"], np.ndarray) and got["score"][0] == 0.5
