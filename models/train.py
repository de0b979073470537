"""``spikescan train RECIPE``: train a shipped model from scratch with the Whetstone method, export, measure.

Phases: (1) float training with every activation at sharpness 0 and the float accuracy measured on the
held-out data; (2) sharpening layer by layer (``models.whetstone.Sharpener``) and a few epochs fully
sharpened; (3) export: batch norm folded, weights put on the ``2**-6`` grid; (4) the *package* is measured
with the emulator (spiking accuracy), checked spike for spike against the Keras reference, and against the
board quantiser; the card records all of it with the training provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from models import board, datasets, metrics, package, tasks
from models.card import Band, Detection, Encoding, FixedPoint, Layer, ModelCard, Normalisation, PopulationCode
from models.emulator import Emulator, EmulatorResult
from models.encoding import encode
from models.network import count_synapses, layer_shapes
from models.package import ModelPackage
from spikescan.errors import InvalidInput

if TYPE_CHECKING:
    from workers.arrayscan import ScorePredictor

RECIPES = Path(__file__).resolve().parent / "recipes"
WEIGHT_STEP = 2.0 ** -6


def load_recipe(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.json")))
        raise InvalidInput(f"unknown recipe {name_or_path!r} (known: {known})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    seed = int(args.seed if args.seed is not None else recipe["seed"])
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"spikescan-{recipe['name']}-"))
    holdout = tuple(h for h in (getattr(args, "holdout", None) or "").split(",") if h)
    command = "spikescan train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else \
        f"spikescan train {args.recipe} --out {out} --seed {seed}" + \
        (f" --holdout {','.join(holdout)}" if holdout else "")
    pkg = train(recipe, seed, out, command, holdout)
    print(f"{pkg.card.name}: {pkg.card.metrics.get('headline', '')}")
    print(f"package {pkg.id} written to {out}")
    return 0


def configure_tf(seed: int, threads: int) -> None:
    """Deterministic, and polite on a shared machine: TensorFlow gets ``threads`` cores at most."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process (e.g. under pytest): keep its pools
        pass
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(recipe: dict, seed: int, out: Path, command: str, holdout: tuple[str, ...] = (),
          prepared: datasets.Prepared | None = None, progress: keras.callbacks.Callback | None = None
          ) -> ModelPackage:
    """Train, export, measure and save a package. ``prepared`` (a user's own data) replaces the recipe's
    dataset; ``progress`` replaces Keras's own epoch lines."""
    started = time.monotonic()
    configure_tf(seed, int(recipe.get("threads", min(2, os.cpu_count() or 1))))
    prepared = prepared or datasets.prepare(recipe, holdout)
    card = make_card(recipe, prepared.thresholds, seed, prepared.sides_m)
    model, keras_metrics, epochs = fit(card, prepared, recipe, seed, progress)
    int_weights = offset_output_biases(export(model, card), card, recipe.get("output_bias_offset", {}))
    tuned: dict[str, object] = {}
    if recipe.get("tune_min_score"):  # a detector's peak threshold, chosen on the validation strips
        card, tuned = tune_detection(package.from_parts(card, int_weights), prepared.test,
                                     [float(v) for v in recipe["tune_min_score"]])
    _stage(progress, "measuring the package on the held-out data")
    measured = measure(package.from_parts(card, int_weights), prepared, recipe)
    if prepared.baseline is not None:
        measured["majority_baseline"] = prepared.baseline
    if tuned:
        measured["validation_boxes_iou40"] = tuned
    training = {**provenance(recipe, seed, command, epochs, time.monotonic() - started, len(prepared.train)),
                **prepared.notes, "holdout": list(holdout)}
    card = card.model_copy(update={"training": training, "metrics": {**keras_metrics, **measured}})
    return package.save(card, int_weights, out)


class Batches(keras.utils.PyDataset):
    """Shuffled, augmented batches of (pixels, labels); reshuffled each epoch from a seeded generator."""

    def __init__(self, patches: datasets.PatchSet, batch_size: int, seed: int, jitter: float = 0.0,
                 augment: dict | None = None) -> None:
        super().__init__()
        self.patches, self.batch_size = patches, batch_size
        # The recipe's "augment" block (datasets.augment's keywords); a bare "jitter" is the older form.
        self.augment = {"jitter": jitter, **(augment or {})}
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(patches))

    def __len__(self) -> int:
        return -(-len(self.patches) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        masks = None if self.patches.masks is None else self.patches.masks[idx]
        part = datasets.PatchSet(self.patches.pixels[idx], self.patches.labels[idx], masks)
        part = datasets.augment(part, self.rng, **self.augment)
        return part.pixels, part.labels.astype(np.int32)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.patches))


