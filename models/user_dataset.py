"""The ``user`` dataset kind: a user's labelled scenes → training and validation patches, held-out scenes.

The split is spatial, as the land-cover recipe's: every scene's labelled window is cut into square blocks;
whole blocks (taken in a seeded random order, across all scenes) go to the held-out test set until
``test_fraction`` of the labelled pixels are there, then more to validation (``val_fraction``). Training
patches lie wholly inside training blocks and validation patches wholly inside validation blocks, so no
held-out pixel is ever inside a training or validation patch. Validation (early stopping of the float
phase, the loss shown while sharpening) comes from the training side only; the test blocks are touched
once, by the measurements of the finished package.

Of 300 seeded orders the one used tests the most classes (a class with pixels in training and in test)
and, among those, splits every class's pixels closest to the fractions; a class that cannot be tested
(drawn as one small polygon) is named in the card's warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import metrics, user_images, user_patch
from models.datasets import PatchSet, Scene, concat, cut, masked, window_positions
from models.user_images import TrainingImage
from models.user_labels import Labels, SceneRead, read_labels, read_scenes

TRAIN, VALIDATION, TEST = 0, 1, 2
FEW_PIXELS = 50  # a class with fewer labelled training pixels than this is learnt from too little
FEW_POLYGONS = 3  # ... or from fewer separate polygons (one field is one look at the class)


@dataclass
class UserData:
    train: PatchSet
    validation: PatchSet
    test: list[Scene]
    notes: dict[str, object]
    baseline: dict[str, object]
    warnings: list[str]


def block_roles(scenes: list[Scene], block: int, test_fraction: float, val_fraction: float, seed: int,
                n_classes: int) -> tuple[list[np.ndarray], list[int]]:
    """Per scene an int8 role map (TRAIN / VALIDATION / TEST per pixel); and the classes left untested."""
    cells = []  # (scene, block row, block col, labelled pixels per class)
    for i, s in enumerate(scenes):
        h, w = s.labels.shape
        for r in range(-(-h // block)):
            for c in range(-(-w // block)):
                part = s.labels[r * block:(r + 1) * block, c * block:(c + 1) * block]
                cells.append((i, r, c, np.bincount(part[part >= 0].ravel(), minlength=n_classes)))
    counts = np.stack([x[3] for x in cells])
    per_class = np.maximum(counts.sum(0), 1)
    want = {TEST: test_fraction, VALIDATION: val_fraction}
    best: tuple[tuple[int, float], np.ndarray] | None = None
    for attempt in range(seed, seed + 300):
        order = np.random.default_rng(attempt).permutation(len(cells))
        role = np.full(len(cells), TRAIN, np.int8)
        taken = np.cumsum(counts[order].sum(axis=1))
        n_test = int(np.searchsorted(taken, test_fraction * counts.sum())) + 1
        n_val = int(np.searchsorted(taken, (test_fraction + val_fraction) * counts.sum())) + 1
        role[order[:n_test]], role[order[n_test:n_val]] = TEST, VALIDATION
        both = int(((counts[role == TEST].sum(0) > 0) & (counts[role == TRAIN].sum(0) > 0)).sum())
        # Among orders testing as many classes, the one whose every class is split closest to the fractions.
        skew = float(sum(np.abs(counts[role == r].sum(0) / per_class - f).sum() for r, f in want.items()))
        key = (both, -skew)
        if best is None or key > best[0]:
            best = (key, role)
    assert best is not None
    role = best[1]
    maps = [np.zeros(s.labels.shape, np.int8) for s in scenes]
    for (i, r, c, _), k in zip(cells, role, strict=True):
        maps[i][r * block:(r + 1) * block, c * block:(c + 1) * block] = k
    untested = [k for k in range(n_classes)
                if not counts[role == TEST, k].sum() or not counts[role == TRAIN, k].sum()]
    return maps, untested


def patches(scene: Scene, roles: np.ndarray, role: int, size: int, stride: int) -> PatchSet:
    """Windows wholly on valid pixels of ``role`` blocks, holding at least one labelled pixel of them."""
    valid = np.isfinite(scene.pixels).all(axis=-1)
    mine = roles == role
    positions = window_positions(mine & valid, size, stride, need=(scene.labels >= 0) & mine)
    return cut(masked(scene, mine), positions, size)


def side_counts(scenes: list[Scene], roles: list[np.ndarray], role: int, classes: list[str]
                ) -> dict[str, int]:
    """Labelled pixels per class in the ``role`` blocks of every scene."""
    total = sum(np.bincount(s.labels[(r == role) & (s.labels >= 0)].ravel(), minlength=len(classes))
                for s, r in zip(scenes, roles, strict=True))
    return dict(zip(classes, np.asarray(total).tolist(), strict=True))


def majority_baseline(classes: list[str], train_counts: np.ndarray, test: list[Scene]) -> dict[str, object]:
    """The scores of always answering the training side's most common class, on the same held-out cells."""
    majority = int(np.argmax(train_counts))
    truth = np.concatenate([s.labels.ravel() for s in test])
    report = metrics.classification_report(truth, np.full_like(truth, majority), classes)
    return {"class": classes[majority], **report}


