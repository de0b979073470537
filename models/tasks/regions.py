"""Regions of a segmenter's target classes as polygons, built strip by strip as the mosaic streams.

The segmentation task's vector output. The class of an output cell is the argmax of its blended scores (ties
to the lowest index, exactly ``numpy.argmax``, as ``classes.tif`` has it) where the cell is valid, none where
it is not. Every **4-connected** region of one target class becomes one polygon feature:

- Connectivity is 4 (cells sharing an edge), the same as ``rasterio.features.shapes(connectivity=4)`` and
  ``scipy.ndimage.label``'s default: two cells of a class that touch only at a corner are two features,
  whose polygons touch at that point. A region's holes are kept (a hole may touch its shell or another hole
  at a single point, the OGC-valid form); vertices lie on the cell grid with collinear ones removed.
- Coordinates are output cells: x = column, y = row, cell (r, c) is the square [c, c+1] × [r, r+1]. So a
  polygon's planar area is exactly its number of cells, and the areas of a class sum to its cell count.
- ``score`` is the mean of the class's score over the region's cells; ``properties`` carry ``cells``.

Streaming. Strips are buffered until ``rows`` rows (default ``BATCH_ROWS``; only each cell's target class
and score are kept), then labelled per target class (``scipy.ndimage.label``) and polygonised once
(``rasterio.features.shapes`` on the label image, so every label is exactly one polygon). A piece that
touches neither the batch's first nor its last row is a whole region: it is emitted at once. The others are
joined by union-find with the open regions above through the cells that share an edge across the boundary
(same class, vertically adjacent — never corner-only contact); a region none of whose pieces touches the
last row polygonised can no longer grow and is emitted, its pieces dissolved with ``shapely.union_all`` —
exact here, since the pieces are grid polygons with integer vertices that share whole edges — which also
closes a ring around a hole that spans strips. Memory holds the batch plus the regions crossing its lower
edge; an open region's pieces are dissolved between batches once they outgrow its last dissolved outline,
and the holes found then are final and set aside, so a region spanning the whole map costs about its own
outline, not its cells. Any strip heights and any ``rows`` give exactly the same features (tests check).

Areas on the ground. ``workers.vectors`` maps the cell coordinates through the output transform to the
scene's CRS and then to lon/lat, and takes the geodesic area. A polygon edge is a straight line in the
scene's CRS but a geodesic between its end points in lon/lat: for a 90 km polygon the vertices alone miss
the cells' geodesic area by ~2e-5 in UTM or Lambert conformal conic, and by up to ~1.5e-3 in Web Mercator or
EPSG:4326 at 60° N. Edges split every 64 cells first (``densify_for_area``) bring that under 1e-7.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.geometry import LinearRing, Polygon
from shapely.geometry.base import BaseGeometry

from models.tasks.base import CellFeature, Footprint

if TYPE_CHECKING:
    from models.card import ModelCard

# An open region's pieces are dissolved into one polygon when the vertices added since its last dissolve
# exceed _DISSOLVE_GROWTH times that polygon's (and at least _MIN_DISSOLVE): the pieces held never exceed
# (1 + _DISSOLVE_GROWTH) times the region's outline so far, and a dissolve costs at most (1 + 1/growth)
# times the vertices added since the last one.
_MIN_DISSOLVE = 1 << 16
_DISSOLVE_GROWTH = 4
BATCH_ROWS = 64  # rows polygonised at once (see ``RegionStream``)


@dataclass
class _Region:
    """A region still touching the last row fed: its pieces so far and its statistics.

    Once a strip's joins are all made, the holes of the union of a region's pieces are final: a hole's
    cells lie above the strip's last row (a cell in that row, not in the region, borders the outside through
    its lower edge), and any other open region is outside it for the same reason. So when the pieces are
    dissolved (``compact``) the holes are set aside, and only the outer ring takes part in later dissolves.
    """

    target: int  # index into the card's target classes
    cells: int
    total: float  # sum of the class's score over the cells
    pieces: list[Polygon] = field(default_factory=list)
    outline: int = 0  # vertices of pieces[0] when it is the last dissolve, else 0
    pending: int = 0  # vertices of the pieces added since
    holes: list[LinearRing] = field(default_factory=list)  # final holes set aside

    def absorb(self, other: _Region) -> None:
        self.cells += other.cells
        self.total += other.total
        self.pieces += other.pieces
        self.holes += other.holes
        self.pending += other.pending + other.outline

    def compact(self) -> None:
        """Dissolve the pieces if they have grown enough since the last time (only between strips)."""
        if self.pending > max(_DISSOLVE_GROWTH * self.outline, _MIN_DISSOLVE):
            merged = simplify_to_grid(dissolve(self.pieces))
            self.holes += merged.interiors
            self.pieces = [Polygon(merged.exterior)]
            self.outline, self.pending = _vertices(self.pieces[0]), 0

    def geometry(self) -> Polygon:
        merged = self.pieces[0] if len(self.pieces) == 1 else dissolve(self.pieces)
        return Polygon(merged.exterior, [*merged.interiors, *self.holes]) if self.holes else merged


def _vertices(geom: BaseGeometry) -> int:
    return int(shapely.get_num_coordinates(geom))


def dissolve(pieces: list[Polygon]) -> Polygon:
    """The union of edge-connected grid polygons (one polygon; it may keep vertices along former seams)."""
    merged = shapely.union_all(pieces)
    if not isinstance(merged, Polygon):  # pieces of one region always share edges
        raise AssertionError(f"region pieces dissolved into a {merged.geom_type}")
    return merged


def _neighbours(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the vertex before and after each vertex of open rings (``ring``: ring id of each vertex,
    sorted), wrapping round within each ring."""
    start = np.searchsorted(ring, ring, side="left")
    stop = np.searchsorted(ring, ring, side="right")
    i = np.arange(len(ring))
    return np.where(i == start, stop - 1, i - 1), np.where(i + 1 == stop, start, i + 1)


