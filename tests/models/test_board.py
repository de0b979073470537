"""The board quantiser: SpiNNaker-like coarse weights, expressed in the package's grid units."""

from __future__ import annotations

import numpy as np
import pytest

from models import board
from models.emulator import Emulator
from models.package import ModelPackage


def test_board_weights_lie_on_the_coarser_grid_within_half_a_step(landcover: ModelPackage) -> None:
    ratio = int(board.OBSERVED_STEP / landcover.card.fixed_point.weight_step)
    rounded = board.board_weights(landcover)
    for key, q in landcover.weights.items():
        if key.endswith(".w"):
            assert np.all(rounded[key] % ratio == 0), key
            assert np.abs(rounded[key] - q).max() <= ratio / 2, key
            assert rounded[key].dtype == q.dtype
        else:  # thresholds stay in the board's finer voltage format
            np.testing.assert_array_equal(rounded[key], q)


def test_board_weights_change_something(landcover: ModelPackage) -> None:
    rounded = board.board_weights(landcover)
    assert any(not np.array_equal(rounded[k], landcover.weights[k]) for k in rounded if k.endswith(".w"))


def test_a_board_step_equal_to_the_package_step_is_exact(shipped: ModelPackage,
                                                        real_patches: np.ndarray) -> None:
    step = shipped.card.fixed_point.weight_step
    assert board.class_agreement(shipped, real_patches[:200], board_step=step) == 1.0


def test_class_agreement_counts_cells_that_keep_their_class(shipped: ModelPackage,
                                                            real_patches: np.ndarray) -> None:
    pixels = real_patches[:300]
    agreement = board.class_agreement(shipped, pixels)
    exact = Emulator(shipped).run(pixels).classes
    coarse = Emulator(shipped, weights=board.board_weights(shipped)).run(pixels).classes
    assert agreement == pytest.approx(float((exact == coarse).mean()))
    assert 0.5 < agreement <= 1.0


def test_a_step_off_the_package_grid_is_refused(landcover: ModelPackage) -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        board.board_weights(landcover, board_step=0.01)
