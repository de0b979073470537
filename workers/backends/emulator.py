"""The default backend: the exact CPU emulator (``models.emulator``), spike for spike."""

from __future__ import annotations

import numpy as np

from models.emulator import Emulator
from models.package import ModelPackage
from workers.backends.base import Backend, BatchResult


class EmulatorBackend(Backend):
    name = "emulator"

    def __init__(
        self, package: ModelPackage, *, int8: bool = True, threads: int = 1, engine: str = "auto"
    ) -> None:
        """``int8=False`` keeps to the emulator's own kernels (the int8 path's reference); the emulator
        falls back to them by itself when the int8 path cannot prove its bounds (``path``, ``fallback_reason``
        say which runs and why). ``engine``: the library that runs the int8 graph (auto, onnxruntime,
        openvino)."""
        super().__init__(package)
        self._emulator = Emulator(package, int8=int8, threads=threads, engine=engine)
        self.threads = threads  # the int8 engine's intra-op pool (SPIKESCAN_THREADS in a worker)
        self.path, self.fallback_reason = self._emulator.path, self._emulator.fallback_reason
        self.engine = self._emulator.engine

    @property
    def energy_per_chip_j(self) -> float | None:
        """ESTIMATE of the energy each chip would take on one SpiNN-5 board running the planner's copies, from
        the plan and spikes per patch the card records; None when it records neither."""
        from workers.spinnaker.planner import card_estimate

        return card_estimate(self.package)

    def infer(self, pixels: np.ndarray, valid: np.ndarray) -> BatchResult:
        result = self._emulator.run(pixels, valid)
        return BatchResult(scores=result.scores, spikes=result.spikes_per_layer.sum(axis=1))
