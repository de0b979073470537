"""Honest inputs (workers/input_check.py) on real scenes: out-of-range scenes are refused or warned about,
undeclared fill values are masked and warned about, normal scenes raise no alarm, and a card that asks for
scene normalisation gets statistics applied to every chip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from models import normalisation, package
from models.card import Encoding, Normalisation
from models.package import ModelPackage
from spikescan.errors import InputOutOfRange, InvalidScene
from tests import input_scenes
from workers import input_check, pipeline
from workers.chips import ChipGrid
from workers.scene import PixelCounts, model_ranges, open_scene

ONE_257TH = 1 / 257


@pytest.fixture(scope="module")
def trees(rgb_model: ModelPackage) -> ModelPackage:
    """An 8-bit RGB tree model whose encoding reads raw pixel values. (The shipped trees-rgb standardises
    each scene's colours before its encoding, so a 16-bit scene is no surprise to it: nothing to refuse.)"""
    return rgb_model


@pytest.fixture(scope="module")
def landcover() -> ModelPackage:
    return package.load("landcover-landsat")


@pytest.fixture(scope="module")
def scenes(osbs_tif: Path, landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("input-scenes")
    return {
        "sixteen_bit": input_scenes.sixteen_bit(osbs_tif, d / "osbs16.tif"),
        "undeclared_fill": input_scenes.undeclared_fill(landsat_tif, d / "landsat_undeclared.tif"),
        "zero_fill": input_scenes.zero_fill(landsat_tif, d / "landsat_zero.tif"),
        "zero_corner": input_scenes.zero_corner(osbs_tif, d / "osbs_zero_corner.tif"),
        "declared_corner": input_scenes.declared_corner(osbs_tif, d / "osbs_declared_corner.tif"),
    }


@pytest.fixture(scope="module")
def landsat_landcover(landsat_tif: Path, landcover: ModelPackage, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("landsat-landcover")
    return out, pipeline.run(landsat_tif, landcover, out)


def _predict(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _band(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


def _codes(rep: dict[str, Any]) -> list[str]:
    return [w["code"] for w in rep["warnings"]]


# --- the rule -----------------------------------------------------------------------------------------------
def test_model_range_is_the_outer_thresholds_widened_by_their_spread(landcover: ModelPackage) -> None:
    ranges = model_ranges(landcover.card)
    blue = landcover.card.encoding.thresholds[0]
    assert (blue[0], blue[-1]) == (68.0, 106.0)
    assert ranges[0] == (30.0, 144.0)


def test_the_sample_is_bounded_and_touches_every_edge() -> None:
    for width, height in ((200, 200), (489, 443), (40000, 7000)):
        windows = input_check.sample_windows(width, height)
        assert len(windows) <= input_check.SAMPLE_GRID**2
        assert sum(w.width * w.height for w in windows) <= (
            min(width * height, input_check.SAMPLE_GRID**2 * input_check.SAMPLE_WINDOW**2)
        )
        assert min(w.col_off for w in windows) == 0 and min(w.row_off for w in windows) == 0
        assert max(w.col_off + w.width for w in windows) == width
        assert max(w.row_off + w.height for w in windows) == height
    small = input_check.sample_windows(489, 443)  # small scenes are read whole
    assert sum(w.width * w.height for w in small) == 489 * 443


def test_counts_survive_json() -> None:
    counts = PixelCounts(2, 10, [1, 2], [3, 4], {-99999.0: 5, 0.0: 6})
    assert PixelCounts.from_dict(json.loads(json.dumps(counts.to_dict()))) == counts


# --- no false alarms ----------------------------------------------------------------------------------------
def test_the_demo_scenes_raise_no_alarm(
    osbs_tif: Path, trees: ModelPackage, landsat_landcover, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rep = pipeline.run(osbs_tif, trees, tmp_path)
    assert rep["warnings"] == []
    assert rep["inputs"]["counts"]["fill"] == []
    _, rep = landsat_landcover
    assert rep["warnings"] == []
    counts = rep["inputs"]["counts"]
    # Every valid pixel counted exactly once over the overlapping chip rows, the declared fill not at all.
    assert counts["valid"] == 489 * 443 - input_scenes.LANDSAT_FILL_PIXELS
    assert counts["fill"] == []
    assert 0 < max(counts["above"]) < 0.01 * counts["valid"]  # bright pixels exist, but far below a warning


# --- out of range -------------------------------------------------------------------------------------------
def test_a_16_bit_scene_into_the_8_bit_tree_model_is_refused(
    scenes: dict[str, Path], trees: ModelPackage
) -> None:
    with pytest.raises(InputOutOfRange) as info:
        input_check.open_checked(scenes["sixteen_bit"], trees.card)
    message = info.value.message
    assert str(scenes["sixteen_bit"]) in message and "100.0 %" in message and "--scale 0.00" in message
    assert isinstance(info.value, InvalidScene)  # exit 2 / HTTP 422


def test_cli_refuses_it_in_one_line_and_scale_makes_the_run_clean(
    scenes: dict[str, Path], trees: ModelPackage, tmp_path: Path
) -> None:
    model = str(trees.path)
    refused = _predict(str(scenes["sixteen_bit"]), "--model", model, "--out", str(tmp_path / "a"))
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikescan: error: ") and "--scale" in lines[0]
    assert not (tmp_path / "a" / "report.json").exists()

    out = tmp_path / "b"
    done = _predict(
        str(scenes["sixteen_bit"]), "--model", model, "--out", str(out), "--scale", "0.00389105"
    )
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["warnings"] == [] and rep["inputs"]["scale"] == pytest.approx(0.00389105)
    assert rep["detections"] > 0


def test_scale_brings_the_16_bit_scene_back_to_the_8_bit_one(
    scenes: dict[str, Path], osbs_tif: Path, trees: ModelPackage
) -> None:
    """What the network sees after --scale 1/257 is the 8-bit scene's pixels, to float rounding."""
    with (
        input_check.open_checked(
            scenes["sixteen_bit"], trees.card, options=input_check.InputOptions(ONE_257TH)
        ) as s16,
        input_check.open_checked(osbs_tif, trees.card) as s8,
    ):
        grid = ChipGrid.for_model(s8.width, s8.height, trees.card.patch_size, trees.card.output_stride, None)
        a, b = s16.read_chip_row(grid, 1), s8.read_chip_row(grid, 1)
        assert np.array_equal(a.valid, b.valid)
        assert np.abs(a.pixels - b.pixels).max() < 1  # the 2x average rounds to whole DNs in 8 bits


def test_an_explicit_scale_turns_the_refusal_into_a_warning(
    scenes: dict[str, Path], trees: ModelPackage
) -> None:
    with input_check.open_checked(
        scenes["sixteen_bit"], trees.card, options=input_check.InputOptions(scale=1.0)
    ) as scene:
        (warning,) = input_check.warnings(scene)
    assert warning["code"] == "out_of_range" and warning["share"] == 1.0
    assert "--scale 0.00" in warning["message"] and warning["counted"].startswith("a sample")


# --- undeclared fill ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "value"), [("undeclared_fill", -99999.0), ("zero_fill", 0.0)])
def test_undeclared_fill_is_masked_and_warned_about(
    scenes: dict[str, Path],
    landcover: ModelPackage,
    landsat_landcover,
    tmp_path: Path,
    name: str,
    value: float,
) -> None:  # type: ignore[no-untyped-def]
    """The stripped scene scans exactly as the one that declares its fill: same classes, same scores, and
    a warning giving the exact pixel count and the --nodata way to declare it."""
    ref_out, ref = landsat_landcover
    rep = pipeline.run(scenes[name], landcover, tmp_path)
    (warning,) = rep["warnings"]
    assert warning["code"] == "undeclared_fill" and warning["value"] == value
    assert warning["pixels"] == input_scenes.LANDSAT_FILL_PIXELS and warning["counted"] == "all pixels"
    assert f"--nodata {int(value)}" in warning["message"]
    assert value in rep["inputs"]["fill_values_masked"]
    for layer in ("classes.tif", "scores.tif"):
        with rasterio.open(tmp_path / layer) as got, rasterio.open(ref_out / layer) as want:
            assert np.array_equal(got.read(), want.read()), layer
    assert rep["detections"] == ref["detections"]
    assert rep["chips"] == ref["chips"]  # fill-only chips skipped alike


def test_declaring_the_fill_silences_the_warning(
    scenes: dict[str, Path], landcover: ModelPackage, tmp_path: Path
) -> None:
    rep = pipeline.run(
        scenes["undeclared_fill"], landcover, tmp_path, inputs=input_check.InputOptions(nodata=-99999)
    )
    assert rep["warnings"] == []
    assert rep["inputs"]["nodata"] == -99999
    assert rep["inputs"]["counts"]["fill"] == [[-99999.0, input_scenes.LANDSAT_FILL_PIXELS]]


def test_cli_warns_on_stderr_and_the_report_keeps_it(scenes: dict[str, Path], tmp_path: Path) -> None:
    done = _predict(str(scenes["zero_fill"]), "--model", "landcover-landsat", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("spikescan: warning: ")]
    assert (
        len(warned) == 1 and "33,209 pixels hold 0 on every band" in warned[0] and "--nodata 0" in warned[0]
    )
    assert "1 warning(s) about the input (undeclared_fill)" in done.stdout
    assert _codes(json.loads((tmp_path / "report.json").read_text())) == ["undeclared_fill"]


def test_a_nodata_the_pixel_type_cannot_hold_is_refused(osbs_tif: Path, trees: ModelPackage) -> None:
    with pytest.raises(InvalidScene, match="--nodata -9999 cannot occur in its uint8 pixels"):
        input_check.open_checked(osbs_tif, trees.card, options=input_check.InputOptions(nodata=-9999))


def test_a_zero_corner_is_kept_out_of_the_resampling(
    scenes: dict[str, Path], trees: ModelPackage, tmp_path: Path
) -> None:
    """OSBS at 0.1 m is averaged 2x for the 0.2 m tree model: the undeclared zero corner is masked, handed
    to the warp, and the run equals the one whose corner is the file's declared nodata, cell for cell."""
    rep = pipeline.run(scenes["zero_corner"], trees, tmp_path / "zero")
    ref = pipeline.run(scenes["declared_corner"], trees, tmp_path / "declared")
    (warning,) = rep["warnings"]
    assert warning["code"] == "undeclared_fill" and warning["value"] == 0
    assert "along the scene's border" in warning["message"]
    assert rep["inputs"]["resampling_nodata"] == 0.0 and ref["warnings"] == []
    assert rep["inputs"]["counts"]["valid"] == ref["inputs"]["counts"]["valid"]
    for layer in ("classes.tif", "scores.tif"):
        with (
            rasterio.open(tmp_path / "zero" / layer) as got,
            rasterio.open(tmp_path / "declared" / layer) as want,
        ):
            assert np.array_equal(got.read(), want.read()), layer
    classes = _band(tmp_path / "zero" / "classes.tif")
    assert classes[0, 0] == 255 and classes[-1, -1] != 255  # the corner is nodata, the rest is not


def test_open_scene_masks_sentinels_even_without_a_check(
    scenes: dict[str, Path], landcover: ModelPackage
) -> None:
    """Every reader masks −99999 on all bands (not only a checked one), and a chip row counts the rows no
    later chip row reads again."""
    with open_scene(scenes["undeclared_fill"], landcover.card) as scene:
        grid = ChipGrid.for_model(scene.width, scene.height, 16, 2, None)
        batch = scene.read_chip_row(grid, 0)
        assert not batch.valid[:, 0, :].any()  # the first scene row is all fill
        tally = scene.tally
    with rasterio.open(scenes["undeclared_fill"]) as src:
        top = src.read(window=Window(0, 0, src.width, grid.stride))
    assert tally.fill == {-99999.0: int((top == -99999).all(axis=0).sum())}
    assert tally.valid == int((~(top == -99999).all(axis=0)).sum())


# --- scene normalisation ------------------------------------------------------------------------------------
def standardised_copy(pkg: ModelPackage, landsat: Path, directory: Path) -> ModelPackage:
    """landcover-landsat with ``normalisation.kind = scene_standardise`` and its thresholds moved into the
    landsat scene's standardised units (half a DN below each, so integer pixels never sit on a threshold):
    scanning that scene, it must fire exactly as the original does on raw pixels — if, and only if, every
    chip gets the scene's statistics."""
    with rasterio.open(landsat) as src:
        pixels = np.moveaxis(src.read(), 0, -1)
    valid = ~(pixels == -99999).all(axis=-1)
    stats = normalisation.SceneStats.from_sample(pixels, valid)
    thresholds = [
        [float(np.float32((t - 0.5 - m) / s)) for t in row]
        for row, m, s in zip(pkg.card.encoding.thresholds, stats.mean, stats.std, strict=True)
    ]
    card = pkg.card.model_copy(
        update={
            "name": "landcover-std",
            "normalisation": Normalisation(kind="scene_standardise"),
            "encoding": Encoding(levels=pkg.card.encoding.levels, thresholds=thresholds),
        }
    )
    return package.save(card, pkg.weights, directory / "landcover-std")


def test_scene_standardisation_reaches_every_chip(
    landsat_tif: Path, landcover: ModelPackage, landsat_landcover, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    std = standardised_copy(landcover, landsat_tif, tmp_path)
    ref_out, _ = landsat_landcover
    rep = pipeline.run(landsat_tif, std, tmp_path / "out")
    norm = rep["inputs"]["normalisation"]
    assert norm["kind"] == "scene_standardise"
    with rasterio.open(landsat_tif) as src:
        pixels = np.moveaxis(src.read(), 0, -1)
    valid = pixels[~(pixels == -99999).all(axis=-1)].astype(np.float64)
    assert np.allclose(norm["mean"], valid.mean(axis=0), rtol=1e-9)
    assert np.allclose(norm["std"], valid.std(axis=0), rtol=1e-9)
    assert rep["warnings"] == []  # judged in standardised units
    with (
        rasterio.open(tmp_path / "out" / "classes.tif") as got,
        rasterio.open(ref_out / "classes.tif") as want,
    ):
        assert np.array_equal(got.read(), want.read())


def test_large_scenes_sample_fewer_windows_each_inside_one_block() -> None:
    """Windows per axis grow with the scene (3 at 1-2k model pixels, 8 from 4k), and with the file's blocks
    known every window but the edge ones lies inside a single block (one decode each)."""
    block = (256, 256)
    for size, per_axis in ((1100, 3), (2048, 4), (4096, 8), (40000, 8)):
        windows = input_check.sample_windows(size, size, block)
        xs = sorted({int(w.col_off) for w in windows})
        assert len(xs) == per_axis, (size, xs)
        assert xs[0] == 0 and xs[-1] + input_check.SAMPLE_WINDOW == size
        for x in xs[1:-1]:
            assert x // block[0] == (x + input_check.SAMPLE_WINDOW - 1) // block[0], (size, x)
    assert input_check.sample_windows(489, 443, block) == input_check.sample_windows(489, 443)
