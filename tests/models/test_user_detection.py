"""`spikescan train --task detection` on real data: DeepForest's hand-drawn YELL crowns (VOC boxes in the
deepforest package) written as a GeoPackage on a georeferenced copy of their image, a short run, the package
scanning the scene into boxes; and label files detection cannot use refused with exit status 2."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyogrio.raw import write
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from models import package
from models.datasets import read_boxes, read_rgb
from spikescan import data
from spikescan.cli import main as cli_main

STEM = "2019_YELL_2_541000_4977000_image_crop"  # 1249 x 1035 px, 279 crowns
# NEON names its 1 km tiles by their south-west corner: this crop is placed at the tile's north-west corner
# in UTM 12N (Yellowstone), 0.1 m pixels. Matching is in pixels, so the nominal origin moves no figure.
CRS = "EPSG:32612"
ORIGIN = (541000.0, 4978000.0)
PIXEL_M = 0.1


def georeferenced_copy(where: Path) -> tuple[Path, np.ndarray, Affine]:
    """The PNG as a GeoTIFF (RGB colour interpretation), its VOC boxes (pixels) and its transform."""
    root = data.ensure("deepforest")
    pixels = read_rgb(root / f"{STEM}.png").astype(np.uint8)
    transform = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])
    path = where / f"{STEM}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1], height=pixels.shape[0], count=3,
                       dtype="uint8", crs=CRS, transform=transform) as dst:
        dst.write(np.moveaxis(pixels, -1, 0))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path, read_boxes(root / f"{STEM}.xml"), transform


def boxes_gpkg(path: Path, boxes: np.ndarray, transform: Affine) -> Path:
    x0, y0 = transform * (boxes[:, 0], boxes[:, 1])
    x1, y1 = transform * (boxes[:, 2], boxes[:, 3])
    geoms = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
    kind = np.array(["tree"] * len(boxes), dtype=object)
    write(path, shapely.to_wkb(geoms), [kind], ["kind"], geometry_type="Polygon", crs=CRS, driver="GPKG")
    return path


@pytest.fixture(scope="module")
def yell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, Affine]:
    where = tmp_path_factory.mktemp("yell")
    scene, boxes, transform = georeferenced_copy(where)
    return scene, boxes_gpkg(where / "crowns.gpkg", boxes, transform), boxes, transform


@pytest.mark.tf
@pytest.mark.timeout(500)
def test_short_detection_run_from_crown_boxes_gives_a_package_that_finds_boxes(
        yell: tuple[Path, Path, np.ndarray, Affine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers import pipeline

    scene, labels, boxes, _ = yell
    out = tmp_path / "crowns"
    argv = ["train", "--task", "detection", "--images", str(scene), "--labels", str(labels), "--gsd", "0.2",
            "--label-field", "kind", "--epochs", "2", "--search-epochs", "1", "--json", "--out", str(out)]
    assert cli_main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["warnings"] == []  # 148 + 93 crowns: enough

    pkg = package.load(out)
    card, m, t = pkg.card, pkg.card.metrics, pkg.card.training
    assert card.task == "detection" and card.gsd_m == 0.2 and card.output_stride == 4
    # The crowns' median longer side is 4.1 m, 20.5 px at 0.2 m: twice that, rounded up to the 4-px cell.
    assert card.patch_size == 44 and t["patch_from_labels"]["median_size_px"] == pytest.approx(20.5)  # type: ignore[index]
    assert [b.name for b in card.bands] == ["red", "green", "blue"]
    assert card.target_classes == ["tree_small", "tree_medium", "tree_large"]  # named by --label-field
    edges = card.detection.sides_m
    assert len(edges) == 3 and edges[0] < edges[1] < edges[2]
    # Every crown is somewhere: training bands, held-out bands or validation bands.
    roles = {b["role"] for b in t["bands"]}  # type: ignore[index]
    assert roles == {"train", "validation", "test"}
    assert t["objects_held_out"] > 0 and t["objects_in_training_bands"] > 100  # type: ignore[operator]
    # The threshold was chosen on validation strips, then applied to the held-out bands.
    tuned = m["validation_boxes_iou40"]
    assert card.detection.min_score == tuned["chosen_min_score"]  # type: ignore[index]
    held = m["held_out_boxes_iou40"]
    assert held["min_score"] == card.detection.min_score  # type: ignore[index]
    for key in ("spiking", "grid_baseline", "excess_green_baseline"):
        side = held[key]["overall"] if key == "spiking" else held[key]  # type: ignore[index]
        assert side["truth"] == t["objects_held_out"]  # type: ignore[index]
        assert 0 <= side["f1"] <= 1 and {"precision", "recall", "matched", "predicted"} <= set(side)
    assert "grid F1" in m["headline"] and "excess-green F1" in m["headline"]  # type: ignore[operator]
    assert m["board_class_agreement"]["value"] == 1.0  # type: ignore[index]
    assert m["emulator_keras_agreement"]["patches_identical"] == 1.0  # type: ignore[index]
    assert t["data"][0]["labels"]["file"] == "crowns.gpkg"  # type: ignore[index]
    # The default budget (4 copies a board) admits every tree-shaped candidate: each was scored on the
    # validation bands' patches and the best one trained.
    arch = t["architecture"]
    scores = {tuple(c["conv_filters"]): c["validation"]["value"] for c in arch["candidates"]}  # type: ignore[index]
    assert len(scores) == 3 and scores[tuple(arch["chosen"])] == max(scores.values())  # type: ignore[index]

    report = pipeline.run(scene, out, tmp_path / "scan")
    assert report["chips"]["processed"] > 0
    found = json.loads((tmp_path / "scan" / "detections.geojson").read_text())["features"]
    assert found and all(f["geometry"]["type"] == "Polygon" for f in found)
    assert {f["properties"]["class"] for f in found} == {"tree"}

    # NEST, an independent simulator, runs the user's package spike for spike as the emulator does
    # (patches from the training scene the card records).
    capsys.readouterr()
    assert cli_main(["crosscheck", "--model", str(out), "--backend", "nest", "--patches", "40"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["patches"] == 40 and checked["input_code"] == "one-hot levels"
    assert checked["spike_agreement"] == 1.0 and checked["class_agreement"] == 1.0


def test_point_labels_become_boxes_of_their_size_on_the_scene(
        yell: tuple[Path, Path, np.ndarray, Affine], tmp_path: Path) -> None:
    from models.user_images import resolve
    from models.user_labels import read_scenes
    from models.user_objects import as_labels, read_objects, scene_boxes

    scene, _, boxes, transform = yell
    cx, cy = transform * ((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
    side_m = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * PIXEL_M
    path = tmp_path / "tops.gpkg"
    write(path, shapely.to_wkb(shapely.points(cx, cy)), [side_m], ["crown_m"], geometry_type="Point",
          crs=CRS, driver="GPKG")
    objects = read_objects(path, "crown_m", 4.0)
    read = read_scenes(resolve([scene], "1,2,3"), as_labels(objects), 0.2, 48)[0]
    got = scene_boxes(objects, read)
    assert len(got) == len(boxes)
    # Squares of the crown's side (in 0.2 m pixels) centred on the crown: the same centres and areas.
    want = np.column_stack(~read.transform * (cx, cy))  # the model grid of the window read
    np.testing.assert_allclose(np.sort((got[:, :2] + got[:, 2:]) / 2, axis=0), np.sort(want, axis=0),
                               atol=1e-6)
    np.testing.assert_allclose(np.sort(got[:, 2] - got[:, 0]), np.sort(side_m / abs(read.transform.a)),
                               atol=1e-6)
    assert abs(read.transform.a - 0.2) < 1e-3


def _lines(path: Path) -> Path:
    lines = shapely.linestrings([[(541010.0, 4977990.0), (541020.0, 4977980.0)]] * 3)
    write(path, shapely.to_wkb(lines), [np.array(["a", "b", "c"], dtype=object)], ["kind"],
          geometry_type="LineString", crs=CRS, driver="GPKG")
    return path


def _empty(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write(path, np.array([], dtype=object), [np.array([], dtype=object)], ["kind"],
              geometry_type="Polygon", crs=CRS, driver="GPKG")
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("lines", "detection needs boxes/polygons or points, but the file has 3 LineString"),
    ("empty", "the label file has no features"),
    ("size field", "no field 'crown_m'"),
    ("two kinds", "field 'kind' names 2 kinds of object ('a', 'b')"),
])
def test_labels_detection_cannot_use_are_refused_with_status_2(
        case: str, message: str, yell: tuple[Path, Path, np.ndarray, Affine], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    scene = yell[0]
    if case == "lines":
        labels, extra = _lines(tmp_path / "lines.gpkg"), []
    elif case == "empty":
        labels, extra = _empty(tmp_path / "empty.gpkg"), []
    elif case == "two kinds":
        labels = tmp_path / "kinds.gpkg"
        squares = shapely.box([541010.0, 541020.0], [4977980.0] * 2, [541013.0, 541023.0], [4977983.0] * 2)
        write(labels, shapely.to_wkb(squares), [np.array(["a", "b"], dtype=object)], ["kind"],
              geometry_type="Polygon", crs=CRS, driver="GPKG")
        extra = ["--label-field", "kind"]
    else:
        labels = tmp_path / "pts.gpkg"
        write(labels, shapely.to_wkb(shapely.points([541010.0], [4977990.0])), [np.array([3.0])], ["side"],
              geometry_type="Point", crs=CRS, driver="GPKG")
        extra = ["--size-field", "crown_m"]
    argv = ["train", "--task", "detection", "--images", str(scene), "--labels", str(labels),
            "--out", str(tmp_path / "out"), *extra]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and labels.name in err[0], err
    assert not (tmp_path / "out").exists()
