"""``spikescan train --task segmentation --images ... --labels FILE --out DIR``: a package from your data.

Builds a recipe-like dict in memory (the shipped land-cover recipe's training settings, the user's classes,
bands and grid, a network chosen for the board by ``models.user_arch``) and the ``user`` dataset
(``models.user_labels`` + ``models.user_dataset``), then runs the same ``models.train.train`` as the shipped
recipes: float phase, Whetstone sharpening, export to the fixed-point grid, measurements of the package.

The package is written to a hidden directory beside ``--out`` and renamed into place only when complete, so
Ctrl-C or a failure leaves no half-written package behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import datasets, package, user_arch, user_dataset, user_images, user_patch
from models.card import ModelCard
from models.user_images import ImageRef, card_bands, image_name, scene_gsd
from models.user_labels import sha256_of
from spikescan.errors import InvalidInput

if TYPE_CHECKING:
    from models.progress import EpochProgress

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
TRAIN_PATCH = 10  # training windows (px): the land-cover recipe's; the network is fully convolutional
BLOCK = 24  # split block side (px), as the land-cover recipe


def colour(i: int) -> list[int]:
    if i < len(PALETTE):
        return [*PALETTE[i], 255]
    rng = np.random.default_rng(i)
    return [*(int(v) for v in rng.integers(30, 226, 3)), 255]


def make_recipe(args: argparse.Namespace, classes: list[str], bands: list[dict[str, str | None]], gsd: float,
                seed: int, patch: int) -> dict:
    epochs = int(args.epochs)
    background = args.background
    return {
        "name": args.name or Path(args.out).name, "version": "1.0.0", "task": "segmentation",
        "summary": f"{len(classes)} classes per {gsd:g} m pixel, trained on {Path(args.labels).name}",
        "dataset": "user", "data": [], "files": [],
        "classes": classes, "colors": [colour(i) for i in range(len(classes))],
        "target_classes": [c for c in classes if c != background],
        "bands": bands, "gsd_m": gsd, "patch_size": patch, "output_stride": 1,
        "levels": 8, "neurons_per_class": 3, "beta": 2.0, "layers": user_arch.layers(user_arch.CANDIDATES[0]),
        "split": {"kind": "blocks", "block": BLOCK, "test_fraction": 0.3, "val_fraction": 0.15, "seed": 7},
        "train_patch": min(TRAIN_PATCH, patch), "train_stride": 2, "batch_size": 64,
        "learning_rate": 0.003, "float_epochs": epochs, "patience": max(3, epochs // 5),
        "sharpen": {"kind": "fixed", "epochs_per_layer": max(1, epochs // 6)},
        "sharp_epochs": max(1, epochs // 4), "seed": seed, "threads": min(2, os.cpu_count() or 1),
        "check_patches": 1000,
    }


def check_args(args: argparse.Namespace) -> None:
    if args.task not in ("segmentation", "detection"):
        raise InvalidInput(f"--task {args.task}: training from your own labels is segmentation or detection")
    if not args.images or not args.labels:
        raise InvalidInput("--task needs --images SCENE [SCENE ...] and --labels FILE")
    if args.out is None:
        raise InvalidInput("--task needs --out DIR (where the package goes)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out}: already exists and is not empty; choose a new --out")
    # Without --patch the labels' scale chooses it (models.user_patch), once they have been read.
    if (args.patch is not None and args.patch < 8) or min(args.epochs, args.max_cores_per_copy,
                                                           args.search_epochs) < 1:
        raise InvalidInput("--patch must be at least 8, --epochs, --search-epochs and --max-cores-per-copy "
                           "at least 1")
    if args.task == "detection" and args.patch is not None and args.patch % 4:
        raise InvalidInput("--patch must be a multiple of 4 for detection (4-pixel output cells)")


def main(args: argparse.Namespace) -> int:
    check_args(args)
    if args.task == "detection":
        from models import user_detection

        return user_detection.main(args)
    seed = int(args.seed if args.seed is not None else 1)
    images = user_images.resolve(args.images, args.bands)
    with images[0].opened() as src:
        gsd = float(args.gsd) if args.gsd else scene_gsd(src, images[0].source.ref)
    spec = {"labels": args.labels, "label_field": args.label_field, "task": args.task,
            "background": args.background, "gsd_m": gsd, "patch": args.patch}
    # every bad label file is refused here, before any output
    labels, reads, patch = user_dataset.load(spec, images)
    from models.progress import EpochProgress  # a keras callback: TensorFlow, after the checks

    progress = EpochProgress(0, as_json=args.json)
    progress.stage(f"{len(labels.geometries)} labels in {len(labels.classes)} classes on "
                   f"{len(reads)} scene(s)")
    recipe = make_recipe(args, labels.classes, card_bands(images[0]), gsd, seed, patch.patch)
    smallest = user_arch.layers(user_arch.CANDIDATES[-1])
    patch = user_patch.fit_budget(patch, user_arch.cores_at_patch(recipe, smallest, seed),
                                  int(args.max_cores_per_copy))
    recipe.update(patch_size=patch.patch, train_patch=min(TRAIN_PATCH, patch.patch))
    data = user_dataset.build(recipe, labels, reads)
    for text in data.warnings:
        print(f"spikescan: warning: {text}", file=sys.stderr)
    data.notes.update(provenance(labels, reads))
    data.notes["patch_from_labels"] = patch.note()
    prepared = datasets.finish(recipe, data.train, data.test, data.notes)
    prepared.validation, prepared.baseline = data.validation, data.baseline
    layers = choose_network(args, recipe, prepared, seed, progress)
    sharpening = int(np.ceil(recipe["sharpen"]["epochs_per_layer"] * len(layers)))
    progress.total = recipe["float_epochs"] + sharpening + recipe["sharp_epochs"]
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = "spikescan " + shlex.join(argv)
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks
    pkg = write_atomically(Path(args.out), lambda tmp: finish_card(
        train.train(recipe, seed, tmp, command, prepared=prepared, progress=progress), tmp))
    m = pkg.card.metrics
    if args.json:
        print(json.dumps({"event": "done", "package": str(args.out), "id": pkg.id, "headline": m["headline"],
                          "majority_baseline_accuracy": m["majority_baseline"]["overall_accuracy"],  # type: ignore[index]
                          "warnings": data.warnings}))
    else:
        print(f"{pkg.card.name}: {m['headline']}; majority-class baseline "
              f"{m['majority_baseline']['overall_accuracy']:.2f}")  # type: ignore[index]
        print(f"package {pkg.id} written to {args.out}")
    return 0


def choose_network(args: argparse.Namespace, recipe: dict, prepared: datasets.Prepared, seed: int,
                   progress: EpochProgress, candidates: list[tuple[list[int], user_arch.Layers]] | None = None
                   ) -> user_arch.Layers:
    """The architecture search within ``--max-cores-per-copy`` (``models.user_arch``), each candidate trained
    for ``--search-epochs`` (at most ``--epochs``) on the training patches and scored on the validation
    patches; sets the recipe's layers and records the search in the card's training notes."""
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks
    train.configure_tf(seed, int(recipe.get("threads", min(2, os.cpu_count() or 1))))
    epochs = min(int(args.search_epochs), int(recipe["float_epochs"]))

    def score(card: ModelCard) -> dict[str, object]:
        result = train.validation_score(card, prepared, recipe, seed, epochs)
        progress.event({"event": "candidate", "layers": [la.filters for la in card.layers[:-1]], **result},
                       f"  validation balanced accuracy {result['value']:.3f} (loss {result['loss']:.3f}, "
                       f"{result['seconds']:.0f} s)")
        return result

    layers, arch = user_arch.search(
        lambda spec: train.make_card({**recipe, "layers": spec}, prepared.thresholds, seed),
        int(args.max_cores_per_copy), score, candidates, announce=progress.stage)
    recipe["layers"] = layers
    prepared.notes["architecture"] = arch
    return layers


def provenance(labels: user_dataset.Labels, reads: list[user_dataset.SceneRead]) -> dict[str, object]:
    return {
        "data": [{"labels": {"file": labels.path.name, "sha256": labels.sha256, "field": labels.field,
                             "crs": labels.crs.to_string(), "features": labels.features_read,
                             "features_used": len(labels.geometries), "background": labels.background},
                  "images": provenance_images(reads),
                  "licence": "the user's own data"}],
        "label_rule": ("polygon class per pixel centre (rasterio.features.rasterize), labels reprojected to "
                       "each scene's CRS; unlabelled pixels "
                       + (f"are class {labels.background!r}" if labels.background else "are ignored")),
    }


def provenance_images(reads: list[user_dataset.SceneRead]) -> list[dict[str, object]]:
    """Each image's name, where it is (a STAC Item: also its id and every band's asset) and its window."""
    out: list[dict[str, object]] = []
    for r in reads:
        stac = {"stac_item": user_images.stac_provenance(r.image)} if r.image.item is not None else {}
        out.append({"file": image_name(r.image.ref), **_where(r.image.ref), **stac, "crs": r.crs,
                    "native_gsd_m": r.native_gsd_m, "window_col_row_width_height": list(r.window_px)})
    return out


def _where(ref: ImageRef) -> dict[str, str | None]:
    # A remote image is recorded by its URL; hashing it would mean downloading it whole. A STAC Item's hash
    # is its JSON's: it pins the asset hrefs, not their pixels.
    if isinstance(ref, Path):
        return {"path": str(ref.absolute()), "sha256": sha256_of(ref)}
    return {"url": ref, "sha256": None}


def finish_card(pkg: package.ModelPackage, where: Path) -> package.ModelPackage:
    """Per-class precision and recall of the spiking package on the held-out blocks, next to the majority
    baseline's, from their confusion matrices."""
    m = pkg.card.metrics
    table = {name: per_class(pkg.card.classes, m[key]["confusion_matrix"])  # type: ignore[index]
             for name, key in (("spiking", "spiking"), ("majority_baseline", "majority_baseline"))}
    card = pkg.card.model_copy(update={"metrics": {**m, "held_out_per_class": table}})
    return package.save(card, pkg.weights, where)


def per_class(classes: list[str], confusion: list[list[int]]) -> dict[str, dict[str, float | int | None]]:
    cm = np.asarray(confusion)
    out: dict[str, dict[str, float | int | None]] = {}
    for i, c in enumerate(classes):
        predicted, support = int(cm[:, i].sum()), int(cm[i].sum())
        out[c] = {"precision": float(cm[i, i] / predicted) if predicted else None,
                  "recall": float(cm[i, i] / support) if support else None, "support": support}
    return out


def write_atomically(out: Path, make):  # type: ignore[no-untyped-def]
    """``make(tmp)`` writes the package into a hidden directory beside ``out``, renamed to ``out`` at the
    end; on any failure or Ctrl-C the hidden directory is removed and ``out`` is never created."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make(tmp)
        if out.exists():
            out.rmdir()  # checked empty before training started
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return package.load(out)
