"""The production scan on an in-memory image (training's figures): the same grid and blending as a scene."""

from __future__ import annotations

import numpy as np

from models.package import ModelPackage
from workers.arrayscan import scan_scores
from workers.mosaic import blend_weights


def test_constant_answers_come_back_everywhere_and_no_data_stays_invalid(rgb_model: ModelPackage) -> None:
    card = rgb_model.card
    pixels = np.full((100, 130, 3), 120.0, np.float32)
    pixels[:, 100:] = np.nan  # a no-data band on the right: 30 px = 7.5 cells
    seen: list[int] = []

    def predict(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
        seen.append(len(px))
        assert np.isfinite(px).all()
        out = np.zeros((len(px), card.output_cells, card.output_cells, len(card.classes)), np.float32)
        out[..., 1] = 1.0
        return out

    scores, valid = scan_scores(pixels, card, predict)
    assert scores.shape[:2] == valid.shape == (25, 33)  # ceil(100 / 4), ceil(130 / 4)
    assert valid[:, :25].all() and not valid[:, 26:].any()
    np.testing.assert_allclose(scores[valid][:, 1], 1.0)
    assert (scores[~valid] == 0).all()
    assert sum(seen) < 4 * 6  # all-nodata chips are skipped, as the pipeline skips them


def test_overlapping_chips_blend_with_the_pyramid_weights(rgb_model: ModelPackage) -> None:
    """Each chip answers with its own row index as the class-1 score: where two chips overlap, the blend is
    their pyramid-weighted mean, the mosaicker's rule."""
    card = rgb_model.card
    n = card.output_cells
    pixels = np.full((card.patch_size, card.patch_size + card.patch_size // 2, 3), 90.0, np.float32)
    calls = iter(range(100))

    def predict(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.zeros((len(px), n, n, len(card.classes)), np.float32)
        for i in range(len(px)):
            out[i, ..., 1] = next(calls)  # chips arrive left to right: 0, 1
        return out

    scores, _ = scan_scores(pixels, card, predict)
    w = blend_weights(n)
    half = n // 2
    # Output column `half` is column `half` of chip 0 and column 0 of chip 1.
    expected = (w[0, half] * 0 + w[0, 0] * 1) / (w[0, half] + w[0, 0])
    assert scores[0, half, 1] == np.float32(expected)
