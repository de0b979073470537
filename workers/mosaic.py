"""Blend per-chip results into output strips in memory bounded by the scene's width.

Feed the ``Mosaicker`` the results of chip row 0, then row 1, ... (any order within a row; skipped chips are
simply absent). After each row it hands every output row that no later chip can touch to its sink as a
``Strip``, so it holds at most one chip's height of output rows: memory ∝ width × patch, whatever the scene's
height. The same object runs in-process (``workers.pipeline``) and in the service's mosaic worker, which
rebuilds ``ChipResult`` records from storage (``workers.chipstore``).

Blending. Each valid cell (one with at least one valid pixel) of every chip covering an output cell adds its
class scores with the weight

    w(i, j) = (1 + min(i, n-1-i)) * (1 + min(j, n-1-j))        for cell (i, j) of a chip n cells wide,

a pyramid that is highest in the chip's centre and lowest (1) on its border, where the network's receptive
field ran into the chip's zero padding. Scores are the weighted mean; ``hits`` counts the chips that
contributed; ``disagreement`` is the weighted variance of the chips' score vectors summed over classes
(0 when all chips agree; 0.5 when two chips put all their score on different classes) — a seam score.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from workers.chips import Chip, ChipGrid

T = TypeVar("T")


@dataclass
class ChipResult:
    """What inference produced for one chip: the record the service stores and the mosaicker consumes."""

    chip: Chip
    scores: np.ndarray  # float32 [cy, cx, classes]
    cell_valid: np.ndarray  # bool [cy, cx]: cells with at least one valid pixel
    spikes: int


@dataclass
class Strip:
    """Finished output rows ``y0 .. y0 + height`` of the whole output width."""

    y0: int
    scores: np.ndarray  # float32 [h, w, classes]: blended scores, 0 where no chip saw the cell
    hits: np.ndarray  # uint16 [h, w]
    disagreement: np.ndarray  # float32 [h, w]

    @property
    def height(self) -> int:
        return int(self.hits.shape[0])


class StripSink(Protocol):
    def write_strip(self, strip: Strip) -> None: ...


class Behind(Generic[T]):
    """Hands items to ``consume`` on a background thread, at most ``depth`` items behind.

    Work that would otherwise sit on the inference thread's critical path overlaps the next rows' reading
    and inference instead (GDAL and numpy release the GIL). Items are fresh objects, so nothing is shared. A
    failure in ``consume`` is raised by the next ``put`` or by ``close``; ``close`` waits for the queue."""

    def __init__(self, consume: Callable[[T], None], depth: int = 2, name: str = "behind") -> None:
        self._consume = consume
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(item[0])
                except BaseException as exc:  # noqa: BLE001 - handed to the producer thread
                    self._error = exc

    def put(self, item: T) -> None:
        self._raise()
        self._queue.put((item,))

    def close(self) -> None:
        """Wait until every item is consumed; raise the consumer's failure if there was one."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class WriteBehind:
    """A ``StripSink`` that writes to ``sink`` on a background thread (``Behind``): GDAL's writes, the peak
    picking and the vector encoding overlap the next rows' reading and inference."""

    def __init__(self, sink: StripSink, depth: int = 2) -> None:
        self.sink = sink
        self._behind: Behind[Strip] = Behind(sink.write_strip, depth, name="write-behind")

    def write_strip(self, strip: Strip) -> None:
        self._behind.put(strip)

    def close(self) -> None:
        self._behind.close()


class StripTee:
    """One mosaic, several consumers: the rasters and the vector layer see every strip in turn."""

    def __init__(self, *sinks: StripSink) -> None:
        self.sinks = sinks

    def write_strip(self, strip: Strip) -> None:
        for sink in self.sinks:
            sink.write_strip(strip)


def blend_weights(cells: int) -> np.ndarray:
    """The pyramid weight of each cell of a chip ``cells`` wide (see the module docstring)."""
    ramp = 1.0 + np.minimum(np.arange(cells), cells - 1 - np.arange(cells))
    return np.outer(ramp, ramp).astype(np.float32)


