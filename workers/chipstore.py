"""Per-chip inference results on shared storage, read back by chip row for the mosaicker.

Layout: ``<job dir>/chips/r<row>/<digest>.npz``, one file per chip row of each batch an inference worker
finished, holding the arrays of ``workers.mosaic.ChipResult`` stacked (``chip`` [n, 5] = row, col, x, y, size;
``scores``; ``cell_valid``; ``spikes``). One file per chip would cost a file creation per chip, which on
shared filesystems is slower than the inference itself.

Idempotent by construction: the file name is a digest of the chip ids it holds, so a redelivered batch
rewrites the same file with the same bytes, and a chip redelivered in a *different* batch is simply read
twice and kept once (results are deterministic). Files are written under a temporary name and renamed into
place, so a reader sees a whole file or none. Only chips that Redis counts as done are read back
(``load_row``'s ``done``), so a file from an attempt that was later dead-lettered never enters the mosaic.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from models.package import read_npz
from spikescan.errors import writing
from workers.chips import Chip
from workers.mosaic import ChipResult


def store(chip_dir: Path, results: list[ChipResult]) -> list[Path]:
    by_row: dict[int, list[ChipResult]] = defaultdict(list)
    for r in results:
        by_row[r.chip.row].append(r)
    with writing(chip_dir):
        return [_write_row(chip_dir / f"r{row}", group) for row, group in sorted(by_row.items())]


def _write_row(directory: Path, group: list[ChipResult]) -> Path:
    group = sorted(group, key=lambda r: r.chip.col)
    name = hashlib.sha256(",".join(r.chip.id for r in group).encode()).hexdigest()[:24]
    target = directory / f"{name}.npz"
    try:  # the row's directory exists after its first batch: no mkdir syscall for every later one
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        # Built in memory and written in one call: numpy writing the archive to the file itself costs a dozen
        # small writes and seeks, which on a busy volume take longer than building the archive.
        buf = io.BytesIO()
        np.savez(
            buf,
            chip=np.array([[c.row, c.col, c.x, c.y, c.size] for c in (r.chip for r in group)]),
            scores=np.stack([r.scores for r in group]).astype(np.float32, copy=False),
            cell_valid=np.stack([r.cell_valid for r in group]),
            spikes=np.array([r.spikes for r in group], np.int64),
        )
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getbuffer())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_row(
    chip_dir: Path, row: int, done: set[str] | None = None, skip: set[str] | frozenset[str] = frozenset()
) -> list[ChipResult]:
    """Stored results of chip row ``row``, each chip once, in column order: those in ``done`` (the chips
    counted done), or — ``done`` None, for a row whose every chip is counted done or failed — all but those
    in ``skip`` (the failed ones)."""
    found: dict[str, ChipResult] = {}
    directory = chip_dir / f"r{row}"
    for path in sorted(directory.glob("*.npz")) if directory.is_dir() else []:
        try:
            # One read of the whole file (then parsed in memory); thread-safe: the API reads chip results from
            # several request threads.
            z = read_npz(io.BytesIO(path.read_bytes()))
            chips, scores, valid, spikes = z["chip"], z["scores"], z["cell_valid"], z["spikes"]
        except FileNotFoundError:
            # Removed under us (the job finished or was deleted while a preview tile read it). The mosaicker
            # counts what it loaded against what Redis says is done, so a loss cannot pass there unnoticed.
            continue
        for i, (r, c, x, y, size) in enumerate(chips.tolist()):
            chip = Chip(r, c, x, y, size)
            if (chip.id in done if done is not None else chip.id not in skip) and chip.id not in found:
                found[chip.id] = ChipResult(chip, scores[i], valid[i], int(spikes[i]))
    return sorted(found.values(), key=lambda res: res.chip.col)
