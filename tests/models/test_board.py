"""The board quantiser: the weights sPyNNaker builds for a package, by its per-population ring-buffer rule."""

from __future__ import annotations

import numpy as np
import pytest

from models import board, package
from models.package import ModelPackage


@pytest.mark.parametrize(("max_sum", "step"), [
    (0.5, 2.0 ** -15),   # below one: no shift
    (1.0, 2.0 ** -14),   # exactly a power of two needs one more bit
    (30.0, 2.0 ** -10),
    (511.0, 2.0 ** -6),  # the package's own step: still exact
    (512.0, 2.0 ** -5),  # from here on the board rounds the package's weights
    (3000.0, 2.0 ** -3),
])
def test_ring_buffer_step_follows_spynnaker(max_sum: float, step: float) -> None:
    assert board.ring_buffer_step(max_sum) == step


def test_shipped_packages_keep_every_weight_and_class_on_the_board(shipped: ModelPackage,
                                                                    real_patches: np.ndarray) -> None:
    # As read back from sPyNNaker's virtual board (docs/spinnaker.md): nothing is rounded, agreement 1.0.
    weights, step = board.board_weights(shipped)
    grid = shipped.card.fixed_point.weight_step
    for key, q in shipped.weights.items():
        np.testing.assert_array_equal(weights[key] * step, q * grid, err_msg=key)
    assert board.coarsest_step(shipped) <= grid
    assert board.class_agreement(shipped, real_patches[:200]) == 1.0


def test_large_input_sums_round_per_population_within_half_their_step(landcover: ModelPackage) -> None:
    # Every weight times 63: input sums past 2**9, so the board's steps are coarser than the package's and
    # odd multiples of 1/64 cannot be held exactly (the spikes differ from the original network: only the
    # rounding is checked here; tests/workers/test_spinnaker_plan.py compares it with sPyNNaker's own).
    big = package.from_parts(landcover.card, {k: v * 63 for k, v in landcover.weights.items()})
    grid = big.card.fixed_point.weight_step
    net = board.describe(big)
    steps = board.receptor_steps(net)
    assert max(steps.values()) > grid
    values = board.board_values(big)
    changed = 0
    for key, q in big.weights.items():
        layer = key.split(".")[0]
        coarsest = max(s for (post, _), s in steps.items() if post == layer)
        # A de-cumulated one-hot weight is the difference of two rounded prefix sums: one step at most.
        bound = coarsest if key == net.cumulative_param else coarsest / 2
        diff = np.abs(values[key] - q * grid)
        assert diff.max() <= bound, key
        changed += int((diff > 0).sum())
    assert changed > 0
    weights, step = board.board_weights(big)
    for key in values:
        np.testing.assert_array_equal(weights[key] * step, values[key])