def masked_loss(class_weights: list[float]):  # type: ignore[no-untyped-def]
    """Weighted softmax cross-entropy over labelled cells only (label -1 is ignored)."""
    import tensorflow as tf

    weights = tf.constant(class_weights, dtype=tf.float32)

    def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        y = tf.cast(y_true, tf.int32)
        safe = tf.maximum(y, 0)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
        w = tf.gather(weights, safe) * tf.cast(y >= 0, tf.float32)
        return tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1.0)

    return loss


def _stage(progress: keras.callbacks.Callback | None, text: str) -> None:
    if progress is not None and hasattr(progress, "stage"):
        progress.stage(text)


def fit(card: ModelCard, prepared: datasets.Prepared, recipe: dict, seed: int,
        progress: keras.callbacks.Callback | None = None) -> tuple[keras.Model, dict[str, object], int]:
    """Float phase, then sharpening input-first, then fully sharpened epochs. Returns the model, the
    held-out scores of the float and the sharpened Keras model, and the epochs run.

    With validation patches (``prepared.validation``, from the training side) the float phase stops early
    when the validation loss stops improving (best weights restored) and the sharpening schedule starts
    from there; without them the recipe's epochs run as written (the shipped recipes)."""
    from models.keras_model import build_trainable
    from models.whetstone import Sharpener

    model, activations = build_trainable(card)
    model.compile(optimizer=keras.optimizers.Adam(float(recipe["learning_rate"])),
                  loss=masked_loss(prepared.class_weights))
    batches = Batches(prepared.train, int(recipe["batch_size"]), seed, float(recipe.get("jitter", 0.0)),
                      recipe.get("augment"))
    shown = [progress] if progress is not None else []
    verbose = 0 if progress is not None else 2
    val, early = None, []
    if prepared.validation is not None and len(prepared.validation):
        val = (prepared.validation.pixels, prepared.validation.labels.astype(np.int32))
        early = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(recipe.get("patience", 3)),
                                               restore_best_weights=True)]
    float_epochs = int(recipe["float_epochs"])
    _stage(progress, "float training")
    history = model.fit(batches, epochs=float_epochs, verbose=verbose, validation_data=val,
                        callbacks=early + shown)
    float_epochs = len(history.epoch)
    float_scores = evaluate(card, prepared.test, keras_predictor(model))
    schedule, max_epochs = sharpening_schedule({**recipe, "float_epochs": float_epochs}, len(activations))
    if progress is not None:
        progress.total = max_epochs
    sharpener = Sharpener(activations, schedule)
    # A gentler step while the activations turn into spikes: each layer adapts to the one below it.
    model.optimizer.learning_rate.assign(float(recipe.get("sharpen_learning_rate", recipe["learning_rate"])))
    stop = StopAfterSharp(sharpener, int(recipe["sharp_epochs"]))
    _stage(progress, "sharpening")
    history = model.fit(batches, initial_epoch=float_epochs, epochs=max_epochs, verbose=verbose,
                        validation_data=val, callbacks=[sharpener, stop, *shown])
    if sharpener.total < len(activations):
        raise RuntimeError(f"sharpening did not finish in {max_epochs} epochs "
                           f"(reached {sharpener.total:.2f} of {len(activations)})")
    sharp_scores = evaluate(card, prepared.test, keras_predictor(model))
    epochs = float_epochs + len(history.epoch)
    return model, {"float_unsharpened": float_scores, "keras_sharpened_float_weights": sharp_scores,
                   "sharpening": {"schedule": type(schedule).__name__, "epochs": epochs}}, epochs


