"""The emulator's int8 path: each layer an onnxruntime ``QLinearConv``, uint8 spikes x int8 weights -> int32.

A spike is 0 or 1 and a weight a small integer (the card's grid step is 2**-6), so W·x is an exact integer
sum: int8 GEMM instructions (AVX-512 VNNI / AVX-VNNI) compute it with no rounding at ~3.6x the float32 rate.
The whole network is one onnxruntime graph built from the card at load time: channels last (NHWC;
onnxruntime turns an NCHW graph into NHWC internally anyway, behind an input transpose that measured ~20 % of
the trees network), every layer's filters padded to a multiple of 16 (measured 1.1-1.4x faster than none,
1.15x faster than 32, the same as 8 with at least 16: onnxruntime's direct "symmetric" convolution wants 16
or more; padding neurons have zero weights and never fire). Turning the first layer's input into columns
first, or space-to-depth, did not measure faster.

How a layer's uint8 output becomes exactly 0 or 255 (a spike): the layer sees inputs of value ``a`` (1 for the
encoder's 0/1 code, 255 after a layer) and accumulates ``acc = a * S`` with ``S`` = sum of the weights of the
inputs that fired. The neuron fires iff ``S >= T`` with ``T = threshold - bias`` (integers). The int32 bias
is ``a * (1 - T)``, so ``acc + bias = a * (S - T + 1)``: at least ``a`` when it fires, at most 0 when not.
The requantisation multiplies by ``255 / a`` and saturates to [0, 255]: 255 when it fires, 0 when it does not,
ties at the threshold included. Max-pooling 0/255 is their OR; a dense layer is a convolution whose kernel
covers its whole (flattened, channels-last) input.

Without VNNI, onnxruntime's u8 x s8 kernels add pairs of products in saturating int16 (``pmaddubsw``): with
spikes worth 255 that is exact only for |w| <= 64. A layer whose weights go beyond is split, not refused:
``W = clip(W, -64, 64) + rest``, both halves within +-64, computed as one convolution over the input
concatenated with itself (twice the fan-in for that layer only). The first layer's spikes are worth 1, so its
pairs cannot saturate and it keeps the whole int8 range.

``prove_bounds`` checks at load what this needs; anything it refuses runs on the emulator's other kernels.

The same layers also run on OpenVINO (``models.int8_openvino``), whose oneDNN kernels use AMX tiles where the
CPU has them; ``choose_engine`` says which library runs the graph.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.network import LayerShape

SPIKE = 255  # a spike between layers (uint8 saturation); the encoder's input spikes are 1
FILTER_BLOCK = 16  # filters padded to whole blocks of this many (see the module docstring)
INT8_MAX, INT8_MIN = 127, -128
NO_VNNI_MAX = 64  # |w| limit without VNNI: u8s8 pmaddubsw adds two 255*w products in saturating int16
EXACT_LIMIT = 2**24  # every requantised sum stays below this: exact in float32 as well as int32


class Unsupported(Exception):
    """The network cannot run exactly on the int8 path; the message says why."""


@dataclass(frozen=True)
class Int8Layer:
    """One node of the graph: a weighted layer (``w`` set) or a max-pool."""

    shape: LayerShape
    w: np.ndarray | None  # int8 [F_padded, C_in_padded, kh, kw] (OIHW), None for max-pool
    bias: np.ndarray | None  # int32 [F_padded]
    input_value: int  # a: what a spike is worth at this layer's input (1 or SPIKE)
    doubled: bool  # the input is concatenated with itself along channels (weights split in two halves)
    kernel: tuple[int, int]
    stride: int
    pads: tuple[int, int, int, int]  # onnx order: top, left, bottom, right


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (read once: each Emulator asks for them)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has AVX-512 VNNI or AVX-VNNI: int8 dot products into int32 without saturation."""
    return bool(cpu_flags(cpuinfo) & {"avx512_vnni", "avx_vnni"})


