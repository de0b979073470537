"""Stored chip results: one file per chip row of a batch, each chip read back once, only if counted done."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from models import package
from workers import chipstore, input_check, pipeline
from workers.backends import get_backend
from workers.chips import ChipGrid
from workers.mosaic import ChipResult

GRID = ChipGrid(width=100, height=100, patch=16, stride=8, output_stride=4)


def _result(row: int, col: int, seed: int) -> ChipResult:
    rng = np.random.default_rng(seed)
    cells = GRID.cells
    return ChipResult(
        GRID.chip(row, col),
        rng.random((cells, cells, 3), dtype=np.float32),
        rng.random((cells, cells)) > 0.2,
        int(rng.integers(0, 1000)),
    )


def test_batches_are_split_by_row_and_read_back_in_column_order(tmp_path: Path) -> None:
    batch = [_result(0, 3, 1), _result(1, 0, 2), _result(0, 1, 3)]
    paths = chipstore.store(tmp_path, batch)
    assert [p.parent.name for p in paths] == ["r0", "r1"]
    row0 = chipstore.load_row(tmp_path, 0, {"r0c1", "r0c3"})
    assert [r.chip.id for r in row0] == ["r0c1", "r0c3"]
    assert np.array_equal(row0[1].scores, batch[0].scores) and np.array_equal(
        row0[1].cell_valid, batch[0].cell_valid
    )
    assert row0[0].spikes == batch[2].spikes and row0[0].chip == batch[2].chip


def test_redelivered_chips_are_kept_once_and_uncounted_ones_never(tmp_path: Path) -> None:
    first = [_result(2, c, c) for c in range(4)]
    chipstore.store(tmp_path, first)
    chipstore.store(tmp_path, first)  # the same batch again: same file, same bytes
    chipstore.store(tmp_path, [_result(2, 1, 1), _result(2, 5, 5)])  # chip r2c1 again, in another batch
    assert len(list((tmp_path / "r2").glob("*.npz"))) == 2
    assert not list((tmp_path / "r2").glob("*.tmp"))
    done = {"r2c0", "r2c1", "r2c5"}  # r2c2 and r2c3 were dead-lettered after all
    assert [r.chip.id for r in chipstore.load_row(tmp_path, 2, done)] == ["r2c0", "r2c1", "r2c5"]
    assert chipstore.load_row(tmp_path, 7, done) == []


def test_a_spiking_models_scores_are_stored_exact_and_compact(tmp_path: Path, landsat_tif: Path) -> None:
    """Scores are a softmax of small integer counts (few distinct vectors): stored as a palette and an index,
    read back bit for bit, in a fraction of the float32 bytes — on a local disk and, deflated too, for a
    bucket. Real chips of the shipped land-cover model; scores that are not few keep their floats."""
    pkg = package.load("landcover-landsat")
    with input_check.open_checked(landsat_tif, pkg.card) as scene, get_backend("emulator", pkg) as engine:
        card = pkg.card
        grid = ChipGrid.for_model(scene.width, scene.height, card.patch_size, card.output_stride, None)
        batch = scene.read_chip_row(grid, grid.rows // 2)
        results = pipeline.chip_results(batch, engine.infer(batch.pixels, batch.valid), grid.output_stride)
    (key,) = chipstore.store(tmp_path, results)
    back = chipstore.load_row(tmp_path, grid.rows // 2, {r.chip.id for r in results})
    assert all(np.array_equal(a.scores, b.scores) for a, b in zip(back, results, strict=True))
    assert (tmp_path / key).stat().st_size < sum(r.scores.nbytes for r in results) / 3
    scores = np.stack([r.scores for r in results])
    for deflate, ratio in ((False, 3), (True, 8)):
        packed = chipstore._pack_scores(scores, deflate=deflate)
        assert "score_palette" in packed or "score_palette_deflated" in packed, sorted(packed)
        assert sum(a.nbytes for a in packed.values()) < scores.nbytes / ratio, (deflate, scores.nbytes)
        assert np.array_equal(chipstore._unpack_scores(packed), scores)
    noisy = np.random.default_rng(0).random((300, 16, 16, 7), dtype=np.float32)  # 76,800 distinct vectors
    for deflate in (False, True):
        packed = chipstore._pack_scores(noisy, deflate=deflate)
        assert not any(k.startswith("score_palette") for k in packed)
        assert np.array_equal(chipstore._unpack_scores(packed), noisy)
    # Objects written before the palette (a job that spans an upgrade) still read.
    old = {"scores_deflated": np.frombuffer(zlib.compress(scores.tobytes(), 1), np.uint8),
           "scores_shape": np.array(scores.shape, np.int64)}
    assert np.array_equal(chipstore._unpack_scores(old), scores)