def validation_score(card: ModelCard, prepared: datasets.Prepared, recipe: dict, seed: int, epochs: int
                     ) -> dict[str, object]:
    """A short float training of ``card``'s network (``epochs`` epochs, no sharpening) scored on the
    validation patches only: what the architecture search compares candidates by. The held-out test data
    (``prepared.test``) is never looked at, so choosing a network leaves the card's test figures honest.

    ``value`` is the balanced accuracy (mean recall over the classes validation has), robust to the class
    imbalance of user labels; ``loss`` is the same class-weighted loss early stopping watches."""
    from models.keras_model import build_trainable

    if prepared.validation is None or not len(prepared.validation):
        raise InvalidInput("the labels leave no validation patches to compare candidate networks on "
                           "(label a larger area)")
    keras.utils.set_random_seed(seed)  # every candidate starts from the same seeded state
    model, _ = build_trainable(card)
    model.compile(optimizer=keras.optimizers.Adam(float(recipe["learning_rate"])),
                  loss=masked_loss(prepared.class_weights))
    started = time.monotonic()
    model.fit(Batches(prepared.train, int(recipe["batch_size"]), seed, float(recipe.get("jitter", 0.0)),
                      recipe.get("augment")), epochs=epochs, verbose=0)
    val = prepared.validation
    labels = val.labels.astype(np.int32)
    # Called directly, not through predict/evaluate: those build a tf.function per model and TensorFlow
    # warns about retracing after a few candidates.
    logits = np.concatenate([np.asarray(model(val.pixels[i:i + 256], training=False))
                             for i in range(0, len(val), 256)])
    loss = float(masked_loss(prepared.class_weights)(labels, logits))
    cm = metrics.confusion(labels.ravel(), logits.argmax(axis=-1).ravel(), len(card.classes))
    support = cm.sum(axis=1)
    recalls = np.diag(cm)[support > 0] / support[support > 0]
    return {"value": round(float(recalls.mean()), 4), "metric": "validation balanced accuracy (float)",
            "loss": round(loss, 4), "epochs": epochs, "validation_cells": int(support.sum()),
            "seconds": round(time.monotonic() - started, 1)}


def sharpening_schedule(recipe: dict, n_layers: int):  # type: ignore[no-untyped-def]
    from models.whetstone import AdaptiveSchedule, FixedSchedule

    spec = recipe["sharpen"]
    start = int(recipe["float_epochs"])
    if spec["kind"] == "fixed":
        per_layer = float(spec["epochs_per_layer"])
        sharpening = int(np.ceil(per_layer * n_layers))
        return FixedSchedule(start, per_layer), start + sharpening + int(recipe["sharp_epochs"])
    schedule = AdaptiveSchedule(n_layers, step=float(spec["step"]), patience=int(spec["patience"]),
                                tolerance=float(spec["tolerance"]))
    return schedule, start + int(spec["max_epochs"])


class StopAfterSharp(keras.callbacks.Callback):
    """Ends training ``extra`` epochs after every layer reached sharpness 1."""

    def __init__(self, sharpener: object, extra: int) -> None:
        super().__init__()
        self.sharpener, self.extra, self.sharp_for = sharpener, extra, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        layers = self.sharpener.layers_to_sharpen  # type: ignore[attr-defined]
        if all(float(a.sharpness.numpy()) >= 1.0 for a in layers):
            self.sharp_for += 1
            if self.sharp_for > self.extra:
                self.model.stop_training = True


def export(model: keras.Model, card: ModelCard) -> dict[str, np.ndarray]:
    """Batch norm folded, then every weight and bias as an integer number of ``2**-6`` steps."""
    from models.keras_model import export_weights
    from models.whetstone import quantise

    return {k: quantise(v, card.fixed_point.weight_step) for k, v in export_weights(model, card).items()}


def offset_output_biases(int_weights: dict[str, np.ndarray], card: ModelCard, offsets: dict[str, int]
                         ) -> dict[str, np.ndarray]:
    """Move every output neuron of a class by a whole number of weight steps: the spiking network's decision
    threshold. Training balances classes per *cell*; a detector is judged per *box*, and touching crowns only
    stay separate components if the crown class wins less often than the loss would have it. The offset is
    chosen on the never-trained validation strip of the training images and applied to the package itself,
    so emulator, board and NEST all see the same network."""
    if not offsets:
        return int_weights
    owner = np.asarray(card.population_code.owner)
    key = f"{card.layers[-1].name}.b"
    bias = int_weights[key].copy()
    for name, steps in offsets.items():
        bias[owner == card.class_index(name)] += int(steps)
    return {**int_weights, key: bias}