def load(spec: dict, images: list[TrainingImage] | None = None
         ) -> tuple[Labels, list[SceneRead], user_patch.PatchChoice]:
    """The labels, every scene's labelled window (a patch of context around it) and the patch: ``spec``'s
    ``patch``, else the one the labels' scale gives (``models.user_patch``)."""
    labels = read_labels(Path(spec["labels"]), spec.get("label_field"), spec["task"], spec.get("background"))
    images = images or user_images.resolve(spec["images"], spec.get("bands"))
    gsd = float(spec["gsd_m"])
    choice = user_patch.for_labels(spec["task"], labels.geometries, labels.crs, images[0], gsd,
                                   spec.get("patch"))
    return labels, read_scenes(images, labels, gsd, choice.patch), choice


def build(recipe: dict, labels: Labels, reads: list[SceneRead]) -> UserData:
    """Patches and held-out scenes of a user recipe (``recipe["user"]`` holds the file names and choices)."""
    split, n = recipe["split"], len(labels.classes)
    scenes = [r.scene for r in reads]
    roles, untested = block_roles(scenes, int(split["block"]), float(split["test_fraction"]),
                                  float(split["val_fraction"]), int(split["seed"]), n)
    size, stride = int(recipe["train_patch"]), int(recipe["train_stride"])
    train = concat([patches(s, r, TRAIN, size, stride) for s, r in zip(scenes, roles, strict=True)])
    validation = concat([patches(s, r, VALIDATION, size, stride) for s, r in zip(scenes, roles, strict=True)])
    test = [masked(s, r == TEST) for s, r in zip(scenes, roles, strict=True)]
    per_side = {side: side_counts(scenes, roles, role, labels.classes)
                for side, role in (("train", TRAIN), ("validation", VALIDATION), ("test", TEST))}
    polygons = {c: int((labels.class_of == k).sum()) for k, c in enumerate(labels.classes)}
    warnings = [f"class {labels.classes[k]!r} has labelled pixels on one side of the split only: it is not "
                "scored on held-out data" for k in untested]
    for c in labels.classes:
        if c == labels.background:
            continue
        if per_side["train"][c] < FEW_PIXELS or polygons[c] < FEW_POLYGONS:
            warnings.append(f"class {c!r} has few labels ({polygons[c]} polygons, {per_side['train'][c]} "
                            f"training pixels): expect its scores to be unreliable; label more")
    if len(train) == 0:
        from spikescan.errors import InvalidInput

        raise InvalidInput(f"{labels.path}: the labels leave no {size}x{size} training window on valid "
                           "pixels (label more, or larger areas)")
    train_counts = np.array(list(per_side["train"].values()))
    notes = {
        "split": (f"spatial: {split['block']}-px square blocks of each scene's labelled window, seeded "
                  "order; "
                  f"about {split['test_fraction']:.0%} of the labelled pixels held out for test and "
                  f"{split['val_fraction']:.0%} for validation (early stopping, taken from the training "
                  "side); no training or validation patch contains a test pixel"),
        "class_balance": {"labelled_pixels": per_side, "polygons": polygons},
        "training_patches": len(train), "validation_patches": len(validation),
        "test_labelled_pixels": int(sum((s.labels >= 0).sum() for s in test)),
        "warnings": warnings,
    }
    baseline = majority_baseline(labels.classes, train_counts, test)
    return UserData(train, validation, test, notes, baseline, warnings)