def cpu_has_amx_int8(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has AMX tiles with int8 dot products (Intel Xeon 4th generation and later)."""
    return "amx_int8" in cpu_flags(cpuinfo)


ENGINES = ("onnxruntime", "openvino")


def choose_engine(requested: str = "auto") -> str:
    """The library that runs the graph: ``requested`` if named, else OpenVINO where the CPU has AMX-INT8 and
    OpenVINO is installed (measured faster there), onnxruntime elsewhere (measured faster on VNNI alone)."""
    import importlib.util

    if requested in ENGINES:
        return requested
    if requested != "auto":
        raise ValueError(f"unknown int8 engine {requested!r} (auto, {', '.join(ENGINES)})")
    if cpu_has_amx_int8() and importlib.util.find_spec("openvino") is not None:
        return "openvino"
    return "onnxruntime"


def _padded(n: int) -> int:
    return -(-n // FILTER_BLOCK) * FILTER_BLOCK


def prove_bounds(w: np.ndarray, thr: np.ndarray, name: str) -> None:
    """Refuse (Unsupported) unless this layer is exact on the int8 path: integer weights and thresholds,
    weights in int8, and every sum, bias and requantised value below 2**24."""
    if not (np.all(w == np.round(w)) and np.all(thr == np.round(thr))):
        raise Unsupported(f"layer {name}: weights or threshold off the integer grid")
    if w.min(initial=0) < INT8_MIN or w.max(initial=0) > INT8_MAX:
        raise Unsupported(f"layer {name}: weights {w.min():.0f}..{w.max():.0f} do not fit int8")
    # |acc + bias| <= a * (sum|w| + |T| + 1); requantised: times 255 / a.
    worst = SPIKE * (float(np.abs(w).sum(axis=0).max(initial=0)) + float(np.abs(thr).max(initial=0)) + 1)
    if worst >= EXACT_LIMIT:
        raise Unsupported(f"layer {name}: sums up to {worst:.0f} leave int32/float32's exact range")


def plan_layers(
    shapes: list[LayerShape], params: dict[str, tuple[np.ndarray, np.ndarray]], vnni: bool
) -> list[Int8Layer]:
    """The graph's nodes from the emulator's per-layer (weights [fan_in, out], threshold - bias) in grid
    units. Raises Unsupported for anything the int8 path cannot compute exactly."""
    layers: list[Int8Layer] = []
    value = 1
    # The tensor flowing between nodes: (H, W, channels as the card counts them, channels padded).
    h, wd, c, cp = *shapes[0].in_shape, shapes[0].in_shape[-1]
    for ls in shapes:
        kind = ls.layer.kind
        if kind == "flatten":
            continue  # channels-last order is already Keras's flatten order; the next dense reads it whole
        if kind == "maxpool":
            top, bottom, left, right = ls.pad
            k, pads = ls.layer.kernel, (top, left, bottom, right)
            layers.append(Int8Layer(ls, None, None, value, False, (k, k), ls.layer.stride, pads))
            h, wd = ls.out_shape[:2]
            continue
        w, thr = params[ls.layer.name]
        prove_bounds(w, thr, ls.layer.name)
        doubled = not vnni and value == SPIKE and bool(np.abs(w).max(initial=0) > NO_VNNI_MAX)
        f = w.shape[-1]
        if kind == "conv2d":
            k = ls.layer.kernel
            kernel, stride = (k, k), ls.layer.stride
            top, bottom, left, right = ls.pad
            pads = (top, left, bottom, right)
            kernel_hwc = w.reshape(k, k, c, f)
        else:  # dense: one window over the whole input tensor
            kernel, stride, pads = (h, wd), 1, (0, 0, 0, 0)
            kernel_hwc = w.reshape(h, wd, c, f)
        fp = _padded(f)
        kernel_hwc = np.pad(kernel_hwc, ((0, 0), (0, 0), (0, cp - c), (0, fp - f)))
        if doubled:
            low = np.clip(kernel_hwc, -NO_VNNI_MAX, NO_VNNI_MAX)
            kernel_hwc = np.concatenate([low, kernel_hwc - low], axis=2)
        # Padding neurons: zero weights and zero bias, so acc + bias = 0 and they never fire.
        bias = np.zeros(fp, np.int64)
        bias[:f] = value * (1 - thr.astype(np.int64))
        oihw = kernel_hwc.transpose(3, 2, 0, 1).astype(np.int8)
        layers.append(Int8Layer(ls, oihw, bias.astype(np.int32), value, doubled, kernel, stride, pads))
        value = SPIKE
        h, wd, c, cp = (*ls.out_shape[:2], f, fp) if kind == "conv2d" else (1, 1, f, fp)
    return layers


def build_graph(layers: list[Int8Layer], in_shape: tuple[int, int, int]) -> tuple[bytes, list[str]]:
    """A serialised onnx model: input ``x`` uint8 [N, H, W, C]; one output per node, named after its layer."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0, np.uint8), "zero_u8"),
        numpy_helper.from_array(np.array(0, np.int8), "zero_s8"),
    ]
    nodes, x = [], "x"
    for layer in layers:
        name = layer.shape.layer.name
        if layer.w is None:
            nodes.append(
                helper.make_node(
                    "NhwcMaxPool",
                    [x],
                    [name],
                    name=name,
                    domain="com.microsoft",
                    kernel_shape=list(layer.kernel),
                    strides=[layer.stride] * 2,
                    pads=list(layer.pads),
                )
            )
        else:
            # x_scale 1, w_scale 1, y_scale a / 255: onnxruntime requantises by x_scale * w_scale / y_scale.
            inits += [
                numpy_helper.from_array(layer.w, f"{name}.w"),
                numpy_helper.from_array(layer.bias, f"{name}.b"),
                numpy_helper.from_array(np.array(layer.input_value / SPIKE, np.float32), f"{name}.y_scale"),
            ]
            if layer.doubled:
                nodes.append(helper.make_node("Concat", [x, x], [f"{name}.doubled"], name=f"{name}.doubled",
                                              axis=3))
                x = f"{name}.doubled"
            # QLinearConv's inputs: x, its scale and zero point, w, ..., y's scale and zero point, bias.
            inputs = [x, "one", "zero_u8", f"{name}.w", "one", "zero_s8"]
            inputs += [f"{name}.y_scale", "zero_u8", f"{name}.b"]
            nodes.append(
                helper.make_node(
                    "QLinearConv",
                    inputs,
                    [name],
                    name=name,
                    domain="com.microsoft",
                    channels_last=1,
                    kernel_shape=list(layer.kernel),
                    strides=[layer.stride] * 2,
                    pads=list(layer.pads),
                )
            )
        x = name
    names = [n.output[0] for n in nodes if n.op_type != "Concat"]
    graph = helper.make_graph(
        nodes,
        "spiking",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, *in_shape])],
        [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in names],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString(), names


