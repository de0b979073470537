"""Arithmetic peaks of the libraries each side of table 1 runs on, measured here at the same threads.

The float side runs on TensorFlow's oneDNN kernels, so its peak is a float32 ``tf.matmul`` (not numpy's
OpenBLAS, which reaches a different rate on the same CPU); the emulator runs on onnxruntime's int8 kernels,
so its peak is an onnxruntime ``MatMulInteger`` (uint8 x int8 -> int32), the kind of GEMM its layers are, or
where it runs on OpenVINO (AMX CPUs, ``models.int8.choose_engine``) the same GEMM as an OpenVINO int8 MatMul.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm up the thread pool and the kernel choice
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def tf_fp32_gflops(threads: int, size: int, repeats: int = 10) -> float:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    rng = np.random.default_rng(0)
    a = tf.constant(rng.random((size, size), dtype=np.float32))
    b = tf.constant(rng.random((size, size), dtype=np.float32))
    matmul = tf.function(lambda: tf.matmul(a, b))
    return 2 * size**3 / _best_seconds(lambda: matmul().numpy(), repeats) / 1e9


def ort_int8_gops(threads: int, size: int, repeats: int = 10) -> float:
    from onnx import TensorProto, helper

    from models.int8 import session

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "peak",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    run = session(model.SerializeToString(), threads)
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.integers(0, 2, (size, size), dtype=np.uint8),
        "b": rng.integers(-64, 64, (size, size), dtype=np.int8),
    }
    return 2 * size**3 / _best_seconds(lambda: run.run(None, feed), repeats) / 1e9


def ov_int8_gops(threads: int, size: int, repeats: int = 10) -> float:
    """u8 x s8 -> u8 MatMul built the way models.int8_openvino builds its layers (FakeQuantize on the
    input, int8 weights dequantised by a scale of 1), which OpenVINO runs as an int8 GEMM."""
    import openvino as ov
    import openvino.opset13 as ops

    from models.int8_openvino import fake_quantize, shared_core

    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], ov.Type.u8, name="a")
    w = rng.integers(-64, 64, (size, size), dtype=np.int8)
    b = ops.multiply(ops.convert(ops.constant(w), ov.Type.f32), ops.constant(np.float32(1)))
    product = ops.matmul(fake_quantize(ops.convert(a, ov.Type.f32), 255), b, False, False)
    out = ops.convert(fake_quantize(product, 255), ov.Type.u8)  # requantised to uint8, as a layer is
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    request = shared_core().compile_model(ov.Model([out], [a]), "CPU", config).create_infer_request()
    x = rng.integers(0, 2, (size, size), dtype=np.uint8)
    return 2 * size**3 / _best_seconds(lambda: request.infer({0: x}), repeats) / 1e9


def measure(threads: int, size: int = 1024) -> dict[str, float]:
    """fp32 (TensorFlow) and int8 peaks, the int8 one per engine the emulator may run on."""
    import importlib.util

    peaks = {"fp32_gflops": tf_fp32_gflops(threads, size), "int8_gops": ort_int8_gops(threads, size)}
    if importlib.util.find_spec("openvino") is not None:
        peaks["openvino_int8_gops"] = ov_int8_gops(threads, size)
    return peaks