class Mosaicker:
    def __init__(self, grid: ChipGrid, n_classes: int, sink: StripSink) -> None:
        self.grid = grid
        self.sink = sink
        self._weights = blend_weights(grid.cells)
        self._top = 0  # first output row not yet flushed
        self._next_row = 0
        h, w = grid.cells, grid.out_width
        self._acc = np.zeros((h, w, n_classes), np.float32)  # Σ w·p
        self._acc_sq = np.zeros((h, w), np.float32)  # Σ w·|p|²
        self._wsum = np.zeros((h, w), np.float32)
        self._hits = np.zeros((h, w), np.uint16)

    @property
    def done(self) -> bool:
        return self._next_row >= self.grid.rows

    def feed_row(self, row: int, results: Iterable[ChipResult]) -> None:
        """Add all results of chip row ``row`` (rows strictly in order), then flush the finished strip."""
        if row != self._next_row:
            raise ValueError(f"chip row {row} fed out of order (expected row {self._next_row})")
        results = list(results)
        for result in results:
            if result.chip.row != row:
                raise ValueError(f"chip {result.chip.id} fed with row {row}")
        self._add_row(row, results)
        self._next_row += 1
        self._flush(self.grid.final_rows(row))

    def _add_row(self, row: int, results: list[ChipResult]) -> None:
        """Add one chip row with a few whole-width numpy operations instead of a handful per chip.

        Per-chip slicing cost ~10 µs × 5 operations, which on a large scene of small chips was the mosaic's
        whole time. Chips ``k`` columns apart (``k`` chip steps cover a chip) never overlap, so each of the
        ``k`` phases is laid side by side in one buffer and added at once; each output cell still receives
        the same terms, and the sum no longer depends on the order the chips arrived in."""
        os_, c = self.grid.output_stride, self.grid.cells
        y = row * self.grid.stride // os_ - self._top
        h = min(c, self.grid.out_height - self._top - y)
        if h <= 0 or not results:
            return
        step = self.grid.stride // os_
        k = -(-c // step)
        span = k * step  # cells from one chip of a phase to the next (≥ c)
        cols = np.array([r.chip.col for r in results])
        for phase in range(k):
            members = np.flatnonzero(cols % k == phase)
            if members.size == 0:
                continue
            slots = (cols[members] - phase) // k
            x0 = phase * step
            width = min(int(slots.max() + 1) * span, self.grid.out_width - x0)
            if width <= 0:
                continue
            valid = np.stack([results[i].cell_valid for i in members])[:, :h]
            scores = np.stack([results[i].scores for i in members])[:, :h]
            n = int(slots.max() + 1)
            wt = np.zeros((n, h, span), np.float32)
            p = np.zeros((n, h, span, scores.shape[-1]), np.float32)
            hits = np.zeros((n, h, span), np.uint16)
            wt[slots, :, :c] = self._weights[:h] * valid
            p[slots, :, :c] = scores
            hits[slots, :, :c] = valid
            # [chip, row, cell] -> [row, chip·cell]: the phase's chips side by side along the output row.
            wt = wt.transpose(1, 0, 2).reshape(h, n * span)[:, :width]
            p = p.transpose(1, 0, 2, 3).reshape(h, n * span, -1)[:, :width]
            hits = hits.transpose(1, 0, 2).reshape(h, n * span)[:, :width]
            rows, xs = slice(y, y + h), slice(x0, x0 + width)
            self._acc[rows, xs] += wt[..., None] * p
            self._acc_sq[rows, xs] += wt * (p * p).sum(axis=-1)
            self._wsum[rows, xs] += wt
            self._hits[rows, xs] += hits

    def _flush(self, until: int) -> None:
        n = until - self._top
        if n <= 0:
            return
        wsum = self._wsum[:n]
        seen = wsum > 0
        safe = np.where(seen, wsum, 1.0)
        mean = self._acc[:n] / safe[..., None]
        var = np.where(seen, self._acc_sq[:n] / safe - (mean * mean).sum(axis=-1), 0.0)
        self.sink.write_strip(Strip(self._top, mean, self._hits[:n].copy(), np.clip(var, 0.0, None)))
        for buf in (self._acc, self._acc_sq, self._wsum, self._hits):
            buf[:-n] = buf[n:].copy()
            buf[-n:] = 0
        self._top = until
