"""RowBatcher: full batches across chip rows on real chips, rows handed back complete and in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.backends import get_backend
from workers.batching import RowBatcher
from workers.chips import ChipGrid
from workers.pipeline import chip_results
from workers.scene import ChipBatch, open_scene


def test_batches_span_rows_and_rows_come_back_whole(landsat_tif: Path, landsat_model) -> None:  # type: ignore[no-untyped-def]
    sizes: list[int] = []
    backend = get_backend("emulator", landsat_model)

    def infer(batch: ChipBatch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return chip_results(batch, backend.infer(batch.pixels, batch.valid), 2)

    batcher = RowBatcher(infer, batch_size=50)
    done: list[tuple[int, list]] = []  # type: ignore[type-arg]
    kept: dict[int, set[str]] = {}
    with open_scene(landsat_tif, landsat_model.card) as scene:
        grid = ChipGrid(scene.width, scene.height, 16, 8, 2)
        for row in range(grid.rows):
            batch = scene.read_chip_row(grid, row)
            keep = np.flatnonzero(batch.valid.any(axis=(1, 2)))
            kept[row] = {batch.chips[i].id for i in keep}
            done.extend(batcher.add_row(row, batch, keep))
            # Nothing comes back before all of its chips (and all earlier rows) are in.
            assert [r for r, _ in done] == list(range(len(done)))
        done.extend(batcher.flush())
    assert [r for r, _ in done] == list(range(grid.rows))
    assert any(not ids for ids in kept.values())  # real nodata rows: empty rows pass through too
    for row, results in done:
        assert {r.chip.id for r in results} == kept[row]
    assert all(s == 50 for s in sizes[:-1]) and 0 < sizes[-1] <= 50
    assert sum(sizes) == sum(len(ids) for ids in kept.values())
