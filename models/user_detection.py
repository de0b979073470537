"""``spikescan train --task detection``: a box detector from the user's scenes and boxes, polygons or points.

The tree recipe's method on the user's data (``models.datasets``): object-centre labels in three size bins
(``centre_labels``, ``size_bins``; bin edges at the training objects' size terciles), per-scene colour
standardisation, the tree network or a smaller one of its shape (``SHAPES``: the architecture search of
``models.user_arch`` within the SpiNNaker budget, scored on the validation bands' patches), peak picking with
its threshold chosen on validation strips (``train.tune_detection`` → ``tasks.detection.choose_min_score``).

Split: each scene's labelled window is cut into vertical bands (at least two chips wide); whole bands, in a
seeded order, are held out for the card's test figures (~25 %) and for validation (~15 %: early stopping and
the peak threshold); training windows lie wholly in training bands. The card's box P/R/F1 at IoU >= 0.4 on the
held-out bands stands next to the no-model baselines of ``models.baselines`` on the same bands: a grid of
median-size boxes and, when the bands include red, green and blue, excess-green peaks (tuned on validation).
Cells outside the objects' overall extent are unlabelled: the user has not said what is there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import baselines, datasets, package
from models.datasets import (
    PatchSet,
    Scene,
    centre_labels,
    concat,
    crop_columns,
    cut,
    size_bins,
    window_positions,
)
from models.evaluate import Matching, match_boxes
from models.user_labels import SceneRead, read_scenes
from models.user_objects import Objects, as_labels, read_objects, scene_boxes
from spikescan.errors import InvalidInput

TEST_FRACTION, VAL_FRACTION = 0.25, 0.15
STRIDE = 4  # the tree model's output cell (model pixels)
FEW_OBJECTS = 50  # fewer training (or held-out) objects than this: the user is warned
# The tree network, then smaller ones of the same shape: the architecture search's candidates.
SHAPES = [[12, 32, 32, 32], [8, 16, 16, 16], [8, 12, 12]]


def layers(filters: list[int]) -> list[dict[str, object]]:
    """Two stride-2 convolutions down to the output cell, then stride-1 context layers (the tree net's)."""
    out: list[dict[str, object]] = []
    for i, f in enumerate(filters):
        out.append({"name": f"conv{i + 1}", "kind": "conv2d", "filters": f, "kernel": 5 if i == 2 else 3,
                    "stride": 2 if i < 2 else 1, "padding": "same"})
    head = {"name": "out", "kind": "conv2d", "filters": 0, "kernel": 1, "stride": 1, "padding": "same"}
    return [*out, head]


@dataclass
class Band:
    """One held-out or validation band: the normalised scene crop (with boxes) and its raw pixels."""

    scene: Scene
    raw: np.ndarray


def make_recipe(args: argparse.Namespace, bands: list[dict[str, str | None]], gsd: float,
                edges_m: list[float], seed: int, kind: str, patch: int) -> dict:
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks
    base = train.load_recipe("trees-rgb")
    epochs = int(args.epochs)
    classes = ["background", f"{kind}_small", f"{kind}_medium", f"{kind}_large"]
    return {
        **base, "name": args.name or Path(args.out).name, "version": "1.0.0", "dataset": "user",
        "summary": f"object detection per {gsd * STRIDE:g} m cell, trained on {Path(args.labels).name}",
        "data": [], "files": [], "classes": classes, "target_classes": classes[1:],
        "bands": bands, "gsd_m": gsd, "patch_size": patch, "output_stride": STRIDE,
        "size_bins_m": edges_m, "detection": {**base["detection"], "label": kind},
        "float_epochs": epochs, "patience": max(3, epochs // 5),
        "sharpen": {"kind": "fixed", "epochs_per_layer": max(1, epochs // 8)},
        "sharp_epochs": max(1, epochs // 4), "seed": seed,
    }


def split_bands(width: int, band: int, seed: int) -> list[tuple[int, int, str]]:
    """(start, stop, role) column bands of one scene: whole bands to test and validation in seeded order."""
    n = max(width // band, 1)
    edges = [i * band for i in range(n)] + [width // STRIDE * STRIDE]
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * TEST_FRACTION)) if n >= 3 else 0
    n_val = max(1, round(n * VAL_FRACTION)) if n >= 3 else 0
    role = {int(i): "test" for i in order[:n_test]}
    role |= {int(i): "validation" for i in order[n_test:n_test + n_val]}
    return [(edges[i], edges[i + 1], role.get(i, "train")) for i in range(n)]


def build(recipe: dict, objects: Objects, reads: list[SceneRead], seed: int
          ) -> tuple[datasets.Prepared, list[Band], list[Band], dict[str, object]]:
    """Training patches, validation scenes (as ``Prepared.test``: the threshold is tuned there) and the
    held-out test bands."""
    from models.card import Normalisation
    from models.normalisation import SceneStats, apply

    size, edges = int(recipe["patch_size"]), recipe["size_bins_m"]
    spec = Normalisation(**recipe["normalisation"])
    train_sets, val_sets, val, test, sides, bins, plan = [], [], [], [], [], [], []
    for k, read in enumerate(reads):
        raw = read.scene.pixels
        boxes = scene_boxes(objects, read)
        pixels = apply(raw, spec, SceneStats.from_sample(raw))
        cells = (raw.shape[0] // STRIDE, raw.shape[1] // STRIDE)
        labels = centre_labels(boxes, size_bins(boxes, recipe["gsd_m"], edges), cells, STRIDE,
                               float(recipe["centre_radius_cells"]), float(recipe["ignore_radius_cells"]))
        # Only where the user drew objects is the rest known to be background.
        extent = np.zeros(cells, bool)
        if len(boxes):
            x0, y0 = np.floor(boxes[:, :2].min(axis=0) / STRIDE).astype(int)
            x1, y1 = np.ceil(boxes[:, 2:].max(axis=0) / STRIDE).astype(int)
            extent[max(y0, 0):y1, max(x0, 0):x1] = True
        labels[~extent | ~np.isfinite(pixels[STRIDE // 2::STRIDE, STRIDE // 2::STRIDE][:cells[0], :cells[1]]
                                       ).all(axis=-1)] = -1
        scene = Scene(read.scene.name, pixels, labels.astype(np.int16), STRIDE, boxes=boxes,
                      mask=datasets.crown_mask(boxes, pixels.shape[:2]))
        band = max(2 * size, (raw.shape[1] // 8) // STRIDE * STRIDE)
        allowed = np.zeros(pixels.shape[:2], bool)
        for start, stop, role in split_bands(raw.shape[1], band, seed + k):
            plan.append({"scene": scene.name, "columns": [start, stop], "role": role})
            if role == "train":
                allowed[:, start:stop] = True
                continue
            part = Band(crop_columns(scene, start, stop), raw[:, start:stop])
            (test if role == "test" else val).append(part)
            if role == "validation":
                val_sets.append(_patches(part.scene, np.ones(part.scene.pixels.shape[:2], bool), size,
                                         int(recipe["train_stride"])))
        train_sets.append(_patches(scene, allowed, size, int(recipe["train_stride"])))
        centre = (boxes[:, 0] + boxes[:, 2]) / 2
        mine = allowed[0, np.clip(centre.astype(int), 0, allowed.shape[1] - 1)] if len(boxes) else []
        sides.append(datasets.box_sides_m(boxes[mine], recipe["gsd_m"]))
        bins.append(size_bins(boxes[mine], recipe["gsd_m"], edges))
    train_set = concat(train_sets)
    if not test or not val or not len(train_set):
        raise InvalidInput(f"{objects.path}: the labelled area is too small to hold out test and validation "
                           f"bands ({2 * size} model pixels wide each) and still train: label a larger area")
    all_sides, all_bins = np.concatenate(sides), np.concatenate(bins)
    sides_m = [round(float(np.median(all_sides[all_bins == k])), 2) if (all_bins == k).any() else
               float(edges[min(k - 1, len(edges) - 1)]) for k in (1, 2, 3)]
    notes: dict[str, object] = {
        "split": (f"spatial: vertical bands of each scene's labelled window, whole bands held out "
                  f"(~{TEST_FRACTION:.0%} test: the card's box figures; ~{VAL_FRACTION:.0%} validation: "
                  "early stopping and the peak threshold); no training window touches either"),
        "bands": plan, "objects_in_training_bands": int(len(all_sides)),
        "objects_held_out": int(sum(len(b.scene.boxes) for b in test)),  # type: ignore[arg-type]
        "label_rule": (f"{objects.size_rule}; object centres: a cell within {recipe['centre_radius_cells']} "
                       f"cells of a box centre takes its size bin by side sqrt(w h) against {edges} m "
                       "(the training objects' terciles), cells within "
                       f"{recipe['ignore_radius_cells']} cells are ignored, the rest of the objects' extent "
                       "is background, outside it unlabelled"),
        "size_bin_sides_m": sides_m, "normalisation": recipe["normalisation"],
        "median_training_side_m": round(float(np.median(all_sides)), 2),
    }
    warnings = [f"only {n} {what} objects: {why}; label more" for n, what, why in (
        (len(all_sides), "training", "the detector learns from too few examples"),
        (notes["objects_held_out"], "held-out", "the card's box figures are rough"))
        if n < FEW_OBJECTS]  # type: ignore[operator]
    notes["warnings"] = warnings
    prepared = datasets.finish(recipe, train_set, [b.scene for b in val], notes, sides_m)
    prepared.validation = concat(val_sets)
    return prepared, val, test, notes


def _patches(scene: Scene, allowed: np.ndarray, size: int, stride: int) -> PatchSet:
    valid = np.isfinite(scene.pixels).all(axis=-1)
    pixel_labels = np.repeat(np.repeat(scene.labels >= 0, STRIDE, 0), STRIDE, 1)
    need = np.zeros(allowed.shape, bool)
    need[:pixel_labels.shape[0], :pixel_labels.shape[1]] = pixel_labels[:need.shape[0], :need.shape[1]]
    # Corners on the output-cell grid, so a patch's label cells line up with its pixels.
    positions = window_positions(allowed & valid, size, np.lcm(stride, STRIDE), need=need & allowed)
    return cut(scene, positions, size)


def size_edges(objects: Objects, reads: list[SceneRead], gsd: float) -> list[float]:
    """Size-bin edges (m): the terciles of every object's side, so each bin has objects to learn from."""
    sides = np.concatenate([datasets.box_sides_m(scene_boxes(objects, r), gsd) for r in reads])
    lo, hi = np.quantile(sides, [1 / 3, 2 / 3])
    return [round(float(lo), 2), round(float(max(hi, lo + 0.1)), 2)]


def held_out_boxes(pkg: package.ModelPackage, test: list[Band], val: list[Band], side: float
                   ) -> dict[str, object]:
    """Box P/R/F1 at IoU >= 0.4 on the held-out bands: the package (its own threshold), the baselines."""
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks
    from models.tasks.detection import LabelledMap, box_table

    card = pkg.card
    maps, valid = train.scene_score_maps(card, [b.scene for b in test], train.emulator_predictor(pkg))
    labelled = [LabelledMap(f"{b.scene.name}[{i}]", [tuple(x) for x in b.scene.boxes], m, v)  # type: ignore[union-attr]
                for i, (b, m, v) in enumerate(zip(test, maps, valid, strict=True))]
    spiking = box_table(card, labelled, [card.detection.min_score])[card.detection.min_score]
    truth = [[tuple(x) for x in b.scene.boxes] for b in test]  # type: ignore[union-attr]
    grid = sum((match_boxes(baselines.grid_boxes(b.raw.shape[1], b.raw.shape[0], side), t)
                for b, t in zip(test, truth, strict=True)), Matching(0, 0, 0))
    out: dict[str, object] = {"spiking": spiking, "min_score": card.detection.min_score,
                              "iou": 0.4, "held_out_bands": len(test),
                              "grid_baseline": {**grid.as_dict(), "box_side_px": round(side, 1)}}
    rgb = rgb_bands(card)
    if rgb is None:
        out["excess_green_baseline"] = None
        out["excess_green_note"] = "not computed: the bands are not named red, green and blue"
        return out
    tuning = [baselines.LabelledImage(b.scene.name, b.raw[..., rgb], [tuple(x) for x in b.scene.boxes])  # type: ignore[misc,union-attr]
              for b in val]
    tuned = baselines.tune_excess_green(tuning, STRIDE, side)
    exg = sum((match_boxes(baselines.excess_green_boxes(b.raw[..., rgb], STRIDE, side, tuned["min_score"],
                                                        tuned["sigma_cells"]), t)
               for b, t in zip(test, truth, strict=True)), Matching(0, 0, 0))
    out["excess_green_baseline"] = {**exg.as_dict(), "tuned_on_validation": tuned}
    return out


def rgb_bands(card) -> list[int] | None:  # type: ignore[no-untyped-def]
    names = [b.name.lower() for b in card.bands]
    if all(c in names for c in ("red", "green", "blue")):
        return [names.index("red"), names.index("green"), names.index("blue")]
    return None


def finish_card(pkg: package.ModelPackage, test: list[Band], val: list[Band], where: Path
                ) -> package.ModelPackage:
    """The card with box figures on the held-out bands beside the baselines' (box side: the training
    objects' median, as the tree baselines use)."""
    side = float(pkg.card.training["median_training_side_m"]) / pkg.card.gsd_m  # type: ignore[arg-type]
    boxes = held_out_boxes(pkg, test, val, side)
    s = boxes["spiking"]["overall"]  # type: ignore[index]
    g = boxes["grid_baseline"]
    e = boxes["excess_green_baseline"]
    headline = (f"box F1 {s['f1']:.2f} (P {s['precision']:.2f}, R {s['recall']:.2f}) at IoU >= 0.4 on "
                f"held-out bands; no-model baselines: grid F1 {g['f1']:.2f}"  # type: ignore[index]
                + (f", excess-green F1 {e['f1']:.2f}" if e else ""))  # type: ignore[index]
    m = pkg.card.metrics
    card = pkg.card.model_copy(update={"metrics": {**m, "held_out_boxes_iou40": boxes, "headline": headline}})
    return package.save(card, pkg.weights, where)


def main(args: argparse.Namespace) -> int:
    from models import user_arch, user_images, user_patch
    from models.user_images import card_bands, scene_gsd
    from models.user_train import choose_network, provenance_images, write_atomically

    seed = int(args.seed if args.seed is not None else 1)
    images = user_images.resolve(args.images, args.bands)
    with images[0].opened() as src:
        gsd = float(args.gsd) if args.gsd else scene_gsd(src, images[0].source.ref)
    objects = read_objects(Path(args.labels), args.size_field, float(args.default_size), args.label_field)
    patch = user_patch.for_labels("detection", objects.geometries, objects.crs, images[0], gsd, args.patch,
                                  objects.sides_m)
    reads = read_scenes(images, as_labels(objects), gsd, patch.patch)
    from models.progress import EpochProgress  # a keras callback: TensorFlow, after the checks

    progress = EpochProgress(0, as_json=args.json)
    recipe = make_recipe(args, card_bands(images[0]), gsd, size_edges(objects, reads, gsd), seed,
                         objects.kind, patch.patch)
    patch = user_patch.fit_budget(patch, user_arch.cores_at_patch(recipe, layers(SHAPES[-1]), seed),
                                  int(args.max_cores_per_copy))
    recipe["patch_size"] = patch.patch
    progress.stage(f"{len(objects.geometries)} objects on {len(reads)} scene(s)")
    prepared, val, test, notes = build(recipe, objects, reads, seed)
    for text in notes["warnings"]:  # type: ignore[attr-defined]
        print(f"spikescan: warning: {text}", file=sys.stderr)
    prepared.notes.update({
        "data": [{"labels": {"file": objects.path.name, "sha256": objects.sha256,
                             "crs": objects.crs.to_string(),
                             "features": objects.features_read, "features_used": len(objects.geometries)},
                  "images": provenance_images(reads), "licence": "the user's own data"}],
        "patch_from_labels": patch.note()})
    chosen = choose_network(args, recipe, prepared, seed, progress, [(f, layers(f)) for f in SHAPES])
    sharpening = int(np.ceil(recipe["sharpen"]["epochs_per_layer"] * len(chosen)))
    progress.total = recipe["float_epochs"] + sharpening + recipe["sharp_epochs"]
    command = "spikescan " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks
    pkg = write_atomically(Path(args.out), lambda tmp: finish_card(
        train.train(recipe, seed, tmp, command, prepared=prepared, progress=progress), test, val, tmp))
    m = pkg.card.metrics
    if args.json:
        print(json.dumps({"event": "done", "package": str(args.out), "id": pkg.id, "headline": m["headline"],
                          "held_out_boxes_iou40": m["held_out_boxes_iou40"],
                          "warnings": pkg.card.training.get("warnings", [])}))
    else:
        print(f"{pkg.card.name}: {m['headline']}")
        print(f"package {pkg.id} written to {args.out}")
    return 0