def simplify_to_grid(geoms: np.ndarray | Polygon) -> np.ndarray | Polygon:
    """Grid polygons (every edge parallel to an axis) with every vertex that is not a corner removed:
    repeated vertices, and vertices in line with both neighbours (ring end points included). Linear in the
    number of vertices, for all polygons at once."""
    single = isinstance(geoms, Polygon)
    polygons = np.asarray([geoms] if single else geoms, dtype=object)
    if polygons.size == 0:
        return polygons
    rings, owner = shapely.get_rings(polygons, return_index=True)  # each polygon's shell, then its holes
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    keep = np.r_[ring[1:] == ring[:-1], False]  # not the repeated first point that closes each ring
    xy, ring = xy[keep], ring[keep]
    _, after = _neighbours(ring)
    keep = np.any(xy != xy[after], axis=1)
    xy, ring = xy[keep], ring[keep]
    before, after = _neighbours(ring)
    keep = ~np.any((xy[before] == xy) & (xy == xy[after]), axis=1)
    xy, ring = xy[keep], ring[keep]
    # close each ring again: its first point follows its last, shifting later rings by one
    first = np.nonzero(np.r_[True, ring[1:] != ring[:-1]])[0]
    rank = np.cumsum(np.r_[True, ring[1:] != ring[:-1]]) - 1
    closed = np.empty((len(ring) + len(first), 2))
    closed[np.arange(len(ring)) + rank] = xy
    closed[np.r_[first[1:], len(ring)] + np.arange(len(first))] = xy[first]
    closed_ring = np.repeat(ring[first], np.diff(np.r_[first, len(ring)]) + 1)
    out = shapely.polygons(shapely.linearrings(closed, indices=closed_ring), indices=owner)
    return out[0] if single else out


def densify_for_area(geom: BaseGeometry, max_cells: float = 64.0) -> BaseGeometry:
    """``geom`` with every edge longer than ``max_cells`` cells split evenly (in cell coordinates, which the
    output transform maps linearly to the scene's CRS), so that after reprojection to lon/lat the geodesic
    edges between vertices follow the scene's straight edges, and the geodesic area is the cells' area."""
    return shapely.segmentize(geom, max_cells)


