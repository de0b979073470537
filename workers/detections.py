"""Target-class regions of ``classes.tif`` → ``detections.geojson`` (RFC 7946, EPSG:4326, lon/lat).

Merging is a *union of fragments*: a detection is a 4-connected region of one target class on the blended
mosaic. Overlapping chips have already been blended into one value per cell, so a crown seen by four chips
is one region, not four boxes. The rasters are read back strip by strip; each strip is labelled on its own
(``scipy.ndimage.label``) and labels touching across a strip boundary are joined with union-find, so a region
spanning many strips (and chips) is still one feature. A region is written out as soon as it stops touching
the strip being read. Cost is linear in cells plus near-linear in fragments — never quadratic in detections —
and memory holds one strip plus the regions crossing its lower edge, however many detections there are.

Each region becomes its bounding box, scaled about its centre by the card's ``detection.box_scale``; regions
under ``detection.min_cells`` cells are dropped; ``score`` is the mean target-class score over the region's
cells; ``area_m2`` is the geodesic area of the feature's polygon on the WGS84 ellipsoid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Geod, Transformer
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from models.card import ModelCard

STRIP_ROWS = 64
_GEOD = Geod(ellps="WGS84")


class _OpenRegions:
    """Union-find over the fragments that can still grow: regions touching the last row read so far.

    A region that no longer touches the current strip's last row is finished: it is handed out and forgotten,
    so memory holds only what crosses the current strip boundary (at most one row's worth of regions).
    Statistics per root: row0, row1, col0, col1 (inclusive), cells, score sum.
    """

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.stats: dict[int, list[float]] = {}

    def add(self, first: int, stats: np.ndarray) -> None:
        for k, row in enumerate(stats.tolist()):
            self.parent[first + k] = first + k
            self.stats[first + k] = row

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, drop = min(ra, rb), max(ra, rb)
        self.parent[drop] = keep
        s, t = self.stats[keep], self.stats.pop(drop)
        self.stats[keep] = [
            min(s[0], t[0]),
            max(s[1], t[1]),
            min(s[2], t[2]),
            max(s[3], t[3]),
            s[4] + t[4],
            s[5] + t[5],
        ]

    def close_all_but(self, open_ids: list[int]) -> list[list[float]]:
        """Hand out every region none of ``open_ids`` belongs to, and keep only those ids."""
        mapping = {i: self.find(i) for i in open_ids}
        roots = set(mapping.values())
        done = [s for r, s in self.stats.items() if r not in roots]
        self.stats = {r: self.stats[r] for r in roots}
        self.parent = {**mapping, **{r: r for r in roots}}
        return done


@dataclass(frozen=True)
class Region:
    class_index: int
    row0: int
    row1: int  # exclusive
    col0: int
    col1: int  # exclusive
    cells: int
    score: float


def find_regions(classes_tif: Path, scores_tif: Path, class_index: int) -> Iterator[Region]:
    """Connected regions of ``class_index``, merged across strips, each yielded once it is complete."""
    regions = _OpenRegions()
    with rasterio.open(classes_tif) as cls_ds, rasterio.open(scores_tif) as sc_ds:
        prev_last: np.ndarray | None = None
        prev_first = first = 0
        for y0 in range(0, cls_ds.height, STRIP_ROWS):
            window = Window(0, y0, cls_ds.width, min(STRIP_ROWS, cls_ds.height - y0))
            mask = cls_ds.read(1, window=window) == class_index
            score = sc_ds.read(class_index + 1, window=window).astype(np.float64) / 255.0
            labels, n = ndimage.label(mask)
            regions.add(first, _strip_stats(labels, n, score, y0))
            if prev_last is not None:
                _join(regions, prev_last, prev_first, labels[0], first)
            last = labels[-1]
            open_ids = [first + int(v) - 1 for v in np.unique(last[last > 0])]
            yield from _regions(regions.close_all_but(open_ids), class_index)
            prev_last, prev_first, first = last, first, first + n
    yield from _regions(regions.close_all_but([]), class_index)


def _regions(stats: list[list[float]], class_index: int) -> Iterator[Region]:
    for row0, row1, col0, col1, cells, total in stats:
        yield Region(
            class_index, int(row0), int(row1) + 1, int(col0), int(col1) + 1, int(cells), total / cells
        )


def _strip_stats(labels: np.ndarray, n: int, score: np.ndarray, y0: int) -> np.ndarray:
    stats = np.zeros((n, 6))
    if n == 0:
        return stats
    idx = np.arange(1, n + 1)
    for k, sl in enumerate(ndimage.find_objects(labels)):
        stats[k, :4] = (sl[0].start + y0, sl[0].stop - 1 + y0, sl[1].start, sl[1].stop - 1)
    stats[:, 4] = ndimage.sum_labels(np.ones_like(score), labels, idx)
    stats[:, 5] = ndimage.sum_labels(score, labels, idx)
    return stats


def _join(
    regions: _OpenRegions, above: np.ndarray, above_first: int, below: np.ndarray, below_first: int
) -> None:
    touching = (above > 0) & (below > 0)
    pairs = np.unique(np.stack([above[touching], below[touching]], axis=1), axis=0)
    for a, b in pairs:
        regions.union(above_first + int(a) - 1, below_first + int(b) - 1)


def write_geojson(path: Path, classes_tif: Path, scores_tif: Path, card: ModelCard, model_id: str) -> int:
    """Write every target-class detection as a Feature, one at a time; return how many were written."""
    with rasterio.open(classes_tif) as ds:
        transform, crs = ds.transform, ds.crs
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    count = 0
    with path.open("w") as out:
        out.write('{"type": "FeatureCollection", "features": [\n')
        for name in card.target_classes:
            for region in find_regions(classes_tif, scores_tif, card.class_index(name)):
                if region.cells < card.detection.min_cells:
                    continue
                feature = _feature(region, name, card.detection.box_scale, transform, to_lonlat, model_id)
                out.write((",\n" if count else "") + json.dumps(feature))
                count += 1
        out.write("\n]}\n")
    return count


def _feature(
    region: Region, name: str, box_scale: float, transform: object, to_lonlat: Transformer, model_id: str
) -> dict[str, object]:
    cy, cx = (region.row0 + region.row1) / 2, (region.col0 + region.col1) / 2
    hy, hx = (region.row1 - region.row0) * box_scale / 2, (region.col1 - region.col0) * box_scale / 2
    corners = [(cx - hx, cy - hy), (cx + hx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy)]
    xs, ys = zip(*(transform * c for c in corners), strict=True)  # type: ignore[operator]
    lon, lat = to_lonlat.transform(xs, ys)
    polygon = orient(
        Polygon(zip(lon, lat, strict=True)), sign=1.0
    )  # RFC 7946: exterior ring counter-clockwise
    area, _ = _GEOD.geometry_area_perimeter(polygon)
    return {
        "type": "Feature",
        "bbox": [round(v, 9) for v in polygon.bounds],
        "geometry": mapping(polygon),
        "properties": {
            "class": name,
            "score": round(region.score, 4),
            "model": model_id,
            "area_m2": round(abs(area), 3),
            "cells": region.cells,
            "cell_bbox": [region.col0, region.row0, region.col1, region.row1],
        },
    }
