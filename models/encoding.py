"""Pixels to spikes: the thermometer code every shipped model uses for its input layer.

Band b, level k fires iff the pixel's raw value >= thresholds[b][k]. Thresholds come from training statistics
(quantiles of the training pixels), are stored in the card in raw pixel units, and are compared in float32 on
every backend so all of them see the same input spikes. Invalid pixels (nodata, padding) fire nothing.

With ascending thresholds the thermometer code of a pixel-band is a prefix of ones, so it is fully described
by its *level* (how many thresholds the value reaches). ``encode_onehot`` sends that level as one spike on
the level's own input neuron (none at level 0); a first layer whose weights are made cumulative along the
level axis (``cumulative_levels``) then receives exactly the input sum the thermometer code gives it, with
one spike per pixel-band instead of up to K. The SpiNNaker and NEST networks use it to spare the host link.
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


def is_ascending(encoding: Encoding) -> bool:
    """True when every band's thresholds rise strictly: then the thermometer code is a level (a count)."""
    thresholds = np.asarray(encoding.thresholds, dtype=np.float32)
    return bool(np.all(np.diff(thresholds, axis=1) > 0))


def encode_onehot(pixels: np.ndarray, encoding: Encoding, valid: np.ndarray | None = None) -> np.ndarray:
    """[N, H, W, B] pixels → [N, H, W, B*K] uint8: channel b*K + q - 1 fires iff band b is at level q >= 1.

    Same layout as ``encode`` so connection indices do not change; only the thermometer's top spike stays.
    """
    if not is_ascending(encoding):
        raise ValueError("one-hot levels need strictly ascending thresholds per band")
    thermo = encode(pixels, encoding, valid)
    k = encoding.levels
    shaped = thermo.reshape(*thermo.shape[:3], -1, k)
    onehot = shaped.copy()
    onehot[..., :-1] &= 1 - shaped[..., 1:]  # a level fires only if the next one up does not
    return onehot.reshape(thermo.shape)


def cumulative_levels(w: np.ndarray, levels: int, axis: int) -> np.ndarray:
    """Weights over thermometer inputs → weights over one-hot inputs: along ``axis`` (channels b*K + k),
    entry (b, k) becomes the sum of entries (b, 0..k), so level q's neuron carries the whole prefix sum."""
    moved = np.moveaxis(w, axis, -1)
    shaped = moved.reshape(*moved.shape[:-1], -1, levels)
    return np.moveaxis(np.cumsum(shaped, axis=-1).reshape(moved.shape), -1, axis)


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
