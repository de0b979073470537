"""End to end on real scenes: ``workers.pipeline.run`` and the ``spikescan predict`` command.

OSBS_029 (0.1 m RGB) is resampled 2x for the 0.2 m test model; the Landsat scene (489 x 443, width not a
multiple of the stride, real nodata around the edges) runs at its own GSD.
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
from pyproj import Transformer
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from workers import pipeline


@pytest.fixture(scope="module")
def holed_run(
    osbs_tif: Path, rgb_model, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """A real copy of OSBS_029 whose top-right quadrant is overwritten with its declared nodata (255)."""
    work = tmp_path_factory.mktemp("holed")
    scene = work / "osbs_holed.tif"
    with rasterio.open(osbs_tif) as src:
        pixels = src.read()
        pixels[:, :200, 200:] = src.nodata
        with rasterio.open(scene, "w", **src.profile) as dst:
            dst.write(pixels)
    return scene, work / "out", pipeline.run(scene, rgb_model, work / "out")


RUNS = ["osbs_run", "landsat_run"]


@pytest.mark.parametrize("run", RUNS)
def test_rasters_are_valid_cogs_on_the_scene_grid(run: str, request: pytest.FixtureRequest) -> None:
    out, rep = request.getfixturevalue(run)
    with rasterio.open(rep["scene"]) as src:
        scene_bounds, scene_crs, res = src.bounds, src.crs, src.res
    for name in ("classes", "scores"):
        path = out / f"{name}.tif"
        valid, errors, _ = cog_validate(str(path), quiet=True)
        assert valid and not errors, errors
        with rasterio.open(path) as ds:
            assert ds.crs == scene_crs
            assert ds.overviews(1), "COG without overviews"
            cell = ds.res[0]
            # Same origin; the far edges end on the last (possibly partial) cell that covers the scene.
            assert (ds.bounds.left, ds.bounds.top) == pytest.approx(
                (scene_bounds.left, scene_bounds.top), abs=1e-6
            )
            assert 0 <= ds.bounds.right - scene_bounds.right < cell
            assert 0 <= scene_bounds.bottom - ds.bounds.bottom < cell
            # Cell edges fall on scene pixel edges.
            assert (cell / res[0]) == pytest.approx(round(cell / res[0]))


def test_osbs_output_bounds_equal_the_scene(osbs_run: tuple[Path, dict[str, Any]], osbs_tif: Path) -> None:
    out, rep = osbs_run
    with rasterio.open(osbs_tif) as src, rasterio.open(out / "classes.tif") as ds:
        assert ds.bounds == pytest.approx(src.bounds)
    assert "resampled on the fly" in rep["resampling"]


def test_classes_and_scores_metadata(osbs_run: tuple[Path, dict[str, Any]], rgb_model) -> None:  # type: ignore[no-untyped-def]
    out, _ = osbs_run
    classes = rgb_model.card.classes
    with rasterio.open(out / "classes.tif") as ds:
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8"
        assert json.loads(ds.tags()["CLASSES"]) == classes
        assert ds.colormap(1)[1] == tuple(rgb_model.card.colors[1])
        values = np.unique(ds.read(1))
        assert set(values.tolist()) <= set(range(len(classes)))
    with rasterio.open(out / "scores.tif") as ds:
        assert ds.descriptions == tuple([f"score:{c}" for c in classes] + ["hits", "disagreement"])
        scores = ds.read(list(range(1, len(classes) + 1))).astype(int)
        hits = ds.read(len(classes) + 1)
    assert (hits > 0).all()  # the scene has no nodata: every cell was seen
    assert np.abs(scores.sum(axis=0) - 255).max() <= len(classes)  # scores of a cell sum to 1


@pytest.fixture(scope="module")
def landsat_crop(landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 301 x 241 window of the Landsat scene (correct transform), with valid data up to its edges."""
    path = tmp_path_factory.mktemp("crop") / "landsat_crop.tif"
    window = Window(0, 100, 301, 241)
    with rasterio.open(landsat_tif) as src:
        profile = {**src.profile, "width": 301, "height": 241, "transform": src.window_transform(window)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


@pytest.mark.parametrize(
    ("scene", "model", "stride"), [("osbs_tif", "rgb_model", 16), ("landsat_crop", "landsat_model", 8)]
)
def test_last_column_and_row_covered_when_size_is_not_a_multiple_of_stride(
    scene: str, model: str, stride: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = request.getfixturevalue(scene)
    rep = pipeline.run(path, request.getfixturevalue(model), tmp_path, stride=stride)
    grid = rep["grid"]
    assert grid["width"] % stride and grid["height"] % stride
    with rasterio.open(tmp_path / "scores.tif") as ds, rasterio.open(path) as src:
        hits = ds.read(ds.count - 1)
        # Source pixels per output cell (OSBS is resampled 2x for the model), and whether any is valid.
        per_cell = round(ds.res[0] / src.res[0])
        mask = src.dataset_mask() > 0
        h, w = ds.height * per_cell, ds.width * per_cell
        padded = np.zeros((h, w), bool)
        padded[: src.height, : src.width] = mask
        seen = padded.reshape(ds.height, per_cell, ds.width, per_cell).any(axis=(1, 3))
    assert seen[:, -1].any() and seen[-1, :].any()
    np.testing.assert_array_equal(hits[:, -1] > 0, seen[:, -1])
    np.testing.assert_array_equal(hits[-1, :] > 0, seen[-1, :])
    np.testing.assert_array_equal(hits > 0, seen)


def test_nodata_block_gives_nodata_and_no_detections(holed_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, rep = holed_run
    assert rep["chips"]["skipped"] > 0
    assert rep["chips"]["processed"] + rep["chips"]["skipped"] == rep["chips"]["total"]
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
        # Source rows 0..199, cols 200..399 = output cells (8 source pixels each) rows 0..24, cols 25..49.
        block = (slice(0, 25), slice(25, 50))
        assert (classes[block] == 255).all()
        assert (classes[25:, :] != 255).all() and (classes[:, :25] != 255).all()
        to_cells = ~ds.transform
        crs = ds.crs
    with rasterio.open(out / "scores.tif") as ds:
        assert (ds.read(ds.count - 1)[block] == 0).all()
    features = json.loads((out / "detections.geojson").read_text())["features"]
    assert features
    to_scene = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    for f in features:
        lon, lat = zip(*f["geometry"]["coordinates"][0], strict=True)
        cols, rows = to_cells * np.array(to_scene.transform(lon, lat))
        overlaps_block = cols.max() > 25 + 1e-6 and rows.min() < 25 - 1e-6
        assert not overlaps_block, f["properties"]


def test_report_counts(landsat_run: tuple[Path, dict[str, Any]]) -> None:
    out, rep = landsat_run
    assert json.loads((out / "report.json").read_text()) == rep
    chips = rep["chips"]
    assert chips["total"] == chips["processed"] + chips["skipped"] and chips["skipped"] > 0
    assert rep["spikes_per_chip"] > 0 and rep["chips_per_s"] > 0 and rep["megapixels_per_s"] > 0
    assert {"read", "infer", "mosaic", "cog", "vectors", "total"} <= set(rep["wall_time_s"])
    assert rep["backend"] == "emulator" and rep["copies_used"] == 1 and rep["resampling"] is None


def _spikescan() -> list[str]:
    return [sys.executable, "-c", "import sys; from spikescan.cli import main; sys.exit(main())"]


def test_cli_wrong_band_count_exits_2_with_one_line(landsat_tif: Path, rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [
            *_spikescan(),
            "predict",
            str(landsat_tif),
            "--model",
            str(rgb_model.path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "landsat_multiband.tif" in lines[0] and "band" in lines[0], proc.stderr
    assert not (tmp_path / "out" / "classes.tif").exists()


def test_cli_predict_prints_summary_and_writes_outputs(osbs_tif: Path, rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "res"
    proc = subprocess.run(
        [
            *_spikescan(),
            "predict",
            str(osbs_tif),
            "--model",
            str(rgb_model.path),
            "--out",
            str(out),
            "--stride",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # piped: no progress bar
    assert str(out.resolve()) in proc.stdout and "chips/s" in proc.stdout
    assert "energy" not in proc.stdout  # a CPU run: no SpiNNaker board's energy to speak of
    for name in ("classes.tif", "scores.tif", "detections.geojson", "detections.gpkg", "detections.fgb",
                 "item.json", "report.json"):
        assert (out / name).is_file()
    assert json.loads((out / "report.json").read_text())["grid"]["stride"] == 16


def test_cli_bad_stride_exits_2(osbs_tif: Path, rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [
            *_spikescan(),
            "predict",
            str(osbs_tif),
            "--model",
            str(rgb_model.path),
            "--out",
            str(tmp_path),
            "--stride",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "multiple of the model's output stride" in proc.stderr


def test_windowed_reads_only(osbs_tif: Path, rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The scene is read one chip row at a time, never whole: count the pixels each read asks for (the
    input check's sample at open is windowed too)."""
    from workers import input_check
    from workers import scene as scene_module

    sizes: list[int] = []
    original = scene_module.Scene.read

    def spy(self: scene_module.Scene, window: Window, *args: Any) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(int(window.width * window.height))
        return original(self, window, *args)

    scene_module.Scene.read = spy  # type: ignore[method-assign]
    try:
        rep = pipeline.run(osbs_tif, rgb_model, tmp_path)
    finally:
        scene_module.Scene.read = original  # type: ignore[method-assign]
    grid = rep["grid"]
    sample = len(input_check.sample_windows(grid["width"], grid["height"]))
    assert len(sizes) == -(-(grid["height"] - grid["patch"]) // grid["stride"]) + 1 + sample
    assert max(sizes) < grid["width"] * grid["height"]
