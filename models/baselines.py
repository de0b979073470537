"""Detectors that need no model, scored beside every tree figure on the same images.

- ``grid``: a blind grid of square boxes of the training crowns' median size, tiled over the image.
- ``excess_green``: the excess-green index ``(2G − R − B) / (R + G + B)`` averaged over the model's output
  cells, then the *same* peak picking as the model's (``models.tasks.peaks``), box side the training
  crowns' median. Its minimum score and smoothing are tuned on the fold's training images only, like the
  model's settings, so the comparison is like for like.

Boxes are in source pixels of the image (x0, y0, x1, y1), as ``models.evaluate.match_boxes`` takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.tasks.peaks import PeakSpec, pick_boxes

Box = tuple[float, float, float, float]
MIN_SCORES = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25)
SIGMAS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class LabelledImage:
    name: str
    pixels: np.ndarray  # float32 [H, W, 3] RGB in source pixels
    truth: list[Box]  # source pixels


def median_side(images: list[LabelledImage]) -> float:
    """Median crown side (mean of width and height) over the images' boxes, in source pixels."""
    sides = [((x1 - x0) + (y1 - y0)) / 2 for im in images for x0, y0, x1, y1 in im.truth]
    return float(np.median(sides))


def grid_boxes(width: int, height: int, side: float) -> list[tuple[Box, float]]:
    n_x, n_y = max(int(width // side), 1), max(int(height // side), 1)
    off_x, off_y = (width - n_x * side) / 2, (height - n_y * side) / 2
    return [((off_x + i * side, off_y + j * side, off_x + (i + 1) * side, off_y + (j + 1) * side), 1.0)
            for j in range(n_y) for i in range(n_x)]


def excess_green_cells(pixels: np.ndarray, cell_px: int) -> tuple[np.ndarray, np.ndarray]:
    """([h, w, 1] score clipped to 0..1, [h, w] valid) on cells of ``cell_px`` source pixels."""
    h, w = pixels.shape[0] // cell_px, pixels.shape[1] // cell_px
    blocks = pixels[: h * cell_px, : w * cell_px, :3].astype(np.float64)
    rgb = blocks.reshape(h, cell_px, w, cell_px, 3).mean(axis=(1, 3))
    total = rgb.sum(axis=-1)
    exg = np.where(total > 0, (2 * rgb[..., 1] - rgb[..., 0] - rgb[..., 2]) / np.maximum(total, 1e-9), 0.0)
    return np.clip(exg, 0.0, 1.0)[..., None].astype(np.float32), np.isfinite(rgb).all(axis=-1)


def excess_green_boxes(pixels: np.ndarray, cell_px: int, side_px: float, min_score: float, sigma: float
                       ) -> list[tuple[Box, float]]:
    score, valid = excess_green_cells(pixels, cell_px)
    spec = PeakSpec(targets=(0,), sides=(side_px / cell_px,), sigma=sigma, min_score=min_score, nms_iou=0.3)
    return [((b.x0 * cell_px, b.y0 * cell_px, b.x1 * cell_px, b.y1 * cell_px), b.score)
            for b in pick_boxes(score, valid, spec)]


def tune_excess_green(images: list[LabelledImage], cell_px: int, side_px: float) -> dict[str, float]:
    """The (min_score, sigma) with the best pooled box F1 over ``images`` (the fold's training images)."""
    from models.evaluate import Matching, match_boxes

    best: tuple[float, float, float] = (-1.0, MIN_SCORES[0], SIGMAS[0])
    for sigma in SIGMAS:
        for min_score in MIN_SCORES:
            total = Matching(0, 0, 0)
            for im in images:
                found = excess_green_boxes(im.pixels, cell_px, side_px, min_score, sigma)
                total = total + match_boxes(found, im.truth)
            best = max(best, (total.f1, min_score, sigma))
    return {"min_score": best[1], "sigma_cells": best[2], "train_f1": round(best[0], 4)}
