"""``models.tasks.regions.RegionStream``: class regions as polygons, strip by strip, without seams.

Every test compares the streamed polygons with what the whole map gives in one strip, and checks them
against the cells themselves: planar areas equal cell counts exactly (output-cell coordinates), holes are
kept, corner-only contact never joins regions, and no polygon carries a vertex that is not a corner.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod, Transformer
from scipy import ndimage
from shapely.geometry import Polygon, shape

from models import package
from models.tasks import regions
from models.tasks.base import CellFeature, Footprint
from models.tasks.regions import RegionStream, densify_for_area
from workers import pipeline

HEIGHTS = ([1], [2, 3], [1, 5, 2, 16], [7], [16, 1, 1], [4])


def card(n_classes: int, targets: list[int] | None = None) -> Any:
    classes = [f"c{i}" for i in range(n_classes)]
    names = classes if targets is None else [classes[i] for i in targets]
    return SimpleNamespace(classes=classes, target_classes=names, class_index=classes.index)


def one_hot(classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose argmax is ``classes`` (-1 = not valid) and the valid mask."""
    valid = classes >= 0
    scores = np.zeros((*classes.shape, n_classes), np.float32)
    scores[valid, classes[valid]] = 1.0
    return scores, valid


def stream(scores: np.ndarray, valid: np.ndarray, heights: list[int], the_card: Any,
           rows: int = 1) -> list[CellFeature]:
    """Feed the map in strips of the given heights (cycled) and collect every feature."""
    out = RegionStream(the_card, Footprint(valid.shape[1], valid.shape[0], 1.0), rows=rows)
    features, y, i = [], 0, 0
    while y < valid.shape[0]:
        h = heights[i % len(heights)]
        features += out.feed(y, scores[y : y + h], valid[y : y + h])
        y, i = y + h, i + 1
    return features + list(out.close())


def canonical(features: list[CellFeature]) -> list[tuple[str, bytes, object, float]]:
    return sorted((f.class_name, shapely.to_wkb(shapely.normalize(f.geometry)), f.properties["cells"],
                   round(f.score, 9)) for f in features)


def random_map(rng: np.random.Generator, n_classes: int, shape: tuple[int, int], smooth: float) -> np.ndarray:
    if smooth:
        field = ndimage.gaussian_filter(rng.random((*shape, n_classes)), (smooth, smooth, 0))
        classes = field.argmax(axis=-1)
    else:
        classes = rng.integers(0, n_classes, size=shape)
    classes[rng.random(shape) < 0.05] = -1
    return classes


def corners_only(polygon: Polygon) -> bool:
    """Every vertex of every ring is a corner of the grid polygon (no collinear, no repeated vertices)."""
    for ring in (polygon.exterior, *polygon.interiors):
        pts = np.asarray(ring.coords)[:-1]
        before, after = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        if np.any(np.all(pts == after, axis=1)):
            return False
        straight = ((before[:, 0] == pts[:, 0]) & (pts[:, 0] == after[:, 0])) | (
            (before[:, 1] == pts[:, 1]) & (pts[:, 1] == after[:, 1]))
        if straight.any() or np.any(pts != np.round(pts)):
            return False
    return True


def check_against_cells(features: list[CellFeature], classes: np.ndarray, the_card: Any) -> None:
    """Each feature is one valid polygon of whole cells, 4-connected; per class, areas sum to the count."""
    for f in features:
        g = f.geometry
        assert g.geom_type == "Polygon" and g.is_valid, g.wkt
        assert corners_only(g), g.wkt
        assert g.area == f.properties["cells"]
    for name in the_card.target_classes:
        k = the_card.class_index(name)
        mine = [f for f in features if f.class_name == name]
        assert sum(f.geometry.area for f in mine) == (classes == k).sum()
        assert len(mine) == ndimage.label(classes == k)[1]  # one feature per 4-connected region


# -- (a) streaming equals one strip; (c) areas equal cell counts ---------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_strips_give_the_polygons_of_the_whole_map(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    shape_ = (int(rng.integers(1, 70)), int(rng.integers(1, 70)))
    classes = random_map(rng, n, shape_, smooth=0.0 if seed % 3 == 0 else float(rng.uniform(1, 4)))
    scores, valid = one_hot(classes, n)
    the_card = card(n)
    whole = stream(scores, valid, [shape_[0]], the_card)
    check_against_cells(whole, classes, the_card)
    for heights in HEIGHTS:
        for rows in (1, 5, regions.BATCH_ROWS):
            got = stream(scores, valid, heights, the_card, rows)
            assert canonical(got) == canonical(whole), (heights, rows)


