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


def test_kernel_labels_mark_cells_whose_centre_is_in_the_shrunk_box() -> None:
    boxes = np.array([[8.0, 16.0, 40.0, 48.0]])  # 32 px square centred at (24, 32) in source px
    labels = datasets.kernel_labels(boxes, (10, 10), cell=8.0, shrink=0.5)  # shrunk: x 16..32, y 24..40
    rows, cols = np.nonzero(labels)
    assert set(rows) == {3, 4} and set(cols) == {2, 3}  # cell centres 28, 36 (y) and 20, 28 (x)


def test_separated_kernels_of_touching_crowns_are_not_4_connected() -> None:
    from scipy import ndimage

    boxes = np.array([[0.0, 0.0, 40.0, 40.0], [28.0, 0.0, 68.0, 40.0]])  # overlapping crowns side by side
    plain = datasets.kernel_labels(boxes, (8, 12), cell=8.0, shrink=0.6)
    split = datasets.kernel_labels(boxes, (8, 12), cell=8.0, shrink=0.6, separate=True)
    assert ndimage.label(plain)[1] == 1 and ndimage.label(split)[1] == 2
    assert (split <= plain).all()


def test_separated_kernels_keep_a_crown_smaller_than_a_cell() -> None:
    boxes = np.array([[12.0, 12.0, 15.0, 15.0]])  # shrunk 12.6..14.4: misses the cell centre 12
    assert datasets.kernel_labels(boxes, (5, 5), cell=8.0, shrink=0.6).sum() == 0
    labels = datasets.kernel_labels(boxes, (5, 5), cell=8.0, shrink=0.6, separate=True)
    assert labels[1, 1] == 1 and labels.sum() == 1


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


def test_scan_takes_each_cell_from_the_patch_where_it_is_most_central() -> None:
    scene = datasets.Scene("ramp", np.zeros((16, 16, 1), np.float32), np.zeros((16, 16), np.int16), 1)

    def where_am_i(px: np.ndarray) -> np.ndarray:  # each patch answers with its own margin map
        n = len(px)
        m = np.minimum(np.arange(8), np.arange(8)[::-1])
        return np.broadcast_to(np.minimum.outer(m, m), (n, 8, 8))

    out = datasets.scan(scene, 8, 4, where_am_i)
    assert out[8, 8] == 3 and out[0, 0] == 0 and out[4, 4] == 3


def test_tree_scenes_hold_crowns_and_the_held_out_images_are_not_trained_on() -> None:
    assert not set(datasets.TREE_TRAIN) & set(datasets.TREE_TEST)
    scene = datasets.tree_scene("OSBS_029", 2, 4, 0.5)
    assert scene.pixels.shape == (200, 200, 3) and scene.labels.shape == (50, 50)
    assert 0.02 < scene.labels.mean() < 0.5


def test_augment_keeps_pixels_and_labels_registered() -> None:
    rng = np.random.default_rng(0)
    px = rng.random((6, 8, 8, 1)).astype(np.float32)
    patches = datasets.PatchSet(px, (px[..., 0] > 0.5).astype(np.int16))
    out = datasets.augment(patches, rng)
    np.testing.assert_array_equal(out.labels, (out.pixels[..., 0] > 0.5).astype(np.int16))
    assert not np.array_equal(out.pixels, px)
