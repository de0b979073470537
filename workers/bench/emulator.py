"""Table 1: the exact emulator against the same architecture as a float Keras/TensorFlow model (ReLU).

Both sides get the same real patches (the model's held-out scene), in the same process, at the same thread
count, and both start from pixels (the float model is fed the encoded input it was built for). FLOP/s are
dense-equivalent (2 x multiply-accumulates of the float network per patch), set against this process's
measured float32 GEMM peak: the emulator's kernels skip silent inputs, so they do less work than that count.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from models import package as model_package
from models.emulator import Emulator
from models.encoding import encode
from models.network import layer_shapes
from models.package import ModelPackage
from workers.bench import machine
from workers.bench.child import best_rate, run_child
from workers.crosscheck import default_scene, real_patches


def macs_per_patch(pkg: ModelPackage) -> int:
    total = 0
    for ls in layer_shapes(pkg.card):
        if ls.layer.kind == "conv2d":
            k = ls.layer.kernel
            total += int(np.prod(ls.out_shape)) * k * k * ls.in_shape[-1]
        elif ls.layer.kind == "dense":
            total += int(np.prod(ls.in_shape)) * int(ls.out_shape[-1])
    return total


def float_model(pkg: ModelPackage, threads: int) -> Any:
    import keras
    import tensorflow as tf

    from models.keras_model import build_reference

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    ref = build_reference(pkg, "float_relu")
    last = keras.Model(ref.inputs, ref.outputs[-1])  # the final layer only, as a user's model would return
    return tf.function(lambda x: last(x, training=False))


def emulator_rate(pkg: ModelPackage, pixels: np.ndarray, valid: np.ndarray, repeats: int) -> float:
    emu = Emulator(pkg)
    emu.run(pixels[:8], valid[:8])  # load the compiled kernels
    return best_rate(lambda: emu.run(pixels, valid), len(pixels), repeats)


def one_model(name: str, patches: int, repeats: int, threads: int, peak: float) -> dict[str, Any]:
    pkg = model_package.load(name)
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    model = float_model(pkg, threads)

    def tf_run() -> None:
        spikes = encode(pixels, pkg.card.encoding, valid).astype(np.float32)
        model(spikes).numpy()

    tf_run()  # trace the graph
    emu_rate = emulator_rate(pkg, pixels, valid, repeats)
    tf_rate = best_rate(tf_run, patches, repeats)
    emu = Emulator(pkg)
    profile = emu.profile(pixels, valid)
    spikes = emu.run(pixels, valid).spikes_per_layer.mean(axis=0)
    flops = 2 * macs_per_patch(pkg)
    return {
        "model": name,
        "patches": patches,
        "emulator_patches_per_s": round(emu_rate, 1),
        "keras_float_patches_per_s": round(tf_rate, 1),
        "speedup": round(emu_rate / tf_rate, 2),
        "dense_mflop_per_patch": round(flops / 1e6, 2),
        "emulator_dense_equiv_gflops": round(emu_rate * flops / 1e9, 2),
        "keras_gflops": round(tf_rate * flops / 1e9, 2),
        "emulator_fraction_of_peak": round(emu_rate * flops / 1e9 / peak, 3),
        "mean_spikes_per_patch_by_layer": [round(float(v), 1) for v in spikes],
        "profile_ms_per_1000_patches": {k: round(v * 1e6 / patches, 1) for k, v in profile.items()},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    patches, repeats = (128, 3) if args.quick else (512, 5)
    peak = machine.matmul_peak_gflops(512 if args.quick else 1024)
    rows = [
        one_model(p.name, patches, repeats, args.threads, peak) for p in sorted(model_package.available())
    ]
    return {"threads": args.threads, "numpy_sgemm_peak_gflops": round(peak, 1), "models": rows}


if __name__ == "__main__":
    run_child(measure)
