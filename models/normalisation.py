"""Colour normalisation before the spike encoding (the card's ``normalisation``).

``scene_standardise``: each band becomes ``(x - mean_b) / std_b``, with the mean and standard deviation of
the scene's valid pixels. Training computes them per training image; the pipeline computes them once per
job from a decimated read of the whole scene (``SceneStats.from_sample``), before the first chip, and applies
them to every chip on the host — so every backend (emulator, NEST, SpiNNaker) sees the same normalised pixels
and the card's encoding thresholds are in standardised units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.card import Normalisation

_MIN_STD = 1e-3


@dataclass(frozen=True)
class SceneStats:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_sample(cls, pixels: np.ndarray, valid: np.ndarray | None = None) -> SceneStats:
        """Statistics of ``pixels`` [..., B] over ``valid`` [...] (default: every finite pixel)."""
        flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        ok = np.isfinite(flat).all(axis=1)
        if valid is not None:
            ok &= valid.reshape(-1)
        if not ok.any():
            return cls(tuple(0.0 for _ in range(flat.shape[1])), tuple(1.0 for _ in range(flat.shape[1])))
        sample = flat[ok]
        return cls(tuple(sample.mean(axis=0).tolist()),
                   tuple(np.maximum(sample.std(axis=0), _MIN_STD).tolist()))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> SceneStats:
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


def needs_stats(spec: Normalisation) -> bool:
    return spec.kind != "none"


def apply(pixels: np.ndarray, spec: Normalisation, stats: SceneStats | None) -> np.ndarray:
    """The pixels the encoding sees (float32; NaN stays NaN)."""
    if spec.kind == "none":
        return pixels
    if stats is None:
        raise ValueError("scene statistics are needed for this model's normalisation")
    return apply_in_place(pixels.astype(np.float32), spec, stats)


def apply_in_place(pixels: np.ndarray, spec: Normalisation, stats: SceneStats | None) -> np.ndarray:
    """``apply`` on float32 ``pixels`` overwritten in place (the same float32 operations, so the same bits):
    a scene reader's strips are normalised without four temporaries each."""
    if spec.kind == "none":
        return pixels
    if stats is None:
        raise ValueError("scene statistics are needed for this model's normalisation")
    np.subtract(pixels, np.asarray(stats.mean, np.float32), out=pixels)
    np.divide(pixels, np.asarray(stats.std, np.float32), out=pixels)
    return pixels
