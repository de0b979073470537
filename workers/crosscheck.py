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

from models import package as model_package
from models.emulator import Emulator
from models.network import layer_shapes
from models.package import ModelPackage
from spikescan.errors import InvalidInput
from workers.backends import REGISTRY, get_backend
from workers.samples import default_scene, real_patches


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