def session(model: bytes, threads: int, profile_dir: str | None = None):  # type: ignore[no-untyped-def]
    """An onnxruntime CPU session on ``threads`` threads (1: runs in the caller's thread, no pool)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "int8")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class Int8Network:
    """The compiled graph of one package: ``run(x)`` -> every node's uint8 output (0 or 255), channels last,
    filters padded; ``layers`` says which card layer each output belongs to. ``engine`` is the library that
    runs it (``choose_engine``); both compute the same integers. ``batch``: the patches per call the caller
    mostly runs (OpenVINO compiles per size)."""

    def __init__(
        self,
        shapes: list[LayerShape],
        params: dict[str, tuple[np.ndarray, np.ndarray]],
        threads: int = 1,
        vnni: bool | None = None,
        engine: str = "auto",
        batch: int = 64,
    ) -> None:
        self.vnni = cpu_has_vnni() if vnni is None else vnni
        self.layers = plan_layers(shapes, params, self.vnni)
        self.threads = threads
        self.engine = choose_engine(engine)
        self.outputs = [layer.shape.layer.name for layer in self.layers]
        in_shape: tuple[int, int, int] = shapes[0].in_shape  # type: ignore[assignment]
        if self.engine == "openvino":
            try:
                from models.int8_openvino import OpenVinoGraph

                self._openvino = OpenVinoGraph(self.layers, in_shape, threads, batch)
            except ImportError as exc:
                raise Unsupported(f"openvino is needed for the openvino engine ({exc})") from None
            except Exception as exc:  # the plugin refused the graph: the fallback still runs
                raise Unsupported(f"openvino refused the graph: {exc}") from exc
            return
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise Unsupported(f"onnxruntime and onnx are needed ({exc})") from None
        self.model, names = build_graph(self.layers, in_shape)
        assert names == self.outputs
        try:
            self._session = session(self.model, threads)
        except Exception as exc:  # e.g. a build without the contrib NHWC kernels: the fallback still runs
            raise Unsupported(f"onnxruntime refused the graph: {exc}") from exc

    def run(self, x: np.ndarray, last_only: bool = False) -> list[np.ndarray]:
        if self.engine == "openvino":
            return self._openvino.run(x, last_only)
        return self._session.run(self.outputs[-1:] if last_only else self.outputs, {"x": x})  # type: ignore[no-any-return]

    def profile(self, batches: list[np.ndarray]) -> dict[str, float]:
        """Seconds per node over runs on ``batches``, from the engine's own profiler (a separate session;
        its first run, which allocates, is not counted)."""
        if self.engine == "openvino":
            return self._openvino.profile(batches, self.outputs)
        import json

        with tempfile.TemporaryDirectory() as tmp:
            profiled = session(self.model, self.threads, tmp)
            for x in [batches[0], *batches]:
                profiled.run(self.outputs, {"x": x})
            events = json.loads(Path(profiled.end_profiling()).read_text())
        times = dict.fromkeys(self.outputs, 0.0)
        seen: set[str] = set()
        for event in events:
            name = event.get("name", "")
            node = name.removesuffix("_kernel_time").removesuffix(".doubled")  # a split layer's concat is its
            if event.get("cat") != "Node" or not name.endswith("_kernel_time") or node not in times:
                continue
            if name in seen:
                times[node] += event["dur"] / 1e6
            seen.add(name)
        return times
