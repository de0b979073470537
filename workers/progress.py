"""Chip progress: a tqdm bar on a terminal, silence when piped or ``--quiet``, and an optional callback.

The callback (``on_update(done, total, chips_per_s)``) is how the service publishes the same numbers as job
progress; the bar is only for people watching a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

ProgressCallback = Callable[[int, int, float], None]


class Progress:
    def __init__(
        self,
        total: int,
        quiet: bool = False,
        on_update: ProgressCallback | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.done = 0
        self._start = time.perf_counter()
        self._on_update = on_update
        stream = stream or sys.stderr
        show = not quiet and stream.isatty()
        self._bar = (
            tqdm(total=total, unit="chip", file=stream, dynamic_ncols=True, smoothing=0.1, desc="chips")
            if show
            else None
        )

    @classmethod
    def factory(cls, quiet: bool, on_update: ProgressCallback | None) -> Callable[[int], Progress]:
        """Progress bars for a total not known yet (the chip grid comes after opening the scene)."""
        return lambda total: cls(total, quiet, on_update)

    @property
    def chips_per_s(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int) -> None:
        """``n`` more chips finished (scanned or skipped)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._on_update is not None:
            self._on_update(self.done, self.total, self.chips_per_s)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
