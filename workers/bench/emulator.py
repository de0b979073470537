"""Table 1: the exact emulator against the same architecture as a float Keras/TensorFlow model (ReLU).

Fair by construction (issue 12):
- same input: the model's held-out scene, the same real patches on both sides, in one process;
- same encoder: both sides start from pixels through the emulator's fast thermometer encoder (uint8), the
  float model casting its spikes to float32 inside its graph;
- same output: both decode to class scores (the float side's population decoder, counts @ owner then
  softmax, is in its graph) for ``speedup``; ``network_speedup`` times the layers alone, each side on its
  own native input (uint8 spikes for the int8 graph, float32 for Keras) with no decoding;
- each side at its own best batch size (several tried), the same threads;
- interleaved: every repeat times every side once, in turn, and each side keeps its best (least disturbed)
  time, so load from other processes on a shared machine hits both sides alike.
FLOP/s are dense-equivalent (2 x multiply-accumulates of the float network per patch). "Of peak" sets the
float side against a float32 GEMM measured with TensorFlow (the oneDNN kernels Keras runs on), and the
emulator against an int8 GEMM measured with onnxruntime (the kernels it runs on).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from models import package as model_package
from models.emulator import Emulator
from models.int8 import ENGINES
from models.int8_codec import Thermometer
from models.network import layer_shapes
from models.package import ModelPackage
from workers.bench import peaks
from workers.bench.child import run_child
from workers.samples import default_scene, real_patches

EMULATOR_BATCHES = (32, 64, 128)
KERAS_BATCHES = (16, 32, 64, 128, 256)


def macs_per_patch(pkg: ModelPackage) -> int:
    total = 0
    for ls in layer_shapes(pkg.card):
        if ls.layer.kind == "conv2d":
            k = ls.layer.kernel
            total += int(np.prod(ls.out_shape)) * k * k * ls.in_shape[-1]
        elif ls.layer.kind == "dense":
            total += int(np.prod(ls.in_shape)) * int(ls.out_shape[-1])
    return total


def float_models(pkg: ModelPackage, threads: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The float network as a user would run it: (uint8 spikes -> class scores, float32 spikes -> last
    layer). Both traced tf.functions on the same threads as the emulator."""
    import keras
    import tensorflow as tf

    from models.keras_model import build_reference

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    ref = build_reference(pkg, "float_relu")
    last = keras.Model(ref.inputs, ref.outputs[-1])  # the final layer only, as a user's model would return
    pc = pkg.card.population_code
    owner = np.asarray(pc.owner)
    onehot = tf.constant((owner[:, None] == np.arange(len(pkg.card.classes))).astype(np.float32))

    @tf.function
    def scores(spikes: Any) -> Any:
        out = last(tf.cast(spikes, tf.float32), training=False)
        return tf.nn.softmax(pc.beta * tf.tensordot(out, onehot, axes=1), axis=-1)

    @tf.function
    def network(spikes: Any) -> Any:
        return last(spikes, training=False)

    return scores, network


def batched(fn: Callable[[np.ndarray], Any], batch: int) -> Callable[[np.ndarray], None]:
    def run(x: np.ndarray) -> None:
        for lo in range(0, len(x), batch):
            np.asarray(fn(x[lo : lo + batch]))

    return run


class Sides:
    """The timed callables of one comparison, each with a best time over interleaved repeats."""

    def __init__(self) -> None:
        self.calls: dict[str, Callable[[], Any]] = {}
        self.best: dict[str, float] = {}

    def add(self, name: str, call: Callable[[], Any]) -> None:
        call()  # warm: traced graphs, compiled kernels, allocator pools
        self.calls[name] = call
        self.best[name] = float("inf")

    def run(self, repeats: int) -> None:
        import time

        for _ in range(repeats):
            for name, call in self.calls.items():
                t0 = time.perf_counter()
                call()
                self.best[name] = min(self.best[name], time.perf_counter() - t0)

    def fastest(self, prefix: str) -> tuple[str, float]:
        return min(((k, v) for k, v in self.best.items() if k.startswith(prefix)), key=lambda kv: kv[1])


