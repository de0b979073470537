"""A stand-in for SpiNNaker's on-board fixed-point weights, for use without sPyNNaker (training, tests).

What the board holds (``workers/spinnaker/board_weights.py`` reads the real thing back from sPyNNaker):
- every synapse of the PyNN build (``models.pynn_net``), biases included: they are synapses from the clock
  source, so they are rounded like weights (on the post population's step, by their sign's receptor);
- with one-hot level input, not the first layer's per-level weights but their prefix sums along the level
  axis (level k's synapse carries levels 0..k). Those cumulative weights are what gets rounded; rounding each
  per-level weight instead would put up to K half-steps of error into one input sum, which the board never
  makes. The stand-in rounds the prefix sums and takes differences back to the per-level weights the
  emulator runs;
- magnitudes as 16-bit integers, ``rint(|w| * scale)`` (half to even), with one step per population and
  receptor. sPyNNaker 1!7.4.1 (``PopulationVertex.get_ring_buffer_shifts`` and ``__get_weight_scale``) sets
  it from the largest summed weight the population declares, which the build gives exactly
  (``max_expected_summed_weight`` = ``pynn_net.max_summed_weights``, at least the threshold): with
  ``p = ceil(log2 M)`` (one more when ``2**p == M``) the step is ``2**(p - 15)``.

``board_weights(pkg)`` applies that rule; ``board_weights(pkg, board_step=s)`` instead rounds everything to
one given step (a what-if: the brief's first virtual-board run saw 0.0625 for weights ~N(0, 0.5) under
sPyNNaker's own rate-based bound, which the build no longer uses). Results stay in the package's grid units,
so ``Emulator(pkg, weights=...)`` runs exactly what such a board computes.
"""

from __future__ import annotations

import math

import numpy as np

from models.emulator import Emulator
from models.encoding import cumulative_levels
from models.package import ModelPackage
from models.pynn_net import THRESHOLD, NetworkDescription, describe, max_summed_weights

WHAT_IF_STEP = 0.0625  # the brief's first observation (sPyNNaker's rate-based bound), for what-if runs only
INT16_FRACTION_BITS = 15  # 16-bit magnitudes shifted into s16.15: step = 2**(shift - 15)


def spynnaker_step(max_summed_weight: float) -> float:
    """sPyNNaker 1!7.4.1's weight step for a receptor whose summed input never exceeds the given bound."""
    bound = max(max_summed_weight, THRESHOLD)  # as workers/backends/pynn_build.py declares it
    power = int(math.ceil(max(0.0, math.log2(bound))))
    if 2**power <= bound:  # the range is 0 .. just under 2**power
        power += 1
    return 2.0 ** (power - INT16_FRACTION_BITS)


def board_steps(package: ModelPackage) -> dict[str, tuple[float, float]]:
    """Per weighted layer: (excitatory, inhibitory) step sPyNNaker would give it."""
    return _steps(describe(package))


def _steps(net: NetworkDescription) -> dict[str, tuple[float, float]]:
    return {
        p.name: tuple(spynnaker_step(b) for b in max_summed_weights(net, p.name))  # type: ignore[misc]
        for p in net.populations
        if not p.is_source
    }


def board_weights(package: ModelPackage, board_step: float | None = None) -> dict[str, np.ndarray]:
    """The package's integer weights and biases after the board's rounding, still in package grid units."""
    step = package.card.fixed_point.weight_step
    if board_step is not None:
        ratio = board_step / step
        if ratio < 1 or ratio != round(ratio):
            raise ValueError(f"board step {board_step} must be a whole multiple of the package step {step}")
    net = describe(package)
    steps = _steps(net) if board_step is None else None
    out: dict[str, np.ndarray] = {}
    for key, q in package.weights.items():
        layer = key.rsplit(".", 1)[0]
        exc, inh = (board_step, board_step) if steps is None else steps[layer]  # type: ignore[assignment]
        ratios = (exc / step, inh / step)
        if key == net.cumulative_param:
            out[key] = _rounded_cumulative(q, net.onehot_levels, ratios)
        else:
            out[key] = _rounded(q.astype(np.float64), ratios).astype(q.dtype)
    return out


def _rounded(v: np.ndarray, ratios: tuple[float, float]) -> np.ndarray:
    """Round to the excitatory grid where v >= 0 and the inhibitory one below. A step finer than the
    package's changes nothing: grid integers lie on every finer power-of-two grid."""
    exc, inh = (max(r, 1.0) for r in ratios)
    return np.where(v >= 0, np.round(v / exc) * exc, np.round(v / inh) * inh)


def _rounded_cumulative(q: np.ndarray, levels: int, ratios: tuple[float, float]) -> np.ndarray:
    """Per-level weights whose prefix sums are the board's rounded prefix sums (input channels: the
    last-but-one axis, ``levels`` consecutive channels per band)."""
    axis = q.ndim - 2
    held = _rounded(cumulative_levels(q.astype(np.float64), levels, axis), ratios)
    moved = np.moveaxis(held, axis, -1)
    shaped = moved.reshape(*moved.shape[:-1], -1, levels)
    diffs = np.diff(shaped, axis=-1, prepend=0.0).reshape(moved.shape)
    return np.moveaxis(diffs, -1, axis).astype(q.dtype)


def class_agreement(package: ModelPackage, pixels: np.ndarray, valid: np.ndarray | None = None,
                    board_step: float | None = None) -> float:
    """Fraction of output cells whose class on board-rounded weights equals the grid-weight emulator's."""
    exact = Emulator(package).run(pixels, valid).classes
    board = Emulator(package, weights=board_weights(package, board_step)).run(pixels, valid).classes
    return float((exact == board).mean()) if exact.size else 1.0