class RegionStream:
    """``VectorOutput`` of a segmenter: strips top to bottom in, one ``CellFeature`` per region out.

    ``rows``: strips are polygonised once at least this many rows are buffered (only each cell's target
    class and score are kept: 6 bytes a cell). Fewer, taller strips mean fewer regions cut by a strip
    boundary, hence fewer pieces to polygonise and dissolve; the cost is that a region is emitted up to
    ``rows - 1`` rows after it stopped growing. ``rows=1`` polygonises every strip as it comes.
    """

    def __init__(self, card: ModelCard, footprint: Footprint | None = None, rows: int = BATCH_ROWS) -> None:
        self.footprint = footprint
        self.rows = max(int(rows), 1)
        self._names = list(card.target_classes)
        self._lut = np.full(len(card.classes), -1, np.int16)  # class index -> target index, -1 none
        for k, name in enumerate(self._names):
            self._lut[card.class_index(name)] = k
        self._next_row: int | None = None
        self._width: int | None = None
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []  # (codes, score) of rows not polygonised
        self._buffer_y0 = 0
        self._next_id = 1  # region ids: never reused, 0 = no region
        self._open: dict[int, _Region] = {}
        self._last_ids: np.ndarray | None = None  # open region id of each cell of the last row polygonised
        self._last_codes: np.ndarray | None = None  # target index of each cell of that row

    # -- the VectorOutput protocol ------------------------------------------------------------------------

    def feed(self, y0: int, scores: np.ndarray, valid: np.ndarray) -> Iterator[CellFeature]:
        """Regions completed by output rows ``y0 .. y0+h`` (``scores`` [h, w, classes], ``valid`` [h, w])."""
        self._check(y0, scores, valid)
        self._next_row, self._width = y0 + valid.shape[0], valid.shape[1]
        if valid.size == 0 or not self._names:
            return
        scores = np.asarray(scores)
        cls = scores.argmax(axis=-1)
        codes = self._lut[cls]
        codes[~np.asarray(valid, bool)] = -1
        score = np.take_along_axis(scores, cls[..., None], axis=-1)[..., 0].astype(np.float32)
        if not self._buffer:
            self._buffer_y0 = y0
        self._buffer.append((codes, score))
        if sum(c.shape[0] for c, _ in self._buffer) >= self.rows:
            yield from self._flush()

    def close(self) -> Iterator[CellFeature]:
        """Every region still open after the last strip."""
        yield from self._flush()
        yield from self._emit(sorted(self._open))
        self._open, self._last_ids, self._last_codes = {}, None, None

    def _flush(self) -> Iterator[CellFeature]:
        if not self._buffer:
            return
        if len(self._buffer) == 1:
            codes, score = self._buffer[0]
        else:
            codes = np.concatenate([c for c, _ in self._buffer])
            score = np.concatenate([s for _, s in self._buffer])
        self._buffer = []
        yield from self._strip(self._buffer_y0, codes, score)

    # -- one strip ----------------------------------------------------------------------------------------

    def _check(self, y0: int, scores: np.ndarray, valid: np.ndarray) -> None:
        if self._next_row is not None and y0 != self._next_row:
            raise ValueError(f"strip at row {y0} fed out of order (expected row {self._next_row})")
        if scores.ndim != 3 or scores.shape[:2] != valid.shape or scores.shape[2] != len(self._lut):
            raise ValueError(f"scores {scores.shape} and valid {valid.shape} do not match the card's classes")
        if self._width is not None and valid.shape[1] != self._width:
            raise ValueError(f"strip at row {y0} is {valid.shape[1]} cells wide, not {self._width}")

    def _label(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the strip's 4-connected pieces (0 = none, unique over target classes) and the target
        index of each label (entry 0 unused)."""
        labels = np.zeros(codes.shape, np.int32)
        targets = [np.zeros(1, np.int16)]
        count = 0
        for k in np.unique(codes[codes >= 0]):
            mask = codes == k
            lab, n = ndimage.label(mask)
            labels[mask] = lab[mask] + count
            targets.append(np.full(n, k, np.int16))
            count += n
        return labels, np.concatenate(targets)

    def _strip(self, y0: int, codes: np.ndarray, score: np.ndarray) -> Iterator[CellFeature]:
        labels, targets = self._label(codes)
        n = len(targets) - 1
        flat = labels.ravel()
        cells = np.bincount(flat, minlength=n + 1)
        totals = np.bincount(flat, weights=score.ravel().astype(np.float64), minlength=n + 1)
        joins = self._joins(labels[0], codes[0])
        bottom = np.unique(labels[-1][labels[-1] > 0])
        pieces = _polygons(labels, y0, n)
        carried = np.zeros(n + 1, bool)
        carried[joins[:, 1]] = True
        carried[bottom] = True
        whole = np.nonzero(~carried[1:])[0] + 1  # pieces that are whole regions: final now
        geoms = shapely.normalize(pieces[whole])
        yield from self._features(geoms, targets[whole], cells[whole], totals[whole])
        base = self._next_id - 1  # label l of this strip becomes region id base + l
        for lab in np.nonzero(carried)[0]:
            self._open[base + lab] = _Region(int(targets[lab]), int(cells[lab]), float(totals[lab]),
                                             [pieces[lab]], 0, _vertices(pieces[lab]))
        self._next_id += n
        roots = self._union(joins[:, 0], joins[:, 1] + base)
        ids = np.zeros(n + 1, np.int64)
        ids[bottom] = [roots(int(base + lab)) for lab in bottom]
        still_open = set(ids[bottom].tolist())
        yield from self._emit(sorted(set(self._open) - still_open))
        for i in still_open:
            self._open[i].compact()
        self._last_ids, self._last_codes = ids[labels[-1]], codes[-1].copy()

    def _joins(self, top: np.ndarray, top_codes: np.ndarray) -> np.ndarray:
        """[k, 2] pairs (open region id above, label below) of the cells sharing an edge across the strip
        boundary with the same target class."""
        if self._last_ids is None or self._last_codes is None:
            return np.zeros((0, 2), np.int64)
        touch = (self._last_ids > 0) & (top > 0) & (self._last_codes == top_codes)
        above, below = self._last_ids[touch], top[touch].astype(np.int64)
        span = int(top.max()) + 1
        key = np.unique(above * span + below)
        return np.stack([key // span, key % span], axis=1)

    def _union(self, above: np.ndarray, below: np.ndarray) -> Callable[[int], int]:
        """Merge the regions joined across the boundary; returns ``find`` (region id -> surviving id)."""
        parent: dict[int, int] = {}

        def find(i: int) -> int:
            root = i
            while root in parent:
                root = parent[root]
            while i != root:  # path compression
                parent[i], i = root, parent[i]
            return root

        for a, b in zip(above.tolist(), below.tolist(), strict=True):
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            keep, drop = (ra, rb) if len(self._open[ra].pieces) >= len(self._open[rb].pieces) else (rb, ra)
            self._open[keep].absorb(self._open.pop(drop))
            parent[drop] = keep
        return find

    def _emit(self, ids: list[int]) -> Iterator[CellFeature]:
        regions = [self._open.pop(i) for i in ids]
        geoms = np.empty(len(regions), dtype=object)
        geoms[:] = [r.geometry() for r in regions]
        geoms = shapely.normalize(simplify_to_grid(geoms))
        for geom, r in zip(geoms, regions, strict=True):
            yield self._feature(geom, r.target, r.cells, r.total)

    def _features(self, geoms: np.ndarray, targets: np.ndarray, cells: np.ndarray, totals: np.ndarray
                  ) -> Iterator[CellFeature]:
        for geom, k, n, total in zip(geoms, targets.tolist(), cells.tolist(), totals.tolist(), strict=True):
            yield self._feature(geom, k, n, total)

    def _feature(self, geom: Polygon, target: int, cells: int, total: float) -> CellFeature:
        return CellFeature(geom, self._names[target], total / cells, {"cells": int(cells)})


# shapes() writes the strip to a GDAL MEM dataset; with the identity transform that dataset "has no
# geotransform" and rasterio warns (NotGeoreferencedWarning) from whichever thread vectorises. A half-cell
# shift, taken off again, is exact in float64 and keeps the dataset georeferenced.
_HALF_DOWN = Affine.translation(0.0, 0.5)


def _polygons(labels: np.ndarray, y0: int, n: int) -> np.ndarray:
    """The polygon of each label of a strip starting at output row ``y0`` (entry 0 unused)."""
    out = np.empty(n + 1, dtype=object)
    if n == 0:
        return out
    values, ring_counts, rings = [], [], []
    for geom, value in features.shapes(labels, mask=labels > 0, connectivity=4, transform=_HALF_DOWN):
        values.append(int(value))
        ring_counts.append(len(geom["coordinates"]))
        rings += geom["coordinates"]
    lengths = np.fromiter(map(len, rings), np.int64, len(rings))
    xy = np.array(list(chain.from_iterable(rings)), np.float64)
    xy[:, 1] += y0 - 0.5
    shapes = shapely.linearrings(xy, indices=np.repeat(np.arange(len(rings)), lengths))
    out[values] = shapely.polygons(shapes, indices=np.repeat(np.arange(len(values)), ring_counts))
    return out
