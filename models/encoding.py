"""Pixels to spikes: the thermometer code every shipped model uses for its input layer.

Band b, level k fires iff the pixel's raw value >= thresholds[b][k]. Thresholds come from training statistics
(quantiles of the training pixels), are stored in the card in raw pixel units, and are compared in float32 on
every backend so all of them see the same input spikes. Invalid pixels (nodata, padding) fire nothing.
"""

from __future__ import annotations

import numpy as np

from models.card import Encoding


def encode(pixels: np.ndarray, encoding: Encoding, valid: np.ndarray | None = None) -> np.ndarray:
    """[N, H, W, B] pixels (any real dtype) → [N, H, W, B*K] uint8 spikes, channel = b*K + k."""
    if pixels.ndim != 4:
        raise ValueError("pixels must be [N, H, W, bands]")
    n_bands = len(encoding.thresholds)
    if pixels.shape[-1] != n_bands:
        raise ValueError(f"pixels have {pixels.shape[-1]} bands, the encoding expects {n_bands}")
    thresholds = np.asarray(encoding.thresholds, dtype=np.float32)  # [B, K]
    values = np.asarray(pixels, dtype=np.float32)[..., :, None]  # [N, H, W, B, 1]
    spikes = values >= thresholds  # [N, H, W, B, K]; NaN compares False, so NaN fires nothing
    if valid is not None:
        spikes &= valid[..., None, None]
    return spikes.reshape(*pixels.shape[:3], n_bands * encoding.levels).view(np.uint8)


def thermometer_thresholds(samples: np.ndarray, levels: int) -> list[list[float]]:
    """Per-band thresholds at evenly spaced quantiles of [n, B] training pixels, made strictly ascending."""
    qs = (np.arange(levels) + 0.5) / levels
    rows = []
    for b in range(samples.shape[1]):
        col = samples[:, b][np.isfinite(samples[:, b])]
        row = [float(np.float32(v)) for v in np.quantile(col, qs)]
        for k in range(1, levels):  # ties in quantiles of integer data: nudge up so each level is distinct
            if row[k] <= row[k - 1]:
                row[k] = float(np.nextafter(np.float32(row[k - 1]), np.float32(np.inf)))
        rows.append(row)
    return rows
