"""The int8 graph on OpenVINO's CPU plugin: the same layers as the onnxruntime graph (``models.int8``), where
oneDNN runs u8 x s8 convolutions on AMX tiles.

On a CPU with AMX-INT8 (Intel Xeon 4th generation and later) oneDNN's ``brgconv_avx512_amx`` kernels run these
narrow layers (16-32 filters) far faster than onnxruntime's AVX-512 VNNI kernels: 1.6-2x on landcover's
network, measured in one process on a 2-core Xeon with AMX (``spikescan bench emulator``); trees' wider
layers run about as fast on either. On CPUs without AMX onnxruntime measured faster (0.82-0.89x for OpenVINO
on an AVX-512 VNNI Xeon), so ``choose_engine`` picks OpenVINO only where AMX is there.

How a layer stays exact here: OpenVINO's low-precision transformations turn "FakeQuantize on the input,
int8 constant weights dequantised by a scale of 1, convolution, bias, FakeQuantize on the output" into one
integer convolution with its requantisation fused. Inputs are spikes worth ``a`` (1 from the encoder, 255
after a layer); the sum ``z = a * (S - T + 1)`` (see ``models.int8``) is an integer multiple of ``a`` below
2**24, so the output FakeQuantize over [0, a] -> [0, 255] gives exactly 255 when ``z >= a`` and 0 when
``z <= 0``. ``INFERENCE_PRECISION_HINT`` is pinned to f32: left to itself the plugin runs bf16 on AMX CPUs,
which is not exact (measured: 26,629 wrong cells in 1,024 landcover patches).

Shapes are static: a dynamic batch dimension measured 5x slower. The caller's batch size is compiled at load
(about 60 ms); a shorter batch (a job's last) runs padded with silent patches to the next power of two,
each such size compiled once.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from models.int8 import SPIKE, Int8Layer

_NCHW, _NHWC = np.array([0, 3, 1, 2], np.int64), np.array([0, 2, 3, 1], np.int64)
_core_lock = threading.Lock()
_core: Any = None


def shared_core() -> Any:
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def fake_quantize(t: Any, in_high: float) -> Any:
    """[0, in_high] onto the 256 uint8 levels 0..255: what lets OpenVINO run the next layer in int8."""
    import openvino.opset13 as ops

    lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(in_high))
    return ops.fake_quantize(t, lo, hi, lo, ops.constant(np.float32(SPIKE)), 256)


def build_model(layers: list[Int8Layer], in_shape: tuple[int, int, int], batch: int, last_only: bool) -> Any:
    """An ``openvino.Model``: input ``x`` uint8 [batch, H, W, C]; one uint8 NHWC output per layer (or the
    last only), each named after its layer."""
    import openvino as ov
    import openvino.opset1 as ops1
    import openvino.opset13 as ops

    x = ops.parameter([batch, *in_shape], ov.Type.u8, name="x")
    t = fake_quantize(ops.transpose(ops.convert(x, ov.Type.f32), ops.constant(_NCHW)), SPIKE)
    outputs = []
    for layer in layers:
        name = layer.shape.layer.name
        top, left, bottom, right = layer.pads
        if layer.w is None:
            t = ops1.max_pool(t, [layer.stride] * 2, [top, left], [bottom, right], list(layer.kernel))
            t.set_friendly_name(name)
        else:
            if layer.doubled:
                t = ops.concat([t, t], axis=1)
            # int8 constant -> f32 times a scale of 1: the dequantisation pattern the int8 passes look for.
            scale = ops.constant(np.ones((len(layer.w), 1, 1, 1), np.float32))
            w = ops.multiply(ops.convert(ops.constant(layer.w), ov.Type.f32), scale)
            conv = ops.convolution(t, w, [layer.stride] * 2, [top, left], [bottom, right], [1, 1])
            conv.set_friendly_name(name)
            bias = layer.bias.astype(np.float32).reshape(1, -1, 1, 1)  # type: ignore[union-attr]
            t = fake_quantize(ops.add(conv, ops.constant(bias)), layer.input_value)
        if not last_only or layer is layers[-1]:
            out = ops.convert(ops.transpose(t, ops.constant(_NHWC)), ov.Type.u8)
            out.set_friendly_name(f"{name}.out")
            outputs.append(out)
    return ov.Model(outputs, [x], "spiking")


class OpenVinoGraph:
    """``run(x, last_only)`` -> the layers' uint8 outputs, as ``models.int8.Int8Network`` hands them on."""

    def __init__(
        self, layers: list[Int8Layer], in_shape: tuple[int, int, int], threads: int, batch: int
    ) -> None:
        """``batch``: the patches per call the caller runs (compiled now; shorter calls are padded)."""
        import openvino  # noqa: F401  (ImportError here: the caller falls back to onnxruntime)

        self.layers, self.in_shape, self.threads, self.batch = layers, in_shape, threads, batch
        self._compiled: dict[tuple[int, bool, bool], Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per calling thread: its infer requests (a request is not shared)
        self._compile(batch, False)  # refuses now, not at the first chip, a graph the plugin cannot compile

    def _config(self, profile: bool) -> dict[str, Any]:
        return {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # exactness: never bf16 (module docstring)
            "ENABLE_CPU_PINNING": False,  # a worker shares its cores with the reader and the writer
            "PERF_COUNT": profile,
        }

    def _compile(self, batch: int, last_only: bool, profile: bool = False) -> Any:
        key = (batch, last_only, profile)
        with self._lock:
            if key not in self._compiled:
                model = build_model(self.layers, self.in_shape, batch, last_only)
                self._compiled[key] = shared_core().compile_model(model, "CPU", self._config(profile))
            return self._compiled[key]

    def _request(self, batch: int, last_only: bool) -> Any:
        requests = self._local.__dict__.setdefault("requests", {})
        key = (batch, last_only)
        if key not in requests:
            requests[key] = self._compile(batch, last_only).create_infer_request()
        return requests[key]

    def run(self, x: np.ndarray, last_only: bool = False) -> list[np.ndarray]:
        """Any number of patches: the compiled batch size as it is, another size padded with silent patches
        to the next power of two (a job's one short last batch; each size compiles once)."""
        n = len(x)
        size = n if n == self.batch else 1 << max(n - 1, 0).bit_length()
        if size != n:
            padded = np.zeros((size, *x.shape[1:]), np.uint8)
            padded[:n] = x
            x = padded
        request = self._request(size, last_only)
        result = request.infer({0: x}, share_inputs=True)
        return [result[o][:n] for o in request.model_outputs]

    def profile(self, batches: list[np.ndarray], names: list[str]) -> dict[str, float]:
        """Seconds per layer over runs on ``batches`` (OpenVINO's own counters, in a separate compiled
        model; its first run is not counted); what the plugin adds around them (layout reorders, output
        copies) under one more key."""
        times = dict.fromkeys(names, 0.0)
        other = "openvino reorders and outputs"
        times[other] = 0.0
        for x in batches:
            request = self._compile(len(x), False, profile=True).create_infer_request()
            request.infer({0: x})
            request.infer({0: x})
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                seconds = info.real_time.total_seconds()
                node = info.node_name
                times[node if node in times else other] += seconds
        return times
