"""How many copies of a network fit on SpiNNaker boards: the one rule ``plan`` and the training-side
architecture search (``models.user_arch``) share, kept free of heavy imports so the command line's
``--max-cores-per-copy`` default can be computed from it when the parser is built.

A 48-chip SpiNN-5 board offers 759 application cores (measured on sPyNNaker's virtual board: 856 cores,
48 monitors, 49 system cores); one clock source core is shared by all copies.
"""

from __future__ import annotations

APP_CORES_PER_BOARD = 759
SHARED_CORES = 1  # the clock source every copy's biases come from


def copies_that_fit(cores_per_copy: int, boards: int = 1) -> int:
    """Copies of a ``cores_per_copy``-core network that fit on ``boards`` boards (0 when none does)."""
    return max((APP_CORES_PER_BOARD * boards - SHARED_CORES) // cores_per_copy, 0)


def most_cores_per_copy(copies: int, boards: int = 1) -> int:
    """The largest cores per copy with which ``copies`` copies still fit on ``boards`` boards."""
    return (APP_CORES_PER_BOARD * boards - SHARED_CORES) // copies
