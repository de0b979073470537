"""The bad-input corpus in process and on the command line: refused at open with one line naming the file and
the problem (exit status 2, nothing written), or — NaN pixels — accepted with those pixels as nodata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import InvalidScene, SceneTooLarge
from tests.bad_scenes import (
    NAN_BLOCK,
    cells_inside,
    claims_huge,
    jpeg_named_tif,
    nan_scene,
    retyped,
    tampered_copy,
)
from workers import pipeline
from workers.scene import open_scene


def _predict(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikescan: error: "), done.stderr
    return lines[0]


def test_a_header_claiming_a_trillion_pixels_is_refused_before_any_read(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    huge = claims_huge(osbs_tif, tmp_path / "huge.tif")
    assert huge.stat().st_size < 20_000
    with rasterio.open(huge) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (10**6, 10**6, 3, "uint8")
    with pytest.raises(SceneTooLarge, match=r"huge.tif: header claims 1,000,000 x 1,000,000 pixels") as err:
        open_scene(huge, rgb_model.card)
    assert "limit of 4e+10 (SPIKESCAN_MAX_SCENE_PIXELS)" in err.value.message


def test_the_pixel_cap_is_a_setting_with_an_exact_boundary(osbs_tif: Path, rgb_model: ModelPackage) -> None:
    with open_scene(osbs_tif, rgb_model.card, max_pixels=400 * 400) as scene:
        assert scene.source_shape == (400, 400)
    with pytest.raises(SceneTooLarge, match="OSBS_029.tif: header claims 400 x 400 pixels"):
        open_scene(osbs_tif, rgb_model.card, max_pixels=400 * 400 - 1)
    assert Settings().max_scene_pixels == 40_000_000_000


def test_cli_predict_refuses_the_huge_header_in_one_line(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    huge = claims_huge(osbs_tif, tmp_path / "huge.tif")
    out = tmp_path / "out"
    line = _one_line(_predict(str(huge), "--model", str(rgb_model.path), "--out", str(out)))
    assert "huge.tif: header claims 1,000,000 x 1,000,000 pixels" in line and "4e+10" in line
    assert not out.exists()


def test_cli_honours_spikescan_max_scene_pixels(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    env = {**os.environ, "SPIKESCAN_MAX_SCENE_PIXELS": "1000"}
    out = tmp_path / "out"
    line = _one_line(_predict(str(osbs_tif), "--model", str(rgb_model.path), "--out", str(out), env=env))
    assert "OSBS_029.tif: header claims 400 x 400 pixels" in line and "limit of 1e+03" in line
    assert not out.exists()


def test_empty_file_says_it_is_empty(osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InvalidScene, match=r"empty.tif: the file is empty \(0 bytes\)"):
        open_scene(empty, rgb_model.card)
    line = _one_line(_predict(str(empty), "--model", str(rgb_model.path), "--out", str(tmp_path / "o")))
    assert "empty.tif: the file is empty" in line


def test_a_jpeg_named_tif(osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path) -> None:
    photo = jpeg_named_tif(osbs_tif, tmp_path / "photo.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # exactly what it lacks
        with rasterio.open(photo) as src:
            assert src.driver == "JPEG"  # GDAL opens it: the refusal below is ours
    # From a remote caller only a GeoTIFF is opened at all.
    with pytest.raises(InvalidScene, match="photo.tif: not a GeoTIFF: the file is a JPEG image"):
        open_scene(photo, rgb_model.card, geotiff_only=True)
    # The CLI reads any raster GDAL reads; this one has no georeferencing, and the message says what it is.
    with pytest.raises(InvalidScene, match="photo.tif: not georeferenced") as err:
        open_scene(photo, rgb_model.card)
    assert "(the file is a JPEG image, not a GeoTIFF)" in err.value.message


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_pixels_are_refused_naming_the_type(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path, dtype: str
) -> None:
    path = retyped(osbs_tif, tmp_path / f"{dtype}.tif", dtype)
    with pytest.raises(InvalidScene, match=f"{dtype}.tif: pixel data type {dtype} is not supported"):
        open_scene(path, rgb_model.card)


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int16", "uint32", "int32", "int64", "float64"])
def test_real_pixel_types_stay_accepted(osbs_tif: Path, make_model, tmp_path: Path, dtype: str) -> None:  # type: ignore[no-untyped-def]
    native = make_model(
        "native", bands=("red", "green", "blue"), gsd_m=0.1, patch=16, output_stride=4, classes=("a", "b")
    )
    path = retyped(osbs_tif, tmp_path / f"{dtype}.tif", dtype)
    with open_scene(path, native.card) as scene, rasterio.open(osbs_tif) as src:
        got, valid = scene.read(Window(0, 0, 40, 40))
        want = np.moveaxis(src.read(window=Window(0, 0, 40, 40)).astype(dtype), 0, -1)
    assert valid.all()  # no nodata declared on the copies
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_nan_in_any_band_is_invalid_and_never_reaches_the_network(
    osbs_tif: Path, make_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # The scene's own 0.1 m grid: no resampling, so pixels map one to one.
    native = make_model(
        "native", bands=("red", "green", "blue"), gsd_m=0.1, patch=16, output_stride=4, classes=("a", "b")
    )
    for declared in (True, False):
        path = nan_scene(osbs_tif, tmp_path / f"green-nan-{declared}.tif", declared=declared, one_band=True)
        with open_scene(path, native.card) as scene:
            pixels, valid = scene.read(Window(-8, -8, 416, 416))  # padding included
        assert np.isfinite(pixels).all()
        expected = np.zeros((416, 416), bool)
        expected[8:408, 8:408] = True
        rows, cols = NAN_BLOCK
        expected[8 + rows.start : 8 + rows.stop, 8 + cols.start : 8 + cols.stop] = False
        np.testing.assert_array_equal(valid, expected)
        assert (pixels[~valid] == 0).all()


def _features_inside(geojson: Path, scene: Path) -> list[dict[str, object]]:
    with rasterio.open(scene) as src:
        left, bottom, right, top = rasterio.windows.bounds(Window.from_slices(*NAN_BLOCK), src.transform)
        to_scene = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
    inside = []
    for feature in json.loads(geojson.read_text())["features"]:
        ring = feature["geometry"]["coordinates"][0]
        xs, ys = to_scene.transform([p[0] for p in ring], [p[1] for p in ring])
        if left < min(xs) and max(xs) < right and bottom < min(ys) and max(ys) < top:
            inside.append(feature)
    return inside


@pytest.mark.parametrize("declared", [True, False], ids=["nodata-nan", "no-nodata"])
def test_a_nan_block_becomes_nodata_in_the_outputs(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path, declared: bool
) -> None:
    scene = nan_scene(osbs_tif, tmp_path / "nan.tif", declared=declared)
    out = tmp_path / "out"
    report = pipeline.run(scene, rgb_model, out)
    block = cells_inside(out / "classes.tif", scene, NAN_BLOCK)
    assert block.size >= 100 and (block == 255).all()
    with rasterio.open(out / "classes.tif") as classes:
        assert (classes.read(1) != 255).sum() > 3 * block.size  # the rest of the scene was scanned
    assert _features_inside(out / "detections.geojson", scene) == []
    assert report["chips"]["processed"] > 0


def test_cli_predict_refuses_a_tampered_model_package(
    osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    assert rgb_model.path is not None
    bad = tampered_copy(rgb_model.path, tmp_path / "tampered")
    out = tmp_path / "out"
    line = _one_line(_predict(str(osbs_tif), "--model", str(bad), "--out", str(out)))
    assert f"{bad / 'weights.npz'}: checksum does not match the card (modified or corrupt)" in line
    assert not out.exists()
