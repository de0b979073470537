"""Patch sets from the packaged real data: honest splits, crown-kernel labels, resampling, scanning."""

from __future__ import annotations

import numpy as np

from models import datasets, train

LANDCOVER = train.load_recipe("landcover-landsat")


def test_landcover_split_keeps_every_test_pixel_out_of_every_training_patch() -> None:
    scene = datasets.landsat_scene()
    split = LANDCOVER["split"]
    test = datasets.polygon_split(scene.labels, split["test_fraction"], split["seed"])
    size = LANDCOVER["patch_size"]
    valid = np.isfinite(scene.pixels).all(axis=-1)
    positions = datasets.window_positions(~test & valid, size, LANDCOVER["train_stride"],
                                          need=(scene.labels >= 0) & ~test)
    assert len(positions) > 500
    footprint = np.zeros_like(test)
    for y, x in positions:
        footprint[y:y + size, x:x + size] = True
    assert not (footprint & test).any()
    for k in range(len(LANDCOVER["classes"])):  # every class is tested and trained on
        assert ((scene.labels == k) & test).any() and ((scene.labels == k) & ~test).any()


def test_prepared_landcover_labels_never_leak() -> None:
    prepared = datasets.prepare(LANDCOVER)
    (scene,) = prepared.test
    assert (prepared.train.labels >= 0).sum() > 0 and (scene.labels >= 0).sum() > 300
    # The test scene's labels are only the held-out polygons' pixels.
    full = datasets.landsat_scene().labels
    held = scene.labels >= 0
    np.testing.assert_array_equal(scene.labels[held], full[held])
    assert held.sum() < (full >= 0).sum()


def test_polygon_split_is_fixed_by_its_seed() -> None:
    labels = datasets.landsat_scene().labels
    a = datasets.polygon_split(labels, 0.3, 7)
    assert np.array_equal(a, datasets.polygon_split(labels, 0.3, 7))
    assert not np.array_equal(a, datasets.polygon_split(labels, 0.3, 8))


def test_centre_labels_mark_the_cells_at_each_box_centre_with_its_size_class() -> None:
    boxes = np.array([[8.0, 16.0, 40.0, 48.0], [60.0, 60.0, 64.0, 64.0]])  # centres (24, 32) and (62, 62) px
    labels = datasets.centre_labels(boxes, np.array([3, 1]), (10, 10), cell=8.0, radius=0.8,
                                    ignore_radius=1.5)
    assert labels[4, 2] == 3 and labels[3, 2] == 3 and labels[7, 7] == 1  # cells at / next to the centres
    assert set(np.unique(labels)) == {-1, 0, 1, 3}
    assert labels[0, 9] == 0 and (labels == -1).sum() > 0  # background away from crowns, an ignored ring
    ring = labels[2:7, 0:5]
    assert (ring[ring != 3] <= 0).all()


def test_centre_labels_give_a_shared_cell_to_the_nearest_centre() -> None:
    boxes = np.array([[0.0, 0.0, 20.0, 20.0], [14.0, 0.0, 34.0, 20.0]])  # centres 14 px apart in x
    labels = datasets.centre_labels(boxes, np.array([1, 2]), (4, 6), cell=8.0, radius=1.5)
    assert labels[1, 1] == 1 and labels[1, 2] == 2


def test_size_bins_use_the_side_of_the_equal_area_square() -> None:
    boxes = np.array([[0, 0, 20, 20], [0, 0, 40, 40], [0, 0, 60, 60], [0, 0, 45, 20]], float)  # 0.1 m pixels
    np.testing.assert_array_equal(datasets.size_bins(boxes, 0.1, [3.0, 4.5]), [1, 2, 3, 2])


def test_validation_strip_is_on_the_cell_grid_and_right_of_every_training_patch() -> None:
    recipe = train.load_recipe("trees-rgb")
    fraction = float(recipe.get("validation_fraction", 0.25))
    start = datasets.validation_columns(1149, fraction, 4)
    assert start % 4 == 0 and 0.7 * 1149 < start <= 0.75 * 1149 + 4
    pos = datasets.grid_positions(1236, start, recipe["patch_size"], recipe["train_stride"], 4)
    assert pos[:, 1].max() + recipe["patch_size"] <= start


