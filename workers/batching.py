"""Full backend batches across chip rows, results handed back row by row in order.

A chip row of a narrow scene holds fewer chips than a batch; a wide one holds several batches. ``RowBatcher``
packs the kept chips of successive rows into batches of exactly ``batch_size`` (the last one excepted), so the
backend's working memory is the same on every scene, and returns each row's results as soon as all of them are
in — the order the mosaicker needs. It holds at most the chip rows that the open batch spans (their strips
are views), never more than a batch of copied chips.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from workers.mosaic import ChipResult
from workers.scene import ChipBatch

InferFn = Callable[[ChipBatch], list[ChipResult]]


@dataclass
class _Row:
    row: int
    missing: int
    results: list[ChipResult] = field(default_factory=list)


class RowBatcher:
    def __init__(self, infer: InferFn, batch_size: int) -> None:
        self._infer = infer
        self._batch_size = max(1, batch_size)
        self._segments: deque[tuple[ChipBatch, np.ndarray]] = deque()  # chips waiting: (row batch, indices)
        self._waiting = 0
        self._rows: deque[_Row] = deque()
        self._by_row: dict[int, _Row] = {}

    def add_row(self, row: int, batch: ChipBatch, keep: np.ndarray) -> list[tuple[int, list[ChipResult]]]:
        """Queue the chips ``keep`` (indices) of chip row ``row``; return every row now complete, in order."""
        entry = _Row(row, len(keep))
        self._rows.append(entry)
        self._by_row[row] = entry
        if len(keep):
            self._segments.append((batch, keep))
            self._waiting += len(keep)
        while self._waiting >= self._batch_size:
            self._run(self._batch_size)
        return list(self._complete())

    def flush(self) -> list[tuple[int, list[ChipResult]]]:
        """Run what is left and return the remaining rows."""
        while self._waiting:
            self._run(min(self._waiting, self._batch_size))
        return list(self._complete())

    def _run(self, n: int) -> None:
        # The batch's chips are copied once, straight out of their rows' strips into the batch's arrays
        # (selecting per row and then concatenating copied every chip twice).
        first = self._segments[0][0]
        pixels = np.empty((n, *first.pixels.shape[1:]), first.pixels.dtype)
        valid = np.empty((n, *first.valid.shape[1:]), first.valid.dtype)
        chips = []
        at = 0
        while at < n:
            batch, idx = self._segments[0]
            k = min(n - at, len(idx))
            take = idx[:k]
            # Chip by chip: each is a strided window of its row's strip, copied as whole rows of pixels
            # (np.take on such a view goes element by element: measured 6.7x slower).
            for j, i in enumerate(take.tolist(), start=at):
                pixels[j] = batch.pixels[i]
                valid[j] = batch.valid[i]
            chips.extend(batch.chips[i] for i in take)
            if k == len(idx):
                self._segments.popleft()
            else:
                self._segments[0] = (batch, idx[k:])
            at += k
            self._waiting -= k
        merged = ChipBatch(chips, pixels, valid)
        for result in self._infer(merged):
            entry = self._by_row[result.chip.row]
            entry.results.append(result)
            entry.missing -= 1

    def _complete(self) -> Iterator[tuple[int, list[ChipResult]]]:
        while self._rows and self._rows[0].missing == 0:
            entry = self._rows.popleft()
            del self._by_row[entry.row]
            yield entry.row, entry.results
