"""The weights a SpiNNaker board holds for a package, computed the way sPyNNaker 1!7.4.1 computes them.

sPyNNaker stores each synaptic weight as a 16-bit fixed-point integer whose step is chosen per population and
receptor (excitatory / inhibitory) from the largest input sum that population can receive in one timestep:
with ``w`` that sum, the ring-buffer shift is ``p = ceil(log2 w)`` (at least 0, one more when ``2**p <= w``,
``PopulationVertex.get_ring_buffer_shifts``), the weight scale is ``2**(15 - p)`` (``__get_weight_scale``) and
so the step is ``2**(p - 15)``; weights are rounded to the nearest step. The SpiNNaker build
(``workers/backends/pynn_build.py``) hands sPyNNaker the *exact* sums (``models.pynn_net.max_summed_weights``
on the one-hot input, floored at the firing threshold), so this module uses the same sums. Biases are
synapses from the shared clock source and are rounded like every other weight of their population.

An earlier stand-in rounded every weight to one fixed step of 1/16, the step sPyNNaker had picked from its own
firing-rate estimate before the exact bounds were passed. It no longer matches what the board builds, and it
cost a user's small network 30 % of its cells. The result here is checked against weights read back from
sPyNNaker's virtual board (``tests/workers/test_spinnaker_plan.py``, ``spikescan plan --board-weights``).
"""

from __future__ import annotations

import math

import numpy as np

from models.emulator import Emulator
from models.package import ModelPackage
from models.pynn_net import THRESHOLD, NetworkDescription, describe, max_summed_weights

RULE = "sPyNNaker 1!7.4.1 ring-buffer shift per population and receptor from the exact largest input sum"


def ring_buffer_step(max_sum: float) -> float:
    """The weight step sPyNNaker uses for a receptor whose largest one-timestep input sum is ``max_sum``."""
    power = 0 if max_sum <= 0 else int(math.ceil(max(0.0, math.log2(max_sum))))
    if 2.0 ** power <= max_sum:  # the range is [0, 2**power): a sum of exactly 2**power needs one more bit
        power += 1
    return 2.0 ** (power - 15)


def receptor_steps(net: NetworkDescription) -> dict[tuple[str, bool], float]:
    """Step per (population, excitatory?) as the SpiNNaker build would have sPyNNaker choose it."""
    steps = {}
    for post in {p.post for p in net.projections}:
        excitatory, inhibitory = (max(b, THRESHOLD) for b in max_summed_weights(net, post))
        steps[(post, True)], steps[(post, False)] = ring_buffer_step(excitatory), ring_buffer_step(inhibitory)
    return steps


def board_values(package: ModelPackage) -> dict[str, np.ndarray]:
    """Float weights per package array (``<layer>.w`` / ``<layer>.b``) as the board holds them."""
    from workers.spinnaker.board_weights import assemble

    net = describe(package)
    steps = receptor_steps(net)
    rounded = {}
    for i, proj in enumerate(net.projections):
        step = steps[(proj.post, proj.excitatory)]
        rows = proj.rows.copy()
        rows[:, 2] = np.round(rows[:, 2] / step) * step  # magnitudes, ties to even as numpy (and the board)
        rounded[f"p{i}"] = rows
    # The same mapping back to package arrays as for weights read back from sPyNNaker: shared kernel entries,
    # clock synapses to biases, one-hot cumulative first-layer weights de-cumulated.
    return assemble(package, rounded)


def board_weights(package: ModelPackage) -> tuple[dict[str, np.ndarray], float]:
    """The board's weights as integers on one power-of-two step, and that step (``Emulator`` takes both)."""
    from workers.spinnaker.board_weights import on_grid

    return on_grid(board_values(package))


def class_agreement(package: ModelPackage, pixels: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of output cells whose class on the board's weights equals the package emulator's."""
    weights, step = board_weights(package)
    exact = Emulator(package).run(pixels, valid).classes
    board = Emulator(package, weights, step).run(pixels, valid).classes
    return float((exact == board).mean()) if exact.size else 1.0


def coarsest_step(package: ModelPackage) -> float:
    """The coarsest per-population step the board uses for this package (1/64 or finer: nothing rounds)."""
    return max(receptor_steps(describe(package)).values())