@pytest.mark.parametrize("seed", range(40))
def test_dissolving_open_regions_between_strips_changes_nothing(seed: int, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Open regions dissolved after every strip (their holes set aside as final): the same polygons. Dense
    maps of one main class make rings, pinches and holes that close in the strip that joins them."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(2, 4))
    shape_ = (int(rng.integers(2, 40)), int(rng.integers(2, 40)))
    main = rng.uniform(0.3, 0.8)
    classes = rng.choice(n, size=shape_, p=[main] + [(1 - main) / (n - 1)] * (n - 1))
    classes[rng.random(shape_) < 0.03] = -1
    scores, valid = one_hot(classes, n)
    whole = stream(scores, valid, [shape_[0]], card(n))
    monkeypatch.setattr(regions, "_MIN_DISSOLVE", 0)
    monkeypatch.setattr(regions, "_DISSOLVE_GROWTH", 0)
    for heights in ([1], [2, 3], [5]):
        assert canonical(stream(scores, valid, heights, card(n))) == canonical(whole), heights


@pytest.fixture(scope="module")
def land_cover(landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The shipped land-cover model run on the real Landsat scene."""
    out = tmp_path_factory.mktemp("regions_landcover")
    return out, pipeline.run(landsat_tif, "landcover-landsat", out)


def test_real_land_cover_streams_without_seams(land_cover: tuple[Path, dict[str, Any]]) -> None:
    out, _ = land_cover
    with rasterio.open(out / "classes.tif") as ds:
        raster = ds.read(1).astype(np.int64)
    lc = package.load("landcover-landsat").card
    every_class = lc.model_copy(update={"target_classes": list(lc.classes)})
    classes = np.where(raster == 255, -1, raster)
    scores, valid = one_hot(classes, len(lc.classes))
    whole = stream(scores, valid, [classes.shape[0]], every_class)
    check_against_cells(whole, classes, every_class)
    assert len(whole) > 100 and any(len(f.geometry.interiors) for f in whole)
    for heights in ([1], [3, 8, 16], [16]):
        for rows in (1, regions.BATCH_ROWS):
            assert canonical(stream(scores, valid, heights, every_class, rows)) == canonical(whole)


def test_real_land_cover_areas_are_the_rasters(land_cover: tuple[Path, dict[str, Any]]) -> None:
    """detections.geojson of the shipped segmenter: polygons, and per target class their geodesic areas add
    up to the geodesic areas of the class raster's cells."""
    out, rep = land_cover
    features = json.loads((out / "detections.geojson").read_text())["features"]
    lc = package.load("landcover-landsat").card
    with rasterio.open(out / "classes.tif") as ds:
        raster, transform, crs = ds.read(1), ds.transform, ds.crs
    geod = Geod(ellps="WGS84")
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for name in lc.target_classes:
        rows, cols = np.nonzero(raster == lc.class_index(name))
        xs = np.stack([cols, cols + 1, cols + 1, cols], axis=1).astype(float)
        ys = np.stack([rows, rows, rows + 1, rows + 1], axis=1).astype(float)
        lon, lat = to_lonlat.transform(*(transform * (xs, ys)))
        cells_m2 = sum(abs(geod.polygon_area_perimeter(a, b)[0]) for a, b in zip(lon, lat, strict=True))
        mine = [f for f in features if f["properties"]["class"] == name]
        assert all(f["geometry"]["type"] == "Polygon" for f in mine)
        assert sum(f["properties"]["cells"] for f in mine) == len(rows)
        assert sum(f["properties"]["area_m2"] for f in mine) == pytest.approx(cells_m2, rel=1e-6)
        for f in mine:
            assert abs(geod.geometry_area_perimeter(shape(f["geometry"]))[0]) == pytest.approx(
                f["properties"]["area_m2"], abs=1e-2)


# -- (b) holes -----------------------------------------------------------------------------------------------


def ring_map() -> np.ndarray:
    """A ring of class 1 (rows 2..8) around a hole (rows 4..6) holding an island of class 2."""
    classes = np.zeros((11, 12), np.int64)
    classes[2:9, 2:10] = 1
    classes[4:7, 4:8] = 0
    classes[5, 5] = 2
    return classes


@pytest.mark.parametrize("heights", [[5, 6], [4, 7], [1], [3], [2, 9]])
def test_a_hole_across_strips_is_kept(heights: list[int]) -> None:
    classes = ring_map()
    scores, valid = one_hot(classes, 3)
    features = stream(scores, valid, heights, card(3, [1, 2]))
    ring = [f for f in features if f.class_name == "c1"]
    assert len(ring) == 1
    (hole,) = ring[0].geometry.interiors
    assert Polygon(hole).equals(shapely.box(4, 4, 8, 7))
    assert ring[0].geometry.equals(shapely.box(2, 2, 10, 9).difference(shapely.box(4, 4, 8, 7)))
    assert len(ring[0].geometry.exterior.coords) == 5 and len(hole.coords) == 5
    island = [f for f in features if f.class_name == "c2"]
    assert len(island) == 1 and island[0].geometry.equals(shapely.box(5, 5, 6, 6))
    check_against_cells(features, classes, card(3, [1, 2]))


def test_a_ring_closing_below_its_arms() -> None:
    """A "U" whose arms are separate pieces for many strips and join only in its last row; then a "∩"."""
    u = np.zeros((9, 7), np.int64)
    u[1:8, 1] = u[1:8, 5] = 1
    u[7, 1:6] = 1
    for classes in (u, u[::-1].copy()):
        scores, valid = one_hot(classes, 2)
        features = stream(scores, valid, [1], card(2, [1]))
        assert len(features) == 1 and features[0].properties["cells"] == 17
        assert features[0].geometry.area == 17 and not features[0].geometry.interiors


# -- (d) corner contact --------------------------------------------------------------------------------------


@pytest.mark.parametrize("heights", [[1], [2], [8]])
def test_regions_touching_at_a_corner_stay_separate(heights: list[int]) -> None:
    classes = np.zeros((8, 8), np.int64)
    classes[np.arange(8), np.arange(8)] = 1  # a diagonal staircase: eight single cells
    classes[5:7, 2:4] = 1  # a 2x2 block meeting the staircase's cell (4, 4) at the point (4, 5)
    classes[1:3, 4:6] = 1  # and one meeting its cell (3, 3) at the point (4, 3)
    scores, valid = one_hot(classes, 2)
    features = stream(scores, valid, heights, card(2, [1]))
    check_against_cells(features, classes, card(2, [1]))
    assert len(features) == 10
    assert sorted(f.properties["cells"] for f in features) == [1] * 8 + [4, 4]


@pytest.mark.parametrize("heights", [[1], [2], [3], [7]])
def test_a_region_pinched_at_a_corner_is_one_valid_polygon(heights: list[int]) -> None:
    """A ring whose hole reaches the outside through a corner: the hole touches the shell at a point."""
    classes = np.zeros((7, 7), np.int64)
    classes[1:6, 1:6] = 1
    classes[2:4, 2:4] = 0
    classes[4, 4] = 0  # the hole (2..4, 2..4) and the cell (4, 4) meet at the point (4, 4)
    classes[5, 5] = 0
    scores, valid = one_hot(classes, 2)
    features = stream(scores, valid, heights, card(2, [1]))
    check_against_cells(features, classes, card(2, [1]))
    assert canonical(features) == canonical(stream(scores, valid, [7], card(2, [1])))


# -- (e) a region through every strip ------------------------------------------------------------------------


def test_a_region_through_every_strip_is_one_feature() -> None:
    """A comb whose teeth hang from a bar in the last row, and a serpentine through every row."""
    comb = np.zeros((40, 21), np.int64)
    comb[:, 0:21:2] = 1
    comb[-1] = 1
    snake = np.zeros((41, 10), np.int64)
    snake[0:41:2, 0:9] = 1
    snake[1:41:4, 8] = 1
    snake[3:41:4, 0] = 1
    for classes in (comb, snake):
        scores, valid = one_hot(classes, 2)
        for heights in ([1], [3, 1], [5]):
            features = stream(scores, valid, heights, card(2, [1]))
            assert len(features) == 1
            assert features[0].properties["cells"] == classes.sum() == features[0].geometry.area
            assert corners_only(features[0].geometry)


def test_a_whole_map_region_is_a_rectangle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pieces are dissolved along the way (every few strips here) and the seams leave no vertex."""
    monkeypatch.setattr(regions, "_MIN_DISSOLVE", 8)
    monkeypatch.setattr(regions, "_DISSOLVE_GROWTH", 1)
    classes = np.ones((300, 50), np.int64)
    classes[3:297:7, 3] = 0  # 42 one-cell holes
    scores, valid = one_hot(classes, 2)
    features = stream(scores, valid, [1], card(2, [1]))
    assert len(features) == 1
    g = features[0].geometry
    assert shapely.Polygon(g.exterior).equals(shapely.box(0, 0, 50, 300)) and len(g.exterior.coords) == 5
    assert len(g.interiors) == 42 and g.area == classes.sum()


# -- scores, classes, streaming order ------------------------------------------------------------------------


def test_class_is_argmax_and_score_is_the_regions_mean() -> None:
    scores = np.zeros((3, 4, 3), np.float32)
    scores[..., 0] = scores[..., 1] = 0.4  # a tie: class 0, as numpy's argmax and classes.tif have it
    scores[0, :2, 2] = [0.9, 0.5]  # a region of class 2: two cells, mean 0.7
    valid = np.ones((3, 4), bool)
    valid[2, 3] = False
    features = stream(scores, valid, [1], card(3, [0, 1, 2]))
    by_class = {f.class_name: f for f in features}
    assert set(by_class) == {"c0", "c2"}
    assert by_class["c2"].score == pytest.approx(0.7) and by_class["c2"].properties == {"cells": 2}
    assert by_class["c0"].properties["cells"] == 12 - 2 - 1 and by_class["c0"].score == pytest.approx(0.4)


def test_a_finished_region_is_emitted_with_its_last_strip() -> None:
    classes = np.zeros((6, 5), np.int64)
    classes[0:2, 1:3] = 1
    scores, valid = one_hot(classes, 2)
    out = RegionStream(card(2, [1]), rows=1)
    assert list(out.feed(0, scores[0:2], valid[0:2])) == []  # still touching the last row fed
    (done,) = out.feed(2, scores[2:3], valid[2:3])
    assert done.geometry.equals(shapely.box(1, 0, 3, 2))
    assert list(out.feed(3, scores[3:], valid[3:])) == [] and list(out.close()) == []


def test_strips_out_of_order_are_refused() -> None:
    scores, valid = one_hot(np.zeros((4, 4), np.int64), 2)
    out = RegionStream(card(2), rows=1)
    list(out.feed(0, scores[:2], valid[:2]))
    with pytest.raises(ValueError, match="out of order"):
        list(out.feed(3, scores[3:], valid[3:]))
    with pytest.raises(ValueError, match="cells wide"):
        list(out.feed(2, scores[2:, :3], valid[2:, :3]))


# -- areas on the ground -------------------------------------------------------------------------------------


def test_densified_long_edges_give_the_cells_geodesic_area() -> None:
    """An L of 3,000-cell edges in Web Mercator at 60 N: its vertices alone miss the cells' geodesic area by
    ~0.1 %; split every 64 cells, by < 1e-6 (the reference splits at every cell, i.e. the cells' own area)."""
    from affine import Affine

    transform = Affine(30.0, 0.0, 1e6, 0.0, -30.0, 8.4e6)
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    geod = Geod(ellps="WGS84")
    ell = Polygon([(0, 0), (3000, 0), (3000, 300), (300, 300), (300, 3000), (0, 3000)])

    def area(g: Polygon) -> float:
        def f(xy: np.ndarray) -> np.ndarray:
            lon, lat = to_lonlat.transform(*(transform * (xy[:, 0], xy[:, 1])))
            return np.column_stack([lon, lat])

        return abs(geod.geometry_area_perimeter(shapely.transform(g, f))[0])

    cells = area(densify_for_area(ell, 1.0))
    assert abs(area(ell) / cells - 1) > 5e-4
    assert area(densify_for_area(ell, 64.0)) == pytest.approx(cells, rel=1e-6)
    assert densify_for_area(ell, 64.0).area == pytest.approx(ell.area, rel=1e-12)