class Encoder:
    """The emulator's fast thermometer encoder, for both sides: pixels -> uint8 spikes."""

    def __init__(self, pkg: ModelPackage) -> None:
        self.code = Thermometer(np.asarray(pkg.card.encoding.thresholds, dtype=np.float32))
        self.channels = pkg.card.input_channels

    def __call__(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.empty((*pixels.shape[:3], self.channels), np.uint8)
        self.code(pixels, valid, out, np.empty(len(pixels), np.int64))
        return out


def emulator_sides(
    sides: Sides, emu: Emulator, pixels: np.ndarray, valid: np.ndarray, spikes: np.ndarray
) -> None:
    runner = emu._int8
    for batch in EMULATOR_BATCHES if runner is not None else (None,):

        def whole(b: int | None = batch) -> None:
            if runner is not None and b is not None:
                runner.batch = b
            emu.run(pixels, valid)

        sides.add(f"emulator whole b{batch}", whole)
        if runner is not None and batch is not None:

            def network(b: int = batch) -> None:
                runner.batch = b
                runner.network(spikes)

            sides.add(f"emulator network b{batch}", network)


def engine_sides(sides: Sides, pkg: ModelPackage, threads: int, spikes: np.ndarray) -> list[str]:
    """The layers alone on every int8 engine installed, side by side (the comparison uses the one
    ``choose_engine`` picks)."""
    import importlib.util

    engines = [e for e in ENGINES if importlib.util.find_spec(e) is not None]
    for engine in engines:
        runner = Emulator(pkg, threads=threads, engine=engine)._int8
        if runner is None:
            continue
        for batch in EMULATOR_BATCHES:

            def network(r: Any = runner, b: int = batch) -> None:
                r.batch = b
                r.network(spikes)

            sides.add(f"engine {engine} b{batch}", network)
    return [e for e in engines if any(k.startswith(f"engine {e} ") for k in sides.calls)]


def scaling_sides(sides: Sides, pkg: ModelPackage, pixels: np.ndarray, valid: np.ndarray) -> list[int]:
    """The emulator alone at 1 .. (cores) threads: how it scales (the comparison uses ``--threads``)."""
    counts = list(range(1, (os.cpu_count() or 1) + 1))
    for k in counts:
        emu = Emulator(pkg, threads=k)
        sides.add(f"scaling t{k}", lambda e=emu: e.run(pixels, valid))
    return counts


def keras_sides(
    sides: Sides, pkg: ModelPackage, threads: int, pixels: np.ndarray, valid: np.ndarray, spikes: np.ndarray
) -> None:
    encode = Encoder(pkg)
    scores, network = float_models(pkg, threads)
    as_float = spikes.astype(np.float32)
    for batch in KERAS_BATCHES:

        def whole(b: int = batch) -> None:
            # The same fast encoder as the emulator's, a batch at a time, then the float graph to scores.
            for lo in range(0, len(pixels), b):
                np.asarray(scores(encode(pixels[lo : lo + b], valid[lo : lo + b])))

        sides.add(f"keras whole b{batch}", whole)
        sides.add(f"keras network b{batch}", lambda b=batch: batched(network, b)(as_float))


def one_model(name: str, patches: int, repeats: int, threads: int, peak: dict[str, float]) -> dict[str, Any]:
    pkg = model_package.load(name)
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    emu = Emulator(pkg, threads=threads)
    spikes = Encoder(pkg)(pixels, valid)
    sides = Sides()
    emulator_sides(sides, emu, pixels, valid, spikes)
    keras_sides(sides, pkg, threads, pixels, valid, spikes)
    scaling = scaling_sides(sides, pkg, pixels, valid)
    engines = engine_sides(sides, pkg, threads, spikes)
    sides.run(repeats)
    emu_whole, keras_whole = sides.fastest("emulator whole"), sides.fastest("keras whole")
    keras_net = sides.fastest("keras network")
    emu_net = sides.fastest("emulator network") if emu.path == "int8" else emu_whole
    if emu._int8 is not None:
        emu._int8.batch = int(emu_whole[0].rsplit("b", 1)[1])
    fast = emu.run(pixels, valid)
    exact = Emulator(pkg, int8=False).run(pixels, valid)
    identical = all(
        np.array_equal(getattr(fast, f), getattr(exact, f))
        for f in ("output_spikes", "spikes_per_layer", "counts")
    )
    flops = 2 * macs_per_patch(pkg)
    rate = {
        k: patches / v[1]
        for k, v in {"emu": emu_whole, "tf": keras_whole, "emu_net": emu_net, "tf_net": keras_net}.items()
    }
    return {
        "model": name,
        "patches": patches,
        "emulator_path": emu.path,
        "emulator_engine": emu.engine,
        "emulator_fallback_reason": emu.fallback_reason,
        "spikes_identical_to_fallback": identical,
        "emulator_patches_per_s": round(rate["emu"], 1),
        "keras_float_patches_per_s": round(rate["tf"], 1),
        "speedup": round(rate["emu"] / rate["tf"], 2),
        "emulator_network_patches_per_s": round(rate["emu_net"], 1),
        "keras_network_patches_per_s": round(rate["tf_net"], 1),
        "network_speedup": round(rate["emu_net"] / rate["tf_net"], 2),
        "best_batch": {
            side: sides.fastest(side)[0].rsplit("b", 1)[1]
            for side in ("emulator whole", "emulator network", "keras whole", "keras network")
            if any(k.startswith(side) for k in sides.best)
        },
        "emulator_patches_per_s_by_threads": {
            str(k): round(patches / sides.best[f"scaling t{k}"], 1) for k in scaling
        },
        "dense_mflop_per_patch": round(flops / 1e6, 2),
        "emulator_dense_equiv_gops": round(rate["emu_net"] * flops / 1e9, 2),
        "keras_gflops": round(rate["tf_net"] * flops / 1e9, 2),
        "emulator_network_patches_per_s_by_engine": {
            e: round(patches / sides.fastest(f"engine {e} ")[1], 1) for e in engines
        },
        "emulator_fraction_of_int8_peak": round(
            rate["emu_net"] * flops / 1e9 / int8_peak(peak, emu.engine), 3
        ),
        "keras_fraction_of_fp32_peak": round(rate["tf_net"] * flops / 1e9 / peak["fp32_gflops"], 3),
        "mean_spikes_per_patch_by_layer": [round(float(v), 1) for v in fast.spikes_per_layer.mean(axis=0)],
        "profile_ms_per_1000_patches": best_profile(emu, pixels, valid, 3),
    }


def int8_peak(peak: dict[str, float], engine: str) -> float:
    """The int8 GEMM peak of the library the emulator's layers ran on."""
    return peak["openvino_int8_gops"] if engine == "openvino" else peak["int8_gops"]


def best_profile(emu: Emulator, pixels: np.ndarray, valid: np.ndarray, repeats: int) -> dict[str, float]:
    """ms per 1000 patches per stage, each stage's best of ``repeats`` profiles (one is as noisy as any
    single timing on a shared machine)."""
    runs = [emu.profile(pixels, valid) for _ in range(repeats)]
    return {k: round(min(r[k] for r in runs) * 1e6 / len(pixels), 2) for k in runs[0]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    patches, repeats = (256, 3) if args.quick else (1024, 15)
    peak = peaks.measure(args.threads, 512 if args.quick else 1024)
    rows = [
        one_model(p.name, patches, repeats, args.threads, peak) for p in sorted(model_package.available())
    ]
    return {
        "threads": args.threads,
        "tf_sgemm_peak_gflops": round(peak["fp32_gflops"], 1),
        "ort_int8_gemm_peak_gops": round(peak["int8_gops"], 1),
        "openvino_int8_gemm_peak_gops": round(peak.get("openvino_int8_gops", float("nan")), 1),
        "models": rows,
    }


if __name__ == "__main__":
    run_child(measure)
