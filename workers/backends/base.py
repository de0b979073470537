"""The one interface every inference backend implements.

A backend is built once per worker (loading a model onto a board is expensive) and then called with batches
of chips: ``infer(pixels [N, P, P, B] float32, valid [N, P, P] bool) -> BatchResult``. Invalid pixels fire no
input spikes. Results come back in the order of the batch; nothing else about chips (ids, positions) reaches
a backend, so the same backend serves the in-process pipeline and the Redis inference workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from models.package import ModelPackage


@dataclass
class BatchResult:
    scores: np.ndarray  # float32 [N, cy, cx, classes], each cell's class scores (sum to 1)
    spikes: np.ndarray  # int64 [N]: every spike of the chip — input spikes plus every layer's output spikes

    def __post_init__(self) -> None:
        if self.scores.ndim != 4 or self.spikes.shape != (self.scores.shape[0],):
            raise ValueError("scores must be [N, cy, cx, C] and spikes [N]")


class Backend(ABC):
    """Runs a model package on batches of chips."""

    name: str = "abstract"

    def __init__(self, package: ModelPackage) -> None:
        self.package = package

    @property
    def copies(self) -> int:
        """Copies of the network that run in parallel (tiled copies on a board; 1 on the CPU)."""
        return 1

    @property
    def energy_per_chip_j(self) -> float | None:
        """Estimated energy per chip in joules, or None when the backend cannot estimate it."""
        return None

    def batch_size_for(self, default: int, chips_per_row: int) -> int:
        """Chips per batch for a scene ``chips_per_row`` wide: ``default`` unless the backend shares input
        between neighbouring chips and needs whole chip rows together (strips)."""
        return default

    @abstractmethod
    def infer(self, pixels: np.ndarray, valid: np.ndarray) -> BatchResult:
        """Scores and spike counts for a batch of chips."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release the board / simulator; the default has nothing to release."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
