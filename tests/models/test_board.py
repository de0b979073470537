"""The board stand-in: sPyNNaker's weight steps, cumulative one-hot first-layer weights, package grid units.

tests/workers/test_spinnaker_plan.py checks the stand-in against the weights sPyNNaker itself builds."""

from __future__ import annotations

import numpy as np
import pytest

from models import board
from models.emulator import Emulator
from models.encoding import cumulative_levels
from models.package import ModelPackage
from models.pynn_net import describe


def test_what_if_weights_lie_on_the_coarser_grid_within_half_a_step(landcover: ModelPackage) -> None:
    ratio = int(board.WHAT_IF_STEP / landcover.card.fixed_point.weight_step)
    rounded = board.board_weights(landcover, board.WHAT_IF_STEP)
    net = describe(landcover)
    assert net.cumulative_param == "conv1.w" and net.onehot_levels == 8
    for key, q in landcover.weights.items():
        held, exact = rounded[key], q
        if key == net.cumulative_param:  # the board holds prefix sums over levels: those are on its grid
            held, exact = (cumulative_levels(a, 8, a.ndim - 2) for a in (held, q))
        assert np.all(held % ratio == 0), key
        assert np.abs(held - exact).max() <= ratio / 2, key
        assert rounded[key].dtype == q.dtype
    per_level = np.round(landcover.weights["conv1.w"] / ratio) * ratio
    assert not np.array_equal(rounded["conv1.w"], per_level)  # per-level rounding is another board


def test_spynnaker_step_rule() -> None:
    # PopulationVertex.get_ring_buffer_shifts: p = ceil(log2 M), +1 at an exact power of two; step 2**(p-15).
    assert board.spynnaker_step(0.1) == board.spynnaker_step(0.5) == 2.0**-15  # at least the threshold: p=0+1
    assert board.spynnaker_step(11.6) == 2.0**-11
    assert board.spynnaker_step(16.0) == 2.0**-10
    assert board.spynnaker_step(4096.5) == 2.0**-2


def test_shipped_models_fit_the_board_exactly(shipped: ModelPackage, real_patches: np.ndarray) -> None:
    """Exact input bounds give steps finer than the package grid: the board holds the package's weights
    (the sPyNNaker read-back agrees: max_abs_weight_difference 0, class agreement 1.0)."""
    steps = board.board_steps(shipped)
    assert max(s for pair in steps.values() for s in pair) < shipped.card.fixed_point.weight_step
    rounded = board.board_weights(shipped)
    for key, q in shipped.weights.items():
        np.testing.assert_array_equal(rounded[key], q, err_msg=key)
    assert board.class_agreement(shipped, real_patches[:200]) == 1.0


def test_a_board_step_equal_to_the_package_step_is_exact(shipped: ModelPackage,
                                                        real_patches: np.ndarray) -> None:
    step = shipped.card.fixed_point.weight_step
    assert board.class_agreement(shipped, real_patches[:200], board_step=step) == 1.0


def test_class_agreement_counts_cells_that_keep_their_class(shipped: ModelPackage,
                                                            real_patches: np.ndarray) -> None:
    pixels = real_patches[:300]
    agreement = board.class_agreement(shipped, pixels, board_step=board.WHAT_IF_STEP)
    exact = Emulator(shipped).run(pixels).classes
    coarse = Emulator(shipped, weights=board.board_weights(shipped, board.WHAT_IF_STEP)).run(pixels).classes
    assert agreement == pytest.approx(float((exact == coarse).mean()))
    assert 0.5 < agreement < 1.0


def test_a_step_off_the_package_grid_is_refused(landcover: ModelPackage) -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        board.board_weights(landcover, board_step=0.01)