def keras_predictor(model: keras.Model) -> ScorePredictor:
    """Class scores of the Keras model (softmax of its logits); invalid pixels are zeros, as encoded."""
    def predict(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
        logits = np.asarray(model(px * valid[..., None], training=False), dtype=np.float64)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    return predict


def emulator_predictor(pkg: ModelPackage) -> ScorePredictor:
    emulator = Emulator(pkg)
    return lambda px, valid: emulator.run(px, valid).scores


def evaluate(card: ModelCard, scenes: list[datasets.Scene], predict: ScorePredictor) -> dict[str, object]:
    """Held-out scores: each test scene scanned by the production chip grid and mosaic (default stride),
    the blended map's winning class scored on the labelled cells by the task plug-in."""
    from workers.arrayscan import scan_scores

    truth, pred = [], []
    for scene in scenes:
        rows, cols = scene.labels.shape
        pixels = scene.pixels[: rows * scene.stride, : cols * scene.stride]
        scores, valid = scan_scores(pixels, card, predict)
        pred.append(np.where(valid, scores.argmax(axis=-1), -1)[:rows, :cols].ravel())
        truth.append(np.where(valid[:rows, :cols], scene.labels, -1).ravel())
    return tasks.for_card(card).score_cells(np.concatenate(truth), np.concatenate(pred))


def board_agreement(pkg: ModelPackage, pixels: np.ndarray) -> dict[str, object]:
    """Class agreement of the board's weights (``models.board``, sPyNNaker's rule) with the package's."""
    return {"value": board.class_agreement(pkg, pixels), "coarsest_board_step": board.coarsest_step(pkg),
            "rule": board.RULE, "patches": len(pixels)}


def measure(pkg: ModelPackage, prepared: datasets.Prepared, recipe: dict) -> dict[str, object]:
    """Everything the card reports about the exported package, measured on held-out imagery."""
    card = pkg.card
    spiking = evaluate(card, prepared.test, emulator_predictor(pkg))
    pixels = held_out_patches(card, prepared.test, int(recipe.get("check_patches", 1000)))
    agreement, run = spike_agreement(pkg, pixels)
    names = ["input"] + [layer.name for layer in card.layers]
    return {
        "spiking": spiking,
        "headline": headline(card, spiking),
        "emulator_keras_agreement": agreement,
        "board_class_agreement": board_agreement(pkg, pixels),
        "spikes_per_patch": dict(zip(names, run.spikes_per_layer.mean(axis=0).round(1).tolist(),
                                     strict=True)),
        "neurons_per_copy": neurons_per_copy(card),
        "synapses_per_copy": synapses_per_copy(card),
    }


def held_out_patches(card: ModelCard, scenes: list[datasets.Scene], at_least: int) -> np.ndarray:
    """At least ``at_least`` patches cut from the held-out scenes, on the coarsest grid that gives them."""
    step = card.output_stride
    pixels = np.zeros((0, card.patch_size, card.patch_size, len(card.bands)), np.float32)
    for stride in range((card.patch_size // 2 // step) * step, 0, -step):
        pixels = np.concatenate([_grid_patches(card, s, stride) for s in scenes])
        if len(pixels) >= at_least:
            break
    return pixels


def _grid_patches(card: ModelCard, scene: datasets.Scene, stride: int) -> np.ndarray:
    h, w = scene.labels.shape[0] * scene.stride, scene.labels.shape[1] * scene.stride
    positions = datasets.grid_positions(h, w, card.patch_size, stride, scene.stride)
    return datasets.cut(scene, positions, card.patch_size).pixels


def spike_agreement(pkg: ModelPackage, pixels: np.ndarray) -> tuple[dict[str, object], EmulatorResult]:
    """Emulator vs ``build_reference(pkg, "spiking")`` on every layer: the fraction of patches whose spikes
    are identical everywhere, and the number of differing neurons per layer."""
    from models.keras_model import build_reference

    encoded = encode(pixels, pkg.card.encoding)
    run = Emulator(pkg).run_spikes(encoded, keep_layers=True)
    outputs = build_reference(pkg, "spiking").predict(encoded.astype(np.float32), batch_size=256, verbose=0)
    same = np.ones(len(pixels), dtype=bool)
    differing = {}
    for layer, ours, theirs in zip(pkg.card.layers, run.layer_spikes or [], outputs, strict=True):
        diff = ours.reshape(len(pixels), -1) != np.asarray(theirs).reshape(len(pixels), -1)
        same &= ~diff.any(axis=1)
        differing[layer.name] = int(diff.sum())
    summary = {"patches_identical": float(same.mean()), "patches": len(pixels),
               "differing_neurons": differing}
    return summary, run


def headline(card: ModelCard, spiking: dict[str, object]) -> str:
    return tasks.for_card(card).headline(spiking)


def make_card(recipe: dict, thresholds: list[list[float]], seed: int, sides_m: list[float] | None = None
              ) -> ModelCard:
    from models.whetstone import population_owner

    n_classes, npc = len(recipe["classes"]), int(recipe["neurons_per_class"])
    layers = [Layer(**spec) for spec in recipe["layers"]]
    layers[-1] = layers[-1].model_copy(update={"filters": n_classes * npc})
    card = ModelCard(
        name=recipe["name"], version=recipe["version"], task=recipe["task"], summary=recipe["summary"],
        classes=recipe["classes"], colors=recipe["colors"], target_classes=recipe["target_classes"],
        bands=[Band(**b) for b in recipe["bands"]], gsd_m=recipe["gsd_m"], patch_size=recipe["patch_size"],
        output_stride=recipe["output_stride"],
        encoding=Encoding(levels=int(recipe["levels"]), thresholds=thresholds), layers=layers,
        population_code=PopulationCode(neurons_per_class=npc, owner=population_owner(n_classes, npc, seed),
                                       beta=float(recipe["beta"])),
        fixed_point=FixedPoint(weight_step=WEIGHT_STEP, threshold=0.5),
        detection=Detection(**{**recipe.get("detection", {}), **({"sides_m": sides_m} if sides_m else {})}),
        normalisation=Normalisation(**recipe.get("normalisation", {})),
    )
    return card.model_copy(update={"receptive_field_px": receptive_field(card)})


def receptive_field(card: ModelCard) -> int:
    """Input pixels one output neuron sees along each axis."""
    rf, jump = 1, 1
    for layer in card.layers:
        if layer.kind in ("conv2d", "maxpool"):
            rf += (layer.kernel - 1) * jump
            jump *= layer.stride
    return rf


def provenance(recipe: dict, seed: int, command: str, epochs: int, seconds: float, n_patches: int
               ) -> dict[str, object]:
    from spikescan.data import SOURCES

    names = recipe["data"]
    return {
        "command": command,
        "recipe": recipe["name"],
        "seed": seed,
        "epochs": epochs,
        "training_patches": n_patches,
        "wall_time_s": round(seconds, 1),
        "cpu_threads": int(recipe.get("threads", 2)),
        "host": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "software": {p: metadata.version(p) for p in ("tensorflow-cpu", "keras", "numpy", "rasterio")},
        "data": [{"package": SOURCES[n].requirement, "archive": SOURCES[n].archive,
                  "sha256": SOURCES[n].sha256, "licence": SOURCES[n].licence, "files": recipe["files"]}
                 for n in names],
        "method": "Whetstone (Severa et al. 2019): bounded-ReLU sharpening input-first, N-hot population "
                  "output, batch norm folded, weights rounded to the 2**-6 grid",
    }


def neurons_per_copy(card: ModelCard) -> int:
    return sum(ls.neurons for ls in layer_shapes(card) if ls.layer.kind != "flatten")


def synapses_per_copy(card: ModelCard) -> int:
    return count_synapses(card)


# --- detection: the peak threshold, chosen on the validation strips ----------------------------------------

def scene_score_maps(card: ModelCard, scenes: list[datasets.Scene], predict: ScorePredictor
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Blended score maps and valid cells of whole scenes, by the production chip grid and mosaic."""
    from workers.arrayscan import scan_scores

    maps, valid = [], []
    for scene in scenes:
        rows, cols = scene.labels.shape
        scores, ok = scan_scores(scene.pixels[: rows * scene.stride, : cols * scene.stride], card, predict)
        maps.append(scores[:rows, :cols])
        valid.append(ok[:rows, :cols])
    return maps, valid


def tune_detection(pkg: ModelPackage, scenes: list[datasets.Scene], candidates: list[float]
                   ) -> tuple[ModelCard, dict[str, object]]:
    """The card with ``detection.min_score`` chosen on the validation scenes (never trained on) from the
    spiking package's score maps (production chip grid and mosaic), by ``models.tasks.detection``."""
    from models.tasks.detection import LabelledMap, choose_min_score

    maps, valid = scene_score_maps(pkg.card, scenes, emulator_predictor(pkg))
    labelled = []
    for scene, m, v in zip(scenes, maps, valid, strict=True):
        assert scene.boxes is not None  # tree scenes carry their hand-drawn boxes
        labelled.append(LabelledMap(scene.name, [tuple(b) for b in scene.boxes], m, v))
    return choose_min_score(pkg.card, labelled, candidates)
