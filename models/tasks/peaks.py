"""Objects from a score map: smoothing, local maxima, a box size per peak, suppression, clipping.

The detection task's vector output. A detector's mosaic carries, per output cell, the scores of its target
classes (e.g. "crown centre, small / medium / large"). Their sum is the *object score*; its local maxima
are objects. Steps, all in output-cell units:

1. Normalised smoothing: ``S = G(s·v) / G(v)`` with a Gaussian ``G`` of ``sigma`` cells, ``s`` the object
   score and ``v`` the valid-cell mask, so the edge of the data does not pull scores down.
2. Peaks: valid cells where ``S`` is the maximum of its (2r+1)² neighbourhood and ``S >= min_score``; the
   centre is refined to sub-cell precision by a parabola through the neighbours along each axis.
3. Box side: the score-weighted mean of the target classes' sides, smoothed the same way (``G(Σ s_k·side_k)
   / G(s)``), so a peak between a "medium" and a "large" cell gets an in-between box.
4. Clipping: to the scene's footprint, then to the bounding box of valid cells inside the box.
5. Suppression ("fast NMS"): a box is kept iff no box ranked above it (higher score, then earlier in
   raster order) overlaps it at IoU > ``nms_iou``. Unlike greedy NMS the decision needs only the boxes
   within reach, which is what lets ``PeakStream`` decide strip by strip; no two kept boxes overlap above
   the threshold either way.

``pick_boxes`` runs this on a whole array (training, evaluation, baselines); ``PeakStream`` runs it on the
mosaic's strips with a few rows of look-ahead and gives exactly the same boxes (a test checks).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TRUNCATE = 4.0  # scipy's default: the Gaussian reaches int(4·sigma + 0.5) cells
_EPS = 1e-6


@dataclass(frozen=True)
class PeakSpec:
    targets: tuple[int, ...]  # class indices that are the object (their scores are summed)
    sides: tuple[float, ...]  # box side in cells for each target class
    sigma: float = 1.0  # Gaussian smoothing, cells (0 = none)
    min_score: float = 0.3
    nms_iou: float = 0.3
    radius: int = 1  # local maximum over a (2r+1)² neighbourhood

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.sides) or not self.targets:
            raise ValueError("one box side per target class, at least one target")

    @property
    def reach(self) -> int:
        """Rows of context a smoothed value needs on each side."""
        return int(TRUNCATE * self.sigma + 0.5) if self.sigma > 0 else 0

    @property
    def max_side(self) -> float:
        return max(self.sides)


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in output cells (x = column, y = row), with its peak's score and centre cell."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    row: int
    col: int

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return a.astype(np.float64)
    return ndimage.gaussian_filter(a.astype(np.float64), sigma, mode="constant", cval=0.0, truncate=TRUNCATE)


def smoothed_maps(scores: np.ndarray, valid: np.ndarray, spec: PeakSpec) -> tuple[np.ndarray, np.ndarray]:
    """(object score S, box side Z) per cell, both smoothed (see the module docstring, steps 1 and 3)."""
    v = valid.astype(np.float64)
    per_class = scores[..., list(spec.targets)].astype(np.float64) * v[..., None]
    s = per_class.sum(axis=-1)
    z = (per_class * np.asarray(spec.sides, np.float64)).sum(axis=-1)
    gv, gs, gz = _smooth(v, spec.sigma), _smooth(s, spec.sigma), _smooth(z, spec.sigma)
    score = np.where(gv > _EPS, gs / np.maximum(gv, _EPS), 0.0)
    side = np.where(gs > _EPS, gz / np.maximum(gs, _EPS), spec.sides[0])
    return score, side


def _peaks(score: np.ndarray, valid: np.ndarray, spec: PeakSpec, rows: slice) -> tuple[np.ndarray, ...]:
    """(row, col) of the peaks whose row lies in ``rows`` (indices into the arrays)."""
    size = 2 * spec.radius + 1
    local = ndimage.maximum_filter(score, size=size, mode="constant", cval=-np.inf)
    hit = valid & (score >= spec.min_score) & (score >= local)
    hit[: rows.start] = False
    hit[rows.stop :] = False
    return np.nonzero(hit)


def _offset(minus: float, centre: float, plus: float) -> float:
    curvature = minus - 2 * centre + plus
    if curvature >= 0:  # flat or not a maximum along this axis
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def _clip_to_valid(x0: float, y0: float, x1: float, y1: float, valid: np.ndarray, row0: int
                   ) -> tuple[float, float, float, float] | None:
    """Shrink to the bounding box of the valid cells the box touches (``valid`` starts at row ``row0``)."""
    r0, r1 = max(int(math.floor(y0)), row0), min(int(math.ceil(y1)), row0 + valid.shape[0])
    c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), valid.shape[1])
    window = valid[r0 - row0 : r1 - row0, c0:c1]
    if not window.any():
        return None
    rs, cs = np.nonzero(window.any(axis=1))[0], np.nonzero(window.any(axis=0))[0]
    return (max(x0, c0 + cs[0]), max(y0, r0 + rs[0]), min(x1, c0 + cs[-1] + 1.0), min(y1, r0 + rs[-1] + 1.0))


def candidates(score: np.ndarray, side: np.ndarray, valid: np.ndarray, spec: PeakSpec, rows: slice,
               row0: int, footprint: tuple[float, float]) -> list[Box]:
    """Clipped boxes at the peaks in ``rows`` (array indices); array row 0 is output row ``row0``."""
    out = []
    width, height = footprint
    for r, c in zip(*_peaks(score, valid, spec, rows), strict=True):
        s = score[r, c]
        dy = _offset(score[r - 1, c], s, score[r + 1, c]) if 0 < r < score.shape[0] - 1 else 0.0
        dx = _offset(score[r, c - 1], s, score[r, c + 1]) if 0 < c < score.shape[1] - 1 else 0.0
        cy, cx, half = row0 + r + 0.5 + dy, c + 0.5 + dx, side[r, c] / 2
        x0, y0 = max(cx - half, 0.0), max(cy - half, 0.0)
        x1, y1 = min(cx + half, width), min(cy + half, height)
        clipped = _clip_to_valid(x0, y0, x1, y1, valid, row0) if x1 > x0 and y1 > y0 else None
        if clipped is not None:
            out.append(Box(*clipped, score=float(s), row=row0 + int(r), col=int(c)))
    return out


def iou(a: Box, b: Box) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.area + b.area - inter)


def _table(boxes: list[Box]) -> np.ndarray:
    """[n, 7]: x0, y0, x1, y1, then the rank key (-score, row, col): smaller ranks higher."""
    rows = [[b.x0, b.y0, b.x1, b.y1, -b.score, b.row, b.col] for b in boxes]
    return np.array(rows, np.float64).reshape(-1, 7)


def _suppressed_block(c: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    iw = np.minimum(c[:, None, 2], p[None, :, 2]) - np.maximum(c[:, None, 0], p[None, :, 0])
    ih = np.minimum(c[:, None, 3], p[None, :, 3]) - np.maximum(c[:, None, 1], p[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_c = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    union = area_c[:, None] + area_p[None, :] - inter
    overlaps = (inter > 0) & (inter > threshold * np.where(union > 0, union, 1.0))
    kc, kp = c[:, None, 4:], p[None, :, 4:]
    better = (kp[..., 0] < kc[..., 0]) | ((kp[..., 0] == kc[..., 0]) & (
        (kp[..., 1] < kc[..., 1]) | ((kp[..., 1] == kc[..., 1]) & (kp[..., 2] < kc[..., 2]))))
    return (overlaps & better).any(axis=1)


def suppressed(boxes: list[Box], pool: list[Box], threshold: float, block: int = 256) -> np.ndarray:
    """bool per box of ``boxes``: a box of ``pool`` ranked above it (higher score, then earlier in raster
    order) overlaps it at IoU > ``threshold``. Vectorised in blocks of boxes against the pool boxes whose
    rows reach the block, so a large map costs near-linear time."""
    out = np.zeros(len(boxes), bool)
    if not boxes or not pool:
        return out
    c_all, p_all = _table(boxes), _table(pool)
    order = np.argsort(c_all[:, 1], kind="stable")
    for start in range(0, len(order), block):
        idx = order[start : start + block]
        c = c_all[idx]
        near = (p_all[:, 3] > c[:, 1].min()) & (p_all[:, 1] < c[:, 3].max())
        out[idx] = _suppressed_block(c, p_all[near], threshold)
    return out


def pick_boxes(scores: np.ndarray, valid: np.ndarray, spec: PeakSpec,
               footprint: tuple[float, float] | None = None) -> list[Box]:
    """Every kept box of a whole score map ``scores`` [H, W, C] with ``valid`` [H, W], in raster order."""
    h, w = valid.shape
    score, side = smoothed_maps(scores, valid, spec)
    found = candidates(score, side, valid, spec, slice(0, h), 0, footprint or (float(w), float(h)))
    drop = suppressed(found, found, spec.nms_iou)
    return [b for b, d in zip(found, drop, strict=True) if not d]


class PeakStream:
    """``pick_boxes`` over strips fed top to bottom, with memory bounded by the width times a few rows."""

    def __init__(self, spec: PeakSpec, footprint: tuple[float, float]) -> None:
        self.spec, self.footprint = spec, footprint
        self._context = spec.radius + spec.reach  # rows a peak decision needs below (and above) it
        self._margin = max(self._context, math.ceil(spec.max_side / 2) + 1)
        self._top = 0  # output row of the buffer's first row
        self._done = 0  # rows below this have had their peaks found
        self._scores: np.ndarray | None = None
        self._valid: np.ndarray | None = None
        self._pending: list[Box] = []  # found, not yet decided
        self._pool: list[Box] = []  # decided or pending boxes that may still suppress a pending one

    def feed(self, y0: int, scores: np.ndarray, valid: np.ndarray) -> Iterator[Box]:
        bottom = self._top + (0 if self._valid is None else self._valid.shape[0])
        if y0 != bottom:
            raise ValueError(f"strip at row {y0} fed out of order (expected row {bottom})")
        if self._scores is None or self._valid is None:
            self._scores, self._valid = scores.astype(np.float32), valid.astype(bool)
        else:
            self._scores = np.concatenate([self._scores, scores.astype(np.float32)])
            self._valid = np.concatenate([self._valid, valid.astype(bool)])
        yield from self._advance(y0 + valid.shape[0] - self._margin, final=False)

    def close(self) -> Iterator[Box]:
        if self._valid is not None:
            yield from self._advance(self._top + self._valid.shape[0], final=True)
        yield from self._decide(math.inf)

    def _advance(self, ready: int, final: bool) -> Iterator[Box]:
        assert self._scores is not None and self._valid is not None
        if ready <= self._done:
            return
        score, side = smoothed_maps(self._scores, self._valid, self.spec)
        rows = slice(self._done - self._top, ready - self._top)
        found = candidates(score, side, self._valid, self.spec, rows, self._top, self.footprint)
        self._pending += found
        self._pool += found
        self._done = ready
        if not final:
            yield from self._decide(ready)
            keep_from = max(self._done - self._margin, self._top)
            cut = keep_from - self._top
            self._scores, self._valid = self._scores[cut:], self._valid[cut:]
            self._top = keep_from

    def _decide(self, ready: float) -> Iterator[Box]:
        """Decide the pending boxes that no box yet to be found can overlap (every such box reaches at most
        ``max_side / 2`` above row ``ready``); forget the boxes that can no longer suppress a pending one."""
        half = self.spec.max_side / 2
        decided = sorted((b for b in self._pending if b.y1 + half <= ready), key=lambda b: (b.row, b.col))
        drop = suppressed(decided, self._pool, self.spec.nms_iou)
        yield from (b for b, d in zip(decided, drop, strict=True) if not d)
        self._pending = [b for b in self._pending if b.y1 + half > ready]
        self._pool = [b for b in self._pool if b.y1 + 4 * half > ready]
