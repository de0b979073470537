"""The mosaicker: weighted blending, strips flushed as soon as final, bounded buffers, stored results."""

from __future__ import annotations

import numpy as np
import pytest

from workers.chips import ChipGrid
from workers.mosaic import ChipResult, Mosaicker, Strip, blend_weights


class Collect:
    """A sink that keeps strips (only for small test grids)."""

    def __init__(self) -> None:
        self.strips: list[Strip] = []

    def write_strip(self, strip: Strip) -> None:
        self.strips.append(strip)

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.concatenate([s.scores for s in self.strips]),
            np.concatenate([s.hits for s in self.strips]),
            np.concatenate([s.disagreement for s in self.strips]),
        )


def _results(grid: ChipGrid, classes: int, seed: int) -> list[list[ChipResult]]:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(grid.rows):
        row = []
        for chip in grid.row(r):
            p = rng.random((grid.cells, grid.cells, classes)).astype(np.float32)
            valid = rng.random((grid.cells, grid.cells)) > 0.2
            row.append(ChipResult(chip, p / p.sum(-1, keepdims=True), valid, int(rng.integers(0, 1000))))
        rows.append(row)
    return rows


def _reference(grid: ChipGrid, rows: list[list[ChipResult]], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The same blend computed the obvious way, on a whole-grid array (fine for a test-sized grid)."""
    n = grid.cells
    h, w = grid.rows * n + n, grid.cols * n + n
    acc, wsum = np.zeros((h, w, classes)), np.zeros((h, w))
    hits = np.zeros((h, w), int)
    for row in rows:
        for res in row:
            y, x = res.chip.y // grid.output_stride, res.chip.x // grid.output_stride
            wt = blend_weights(n) * res.cell_valid
            acc[y : y + n, x : x + n] += wt[..., None] * res.scores
            wsum[y : y + n, x : x + n] += wt
            hits[y : y + n, x : x + n] += res.cell_valid
    mean = acc / np.where(wsum > 0, wsum, 1)[..., None]
    return mean[: grid.out_height, : grid.out_width], hits[: grid.out_height, : grid.out_width]


def test_blend_weight_is_a_pyramid_highest_in_the_centre() -> None:
    w = blend_weights(6)
    assert w[0, 0] == 1 and w.max() == w[2, 2] == w[3, 3] == 9
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])


@pytest.mark.parametrize(
    ("width", "height", "patch", "stride", "os_"),
    [(61, 45, 16, 8, 2), (50, 50, 16, 4, 4), (33, 17, 8, 8, 8), (70, 40, 16, 12, 2), (90, 30, 20, 15, 5)],
)
def test_streamed_mosaic_equals_whole_grid_blend(
    width: int, height: int, patch: int, stride: int, os_: int
) -> None:
    grid = ChipGrid(width, height, patch, stride, os_)
    rows = _results(grid, 3, seed=width)
    # Skipped chips (outside an AOI, all nodata) are simply absent, anywhere in a row.
    rows = [[res for i, res in enumerate(row) if (i * 7 + r) % 5 != 3] for r, row in enumerate(rows)]
    sink = Collect()
    mosaic = Mosaicker(grid, 3, sink)
    for r, row in enumerate(rows):
        mosaic.feed_row(r, reversed(row))  # any order within a row
    assert mosaic.done
    scores, hits, disagreement = sink.stacked()
    ref_scores, ref_hits = _reference(grid, rows, 3)
    assert scores.shape == (grid.out_height, grid.out_width, 3)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(hits, ref_hits)
    assert (disagreement[hits > 1] > 0).all() and (disagreement[hits <= 1] < 1e-6).all()
    # Strips are contiguous and never taller than one chip: memory ∝ width × patch.
    assert [s.y0 for s in sink.strips] == list(np.cumsum([0] + [s.height for s in sink.strips[:-1]]))
    assert max(s.height for s in sink.strips) <= grid.cells


def test_agreeing_chips_have_no_disagreement() -> None:
    grid = ChipGrid(40, 40, 16, 8, 4)
    p = np.zeros((4, 4, 2), np.float32)
    p[..., 1] = 1
    sink = Collect()
    mosaic = Mosaicker(grid, 2, sink)
    for r in range(grid.rows):
        mosaic.feed_row(r, [ChipResult(c, p, np.ones((4, 4), bool), 0) for c in grid.row(r)])
    scores, hits, disagreement = sink.stacked()
    assert (hits >= 1).all() and np.allclose(disagreement, 0) and np.allclose(scores[..., 1], 1)


def test_rows_out_of_order_are_refused_and_skipped_chips_leave_holes() -> None:
    grid = ChipGrid(32, 32, 16, 8, 4)
    sink = Collect()
    mosaic = Mosaicker(grid, 2, sink)
    with pytest.raises(ValueError, match="out of order"):
        mosaic.feed_row(1, [])
    for r in range(grid.rows):
        mosaic.feed_row(r, [])  # every chip skipped (all nodata)
    _, hits, _ = sink.stacked()
    assert hits.shape == (grid.out_height, grid.out_width) and not hits.any()