def test_downsample_is_an_area_average() -> None:
    px = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_array_equal(datasets.downsample(px, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]])


def test_grid_positions_reach_the_right_and_bottom_edges() -> None:
    pos = datasets.grid_positions(200, 130, 48, 24, 4)
    assert pos[:, 0].max() + 48 == 200 and pos[:, 1].max() + 48 <= 130 and pos[:, 1].max() + 48 > 126
    assert (pos % 4 == 0).all()


def test_tree_scenes_are_standardised_and_hold_crown_centres() -> None:
    recipe = train.load_recipe("trees-rgb")
    scene = datasets.tree_scene("OSBS_029", recipe)
    assert scene.pixels.shape == (200, 200, 3) and scene.labels.shape == (50, 50)
    assert scene.boxes is not None and len(scene.boxes) == 61
    if recipe["normalisation"]["kind"] == "scene_standardise":
        np.testing.assert_allclose(scene.pixels.reshape(-1, 3).mean(0), 0, atol=1e-3)
    assert 0.01 < (scene.labels > 0).mean() < 0.2


def test_a_held_out_image_is_neither_trained_nor_validated_on() -> None:
    recipe = train.load_recipe("trees-rgb")
    every = datasets.prepare(recipe)
    fold = datasets.prepare(recipe, ("OSBS_029",))
    assert {s.name for s in every.test} == set(datasets.TREE_IMAGES)
    assert "OSBS_029" not in {s.name for s in fold.test} and "OSBS_029" not in fold.notes["images"]
    assert fold.notes["holdout"] == ["OSBS_029"] and len(fold.train) < len(every.train)
    assert fold.sides_m is not None and len(fold.sides_m) == len(recipe["target_classes"])
    for scene in every.test:  # the validation strip is right of every training patch of its image
        assert scene.boxes is not None and scene.pixels.shape[1] < 0.3 * 1300


def test_augment_keeps_pixels_and_labels_registered() -> None:
    rng = np.random.default_rng(0)
    px = rng.random((6, 8, 8, 1)).astype(np.float32)
    patches = datasets.PatchSet(px, (px[..., 0] > 0.5).astype(np.int16))
    out = datasets.augment(patches, rng)
    np.testing.assert_array_equal(out.labels, (out.pixels[..., 0] > 0.5).astype(np.int16))
    assert not np.array_equal(out.pixels, px)


def test_augment_turns_crowns_grey_and_keeps_masks_registered() -> None:
    rng = np.random.default_rng(1)
    px = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    masks = np.zeros((8, 8, 8), bool)
    masks[:, 2:5, 3:6] = True
    px[masks] = [0.0, 2.0, 0.0]  # green crowns
    out = datasets.augment(datasets.PatchSet(px, np.zeros((8, 2, 2), np.int16), masks), rng, dead=1.0)
    assert out.masks is not None
    crowns = out.pixels[out.masks]
    np.testing.assert_allclose(crowns - crowns.mean(axis=-1, keepdims=True), 0, atol=1e-5)  # grey
    assert (crowns[:, 0] >= 2 / 3 - 1e-5).all()  # the mean of (0, 2, 0), made brighter


def test_augment_makes_lit_ground_grey_and_keeps_crowns_and_shadows() -> None:
    rng = np.random.default_rng(2)
    px = np.zeros((4, 8, 8, 3), np.float32)
    px[..., 1] = 1.5  # bright green ground
    px[:, 6:, :, :] = -2.0  # shadow
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:4, 2:4] = True
    px[masks] = [0.0, 1.0, 0.0]
    out = datasets.augment(datasets.PatchSet(px, np.zeros((4, 2, 2), np.int16), masks), rng, bare=1.0)
    assert out.masks is not None
    lit = ~out.masks & (out.pixels.mean(axis=-1) > -1.0)
    ground = out.pixels[lit]
    np.testing.assert_allclose(ground - ground.mean(axis=-1, keepdims=True), 0, atol=1e-5)
    np.testing.assert_allclose(out.pixels[out.masks], np.tile([0.0, 1.0, 0.0], (16, 1)))
    assert (out.pixels[out.pixels.mean(axis=-1) < -1.0] == -2.0).all()
