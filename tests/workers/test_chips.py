"""The chip grid: full coverage of every edge, ids anchored to the scene grid, strips that can be flushed."""

from __future__ import annotations

import numpy as np
import pytest

from spikescan.errors import InvalidInput
from workers.chips import Chip, ChipGrid, cell_validity


@pytest.mark.parametrize(
    ("width", "height", "patch", "stride"),
    [(200, 200, 48, 24), (489, 443, 16, 8), (47, 13, 48, 24), (100, 61, 16, 16)],
)
def test_grid_covers_every_pixel_once_or_more(width: int, height: int, patch: int, stride: int) -> None:
    grid = ChipGrid(width, height, patch, stride, output_stride=4 if patch == 48 else 2)
    covered = np.zeros((height + patch, width + patch), np.int32)
    for chip in grid:
        covered[chip.y : chip.y + patch, chip.x : chip.x + patch] += 1
    assert covered[:height, :width].min() >= 1
    assert grid.n_chips == len(list(grid))
    # No chip starts beyond the scene: the grid is as small as full coverage allows.
    assert max(c.x for c in grid) < width and max(c.y for c in grid) < height


def test_ids_are_anchored_to_the_scene_grid_and_serialisable() -> None:
    grid = ChipGrid(489, 443, 16, 8, 2)
    chip = grid.chip(3, 5)
    assert chip.id == "r3c5" and (chip.x, chip.y) == (5 * 8, 3 * 8)
    assert grid.chip_by_id(chip.id) == chip
    assert Chip.from_dict(chip.to_dict()) == chip
    assert ChipGrid.from_dict(grid.to_dict()) == grid
    with pytest.raises(KeyError):
        grid.chip(grid.rows, 0)


def test_stride_must_be_a_multiple_of_the_output_stride() -> None:
    with pytest.raises(InvalidInput, match="multiple of the model's output stride 4"):
        ChipGrid(200, 200, 48, 22, 4)
    with pytest.raises(InvalidInput, match="between 1 and the patch size"):
        ChipGrid(200, 200, 48, 96, 4)


def test_default_stride_is_half_a_patch_on_whole_cells() -> None:
    assert ChipGrid.for_model(100, 100, 48, 4, None).stride == 24
    assert ChipGrid.for_model(100, 100, 48, 16, None).stride == 32  # 24 rounded to whole 16-pixel cells
    assert ChipGrid.for_model(100, 100, 16, 16, None).stride == 16  # one cell per chip: never below a cell


def test_final_rows_never_precede_a_later_chip() -> None:
    grid = ChipGrid(489, 443, 16, 8, 2)
    for row in range(grid.rows - 1):
        first_cell_of_next = grid.chip(row + 1, 0).y // grid.output_stride
        assert grid.final_rows(row) == first_cell_of_next
    assert grid.final_rows(grid.rows - 1) == grid.out_height


def test_a_cell_is_valid_if_any_pixel_is() -> None:
    valid = np.zeros((1, 8, 8), bool)
    valid[0, 5, 2] = True
    cells = cell_validity(valid, 4)
    assert cells.shape == (1, 2, 2)
    assert cells[0].tolist() == [[False, False], [True, False]]


def test_cell_validity_agrees_with_the_plain_reduction_on_strided_chips() -> None:
    rng = np.random.default_rng(7)
    for share in (0.0, 0.02, 0.5, 1.0):
        strip = rng.random((16, 200)) < share
        chips = np.lib.stride_tricks.sliding_window_view(strip, 16, axis=1)[:, ::8].transpose(1, 0, 2)
        expected = chips.reshape(len(chips), 4, 4, 4, 4).any(axis=(2, 4))
        assert (cell_validity(chips, 4) == expected).all()
