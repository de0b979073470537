"""The production scan on an image already in memory: chip grid → predictor → mosaic, as ``predict`` runs it.

Training and evaluation score models on small labelled images held as arrays. They go through the same
``ChipGrid`` (stride, edge chips, skipped empty chips) and the same ``Mosaicker`` (pyramid blending) as a
scene on disk, so a card's figures come from the code path users run — only the reading differs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.card import ModelCard
from workers.chips import ChipGrid, cell_validity
from workers.mosaic import ChipResult, Mosaicker, Strip

# pixels [N, P, P, B] float32 (NaN = no data) and valid [N, P, P] → scores [N, cy, cx, classes]
ScorePredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Collect:
    def __init__(self, height: int, width: int, n_classes: int) -> None:
        self.scores = np.zeros((height, width, n_classes), np.float32)
        self.valid = np.zeros((height, width), bool)

    def write_strip(self, strip: Strip) -> None:
        rows = slice(strip.y0, strip.y0 + strip.height)
        self.scores[rows] = strip.scores
        self.valid[rows] = strip.hits > 0


def scan_scores(pixels: np.ndarray, card: ModelCard, predict: ScorePredictor, stride: int | None = None,
                batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Blended class scores [H/s, W/s, classes] and valid cells [H/s, W/s] of an image [H, W, B] on the
    model's grid (NaN = no data)."""
    height, width = pixels.shape[:2]
    grid = ChipGrid.for_model(width, height, card.patch_size, card.output_stride, stride)
    sink = _Collect(grid.out_height, grid.out_width, len(card.classes))
    mosaic = Mosaicker(grid, len(card.classes), sink)
    size = grid.patch
    for row in range(grid.rows):
        chips = grid.row(row)
        cut = np.full((len(chips), size, size, pixels.shape[-1]), np.nan, np.float32)
        for i, chip in enumerate(chips):
            part = pixels[chip.y : chip.y + size, chip.x : chip.x + size]
            cut[i, : part.shape[0], : part.shape[1]] = part
        valid = np.isfinite(cut).all(axis=-1)
        keep = np.flatnonzero(valid.any(axis=(1, 2)))
        results: list[ChipResult] = []
        for start in range(0, len(keep), batch):
            idx = keep[start : start + batch]
            scores = predict(np.nan_to_num(cut[idx]), valid[idx])
            cells = cell_validity(valid[idx], grid.output_stride)
            results += [ChipResult(chips[i], scores[k], cells[k], 0) for k, i in enumerate(idx)]
        mosaic.feed_row(row, results)
    return sink.scores, sink.valid
