"""The exact emulator: runs a model package spike for spike on the CPU, without TensorFlow.

Each layer's neuron fires in the step its inputs arrive iff W·x + b >= threshold. Weights, biases and the
threshold are integers in units of the card's fixed-point step, inputs are 0/1, so every accumulated value is
an integer far below 2**24: float32 BLAS computes it exactly in any summation order, which is what makes the
result identical to the Keras reference (and to any other exact backend), ties included.

Two implementations compute those spikes. The int8 path (``models.int8``, the default) runs the whole
network as one onnxruntime graph of int8 convolutions, after proving at load that every sum stays exact. When
it cannot (weights that do not fit int8, no onnxruntime, ``int8=False``) the emulator says why in
``fallback_reason`` and runs its own kernels: conv layers with whole-unit weights on ``sparse_conv``'s int32
event-driven kernels (only inputs that fired cost work; the first layer reads a per-band level table), dense
layers and weights off the unit grid in float32. Integer sums are exact, so every path gives the same spikes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models import sparse_conv
from models.card import ModelCard
from models.encoding import encode
from models.int8 import Unsupported
from models.int8_runner import Int8Runner
from models.network import LayerShape, layer_shapes, output_grid
from models.package import ModelPackage

log = logging.getLogger(__name__)


@dataclass
class EmulatorResult:
    scores: np.ndarray  # float32 [N, cy, cx, classes], softmax of beta * counts
    counts: np.ndarray  # int32 [N, cy, cx, classes], output spikes per class
    output_spikes: np.ndarray  # uint8 [N, cy, cx, output neurons]
    spikes_per_layer: np.ndarray  # int64 [N, 1 + layers]: input spikes, then each layer's (0 for flatten)
    layer_spikes: list[np.ndarray] | None = None  # every layer's spikes when asked for

    @property
    def classes(self) -> np.ndarray:
        """Winning class per cell; a tie goes to the lowest class index (argmax's rule)."""
        return self.counts.argmax(axis=-1)


class Emulator:
    def __init__(
        self,
        package: ModelPackage,
        weights: dict[str, np.ndarray] | None = None,
        weight_step: float | None = None,
        *,
        int8: bool = True,
        threads: int = 1,
        engine: str = "auto",
    ) -> None:
        """``weights`` replaces the package's integer weights, in units of ``weight_step`` (default: the
        package's step), e.g. the fixed-point weights a SpiNNaker board would hold. ``int8=False`` keeps to
        the emulator's own kernels; ``threads`` is what the int8 path may use (its own kernels use one);
        ``engine`` the library that runs the int8 graph (``models.int8.choose_engine``)."""
        self.package = package
        self.card: ModelCard = package.card
        self.shapes: list[LayerShape] = layer_shapes(self.card)
        self.grid = output_grid(self.card)
        step = weight_step or self.card.fixed_point.weight_step
        threshold_units = self.card.fixed_point.threshold / step
        if threshold_units != round(threshold_units):
            raise ValueError("threshold must lie on the fixed-point grid")
        source = weights if weights is not None else package.weights
        # Per layer: weight matrix [fan_in, out] and per-neuron threshold (threshold - bias), in grid units.
        self._params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for ls in self.shapes:
            if ls.layer.has_weights:
                w = source[f"{ls.layer.name}.w"].astype(np.float32)
                b = source[f"{ls.layer.name}.b"].astype(np.float32)
                self._params[ls.layer.name] = (w.reshape(-1, w.shape[-1]), np.float32(threshold_units) - b)
        self._int_params = _integer_convs(self.shapes, self._params)
        self._levels = _first_layer_levels(self.card, self.shapes, self._int_params)
        owner = np.asarray(self.card.population_code.owner)
        self._owner_onehot = (owner[:, None] == np.arange(len(self.card.classes))).astype(np.float32)
        self.path: Literal["int8", "fallback"] = "fallback"
        self.fallback_reason: str | None = "int8 path not asked for (int8=False)"
        self._int8: Int8Runner | None = None
        self.engine = "numba"  # what computes the layers: the int8 graph's library, or our own kernels
        if int8:
            try:
                self._int8 = Int8Runner(self.card, self.shapes, self._params, threads, engine)
                self.path, self.fallback_reason = "int8", None
                self.engine = self._int8.net.engine
            except Unsupported as exc:
                self.fallback_reason = str(exc)
                log.info("%s: emulator falls back to its own kernels: %s", self.card.name, exc)

    def run(
        self, pixels: np.ndarray, valid: np.ndarray | None = None, keep_layers: bool = False
    ) -> EmulatorResult:
        if self._int8 is not None:
            values, ok = _as_pixels(pixels, valid, self.card)
            return EmulatorResult(**vars(self._int8.run_pixels(values, ok, keep_layers)))
        if self._levels is None:
            return self.run_spikes(encode(pixels, self.card.encoding, valid), keep_layers)
        q = self._levels_fired(pixels, valid)
        inputs = _per_patch(q).sum(axis=1, dtype=np.int64)
        return self._forward(self._first_layer_by_levels(q), 1, inputs, keep_layers)

    def profile(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """Seconds spent per stage of one run on these pixels: input encoding, then each layer."""
        clock = time.perf_counter()
        times: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            times[name], clock = now - clock, now

        if self._int8 is not None:
            return self._int8.profile(*_as_pixels(pixels, valid, self.card))
        if self._levels is None:
            x, start = np.ascontiguousarray(encode(pixels, self.card.encoding, valid)), 0
            lap("encode")
        else:
            q = self._levels_fired(pixels, valid)
            lap("encode (levels per band)")
            x, start = self._first_layer_by_levels(q), 1
            lap(f"{self.shapes[0].layer.name} (level table)")
        for ls in self.shapes[start:]:
            x = self._layer(ls, x)
            lap(ls.layer.name)
        return times

    def _levels_fired(self, pixels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """[N,H,W,B] uint8: thermometer levels fired per band (the code is a prefix of ones, so a count)."""
        thresholds = np.asarray(self.card.encoding.thresholds, dtype=np.float32)
        values = np.ascontiguousarray(pixels, dtype=np.float32)
        ok = np.ones(values.shape[:3], bool) if valid is None else np.ascontiguousarray(valid, dtype=bool)
        q = np.empty(values.shape, np.uint8)
        sparse_conv.count_levels(values, ok, thresholds, q)
        return q

    def _first_layer_by_levels(self, q: np.ndarray) -> np.ndarray:
        first = self.shapes[0]
        out = np.empty((q.shape[0], *first.out_shape), np.uint8)
        top, _, left, _ = first.pad
        thr = self._int_params[first.layer.name][1]
        sparse_conv.conv_levels(q, self._levels, thr, first.layer.stride, top, left, out)
        return out

    def run_spikes(self, spikes: np.ndarray, keep_layers: bool = False) -> EmulatorResult:
        x = np.ascontiguousarray(spikes, dtype=np.uint8)
        if self._int8 is not None:
            return EmulatorResult(**vars(self._int8.run_spikes(x, keep_layers)))
        return self._forward(x, 0, _per_patch(x).sum(axis=1, dtype=np.int64), keep_layers)

    def _forward(
        self, x: np.ndarray, start: int, input_spikes: np.ndarray, keep_layers: bool
    ) -> EmulatorResult:
        """Layers ``start``.. on x, the output of layer ``start - 1`` (or the input spikes when 0)."""
        n = x.shape[0]
        per_layer = [input_spikes]
        kept: list[np.ndarray] = []
        for i, ls in enumerate(self.shapes):
            if i >= start:
                x = self._layer(ls, x)
            # Flatten has no neurons of its own (it renames the previous layer's), so it adds no spikes.
            fired = (
                np.zeros(n, np.int64)
                if ls.layer.kind == "flatten"
                else _per_patch(x).sum(axis=1, dtype=np.int64)
            )
            per_layer.append(fired)
            if keep_layers:
                kept.append(x)
        cy, cx = self.grid
        out = x.reshape(n, cy, cx, len(self._owner_onehot))
        counts = (out.astype(np.float32) @ self._owner_onehot).astype(np.int32)
        return EmulatorResult(
            scores=softmax(counts, self.card.population_code.beta),
            counts=counts,
            output_spikes=out,
            spikes_per_layer=np.stack(per_layer, axis=1),
            layer_spikes=kept if keep_layers else None,
        )

    def _layer(self, ls: LayerShape, x: np.ndarray) -> np.ndarray:
        kind = ls.layer.kind
        if kind == "flatten":
            return _per_patch(x)
        if kind == "maxpool":
            # The max of binary spikes is their OR; zero padding cannot change it.
            return _windows(x, ls).max(axis=(4, 5))
        if ls.layer.name in self._int_params:
            w_int, thr_int = self._int_params[ls.layer.name]
            out = np.empty((x.shape[0], *ls.out_shape), np.uint8)
            top, _, left, _ = ls.pad
            sparse_conv.conv_spikes(x, w_int, thr_int, ls.layer.stride, top, left, out)
            return out
        w, thr = self._params[ls.layer.name]
        if kind == "dense":
            acc = x.astype(np.float32) @ w
        else:
            win = _windows(x, ls)  # [N, Ho, Wo, C, k, k]
            cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, w.shape[0]).astype(np.float32)
            acc = (cols @ w).reshape(*win.shape[:3], -1)
        return (acc >= thr).view(np.uint8) if acc.dtype == np.bool_ else (acc >= thr).astype(np.uint8)


def _per_patch(x: np.ndarray) -> np.ndarray:
    """[N, ...] -> [N, size of one patch]; unlike reshape(N, -1), also for N = 0."""
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def _as_pixels(
    pixels: np.ndarray, valid: np.ndarray | None, card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    """C-contiguous float32 pixels [N, H, W, B] and bool valid [N, H, W], checked as ``encode`` checks."""
    values = np.ascontiguousarray(pixels, dtype=np.float32)
    if values.ndim != 4 or values.shape[-1] != len(card.encoding.thresholds):
        encode(values[:0], card.encoding)  # raises the encoder's own message
    ok = np.ones(values.shape[:3], bool) if valid is None else np.ascontiguousarray(valid, dtype=bool)
    return values, ok


def _integer_convs(
    shapes: list[LayerShape], params: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Conv layers whose weights and thresholds are whole grid units run on the int32 spike kernels (any
    partial sum is at most the sum of |w|, far inside int32)."""
    out = {}
    for ls in shapes:
        if ls.layer.kind != "conv2d":
            continue
        w, thr = params[ls.layer.name]
        bound = max(float(np.abs(w).sum(axis=0).max()), float(np.abs(thr).max()))
        if np.all(w == np.round(w)) and np.all(thr == np.round(thr)) and bound < 2**30:
            k = ls.layer.kernel
            out[ls.layer.name] = sparse_conv.pad_outputs(w.reshape(k, k, -1, w.shape[-1]), thr, np.int32)
    return out


def _first_layer_levels(
    card: ModelCard, shapes: list[LayerShape], int_params: dict[str, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray | None:
    """The first layer's level table when its input is a true thermometer code (ascending thresholds)."""
    thresholds = np.asarray(card.encoding.thresholds, dtype=np.float32)
    first = shapes[0].layer
    if first.name not in int_params or not np.all(np.diff(thresholds, axis=1) > 0):
        return None
    return sparse_conv.level_table(int_params[first.name][0], thresholds.shape[0], thresholds.shape[1])


def _windows(x: np.ndarray, ls: LayerShape) -> np.ndarray:
    top, bottom, left, right = ls.pad
    if any(ls.pad):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    k, s = ls.layer.kernel, ls.layer.stride
    win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win[:, : ls.out_shape[0], : ls.out_shape[1]]


def softmax(counts: np.ndarray, beta: float) -> np.ndarray:
    z = counts.astype(np.float32) * np.float32(beta)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
