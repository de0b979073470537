"""A stand-in for SpiNNaker's on-board fixed-point weights, until the SpiNNaker backend reads them back.

sPyNNaker stores each synaptic weight as a fixed-point integer whose step is set per synapse type from the
largest weight it must hold; on a virtual board, weights ~N(0, 0.5) came back with a step of 0.0625 and a
largest error of 0.031 (half a step): plain round-to-nearest on a power-of-two grid. This module applies the
same rule to a package's weights: every weight is rounded to a multiple of ``board_step`` (ties to even,
numpy's rule) and expressed back in the package's own grid units, so ``Emulator(pkg, weights=...)`` runs
exactly what such a board would compute. Biases become per-neuron thresholds (``v_thresh = 0.5 - b``),
which the board keeps in its finer membrane-voltage format (s16.15), so they are left unchanged.
"""

from __future__ import annotations

import numpy as np

from models.emulator import Emulator
from models.package import ModelPackage

OBSERVED_STEP = 0.0625  # sPyNNaker 1!7.4.1 virtual board, weights ~N(0, 0.5); see the SpiNNaker brief


def board_weights(package: ModelPackage, board_step: float = OBSERVED_STEP) -> dict[str, np.ndarray]:
    """The package's integer weights after the board's rounding, still in units of the package's step."""
    step = package.card.fixed_point.weight_step
    ratio = board_step / step
    if ratio < 1 or ratio != round(ratio):
        raise ValueError(f"board step {board_step} must be a whole multiple of the package step {step}")
    out: dict[str, np.ndarray] = {}
    for key, q in package.weights.items():
        if key.endswith(".w"):
            out[key] = (np.round(q / ratio) * ratio).astype(q.dtype)
        else:
            out[key] = q.copy()
    return out


def class_agreement(package: ModelPackage, pixels: np.ndarray, valid: np.ndarray | None = None,
                    board_step: float = OBSERVED_STEP) -> float:
    """Fraction of output cells whose class on board-rounded weights equals the grid-weight emulator's."""
    exact = Emulator(package).run(pixels, valid).classes
    board = Emulator(package, weights=board_weights(package, board_step)).run(pixels, valid).classes
    return float((exact == board).mean()) if exact.size else 1.0
