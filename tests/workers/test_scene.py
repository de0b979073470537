"""Opening real scenes: band mapping, GSD checks and on-the-fly resampling, refusals, boundless reads."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from spikescan.errors import BandMismatch, InvalidScene, ResolutionMismatch
from workers.chips import ChipGrid
from workers.scene import open_scene


def _copy(src_path: Path, dst: Path, drop: tuple[str, ...] = (), **changes: object) -> Path:
    """A real copy of a real scene with some profile fields changed or dropped (pixels unchanged)."""
    with rasterio.open(src_path) as src, warnings.catch_warnings():
        # Writing a file without georeferencing is the point of some copies.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        profile = {k: v for k, v in {**src.profile, **changes}.items() if k not in drop}
        with rasterio.open(dst, "w", **profile) as out:
            out.write(src.read())
    return dst


def test_rgb_bands_found_by_colour_interpretation_and_resampled(osbs_tif: Path, rgb_model) -> None:  # type: ignore[no-untyped-def]
    with open_scene(osbs_tif, rgb_model.card) as scene, rasterio.open(osbs_tif) as src:
        assert scene.band_indexes == [1, 2, 3]
        assert scene.resampled is not None and scene.resampled.factor == (2.0, 2.0)
        assert (scene.width, scene.height) == (200, 200)
        # Anchored at the scene's corner: model pixel (i, j) is exactly scene pixels 2i..2i+1.
        assert scene.transform == src.transform * Affine.scale(2)
        assert scene.crs == src.crs
        pixels, valid = scene.read(Window(10, 20, 4, 4))
        block = src.read(window=Window(20, 40, 8, 8)).astype(np.float64)
        expected = block.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))
        assert np.abs(pixels.transpose(2, 0, 1) - expected).max() <= 0.5 + 1e-6
        assert valid.all()


def test_explicit_bands_reorder(osbs_tif: Path, rgb_model) -> None:  # type: ignore[no-untyped-def]
    with open_scene(osbs_tif, rgb_model.card, bands="3,2,1") as scene:
        assert scene.band_indexes == [3, 2, 1]
    for bad, msg in (("1,2", "names 2 band"), ("1,2,9", "out of range"), ("a,b,c", "comma-separated")):
        with pytest.raises(BandMismatch, match=msg):
            open_scene(osbs_tif, rgb_model.card, bands=bad)


def test_same_gsd_and_band_count_taken_in_order(landsat_tif: Path, landsat_model) -> None:  # type: ignore[no-untyped-def]
    with open_scene(landsat_tif, landsat_model.card) as scene:
        assert scene.band_indexes == [1, 2, 3, 4, 5] and scene.resampled is None
        assert (scene.width, scene.height) == (489, 443)


def test_wrong_band_count_is_refused_naming_the_file(
    osbs_tif: Path,
    landsat_tif: Path,
    rgb_model,  # type: ignore[no-untyped-def]
    landsat_model,
) -> None:
    with pytest.raises(BandMismatch, match=r"OSBS_029.tif: has 3 band\(s\), the model needs 5"):
        open_scene(osbs_tif, landsat_model.card)
    with pytest.raises(BandMismatch, match="landsat_multiband.tif: has 5 bands"):
        open_scene(landsat_tif, rgb_model.card)


def test_gsd_too_far_off_is_refused(osbs_tif: Path, make_model) -> None:  # type: ignore[no-untyped-def]
    coarse = make_model(
        "coarse", bands=("red", "green", "blue"), gsd_m=1.0, patch=16, output_stride=4, classes=("a", "b")
    )
    with pytest.raises(
        ResolutionMismatch, match="OSBS_029.tif: ground sample distance 0.1 m is more than 4x"
    ):
        open_scene(osbs_tif, coarse.card)


def test_no_georeferencing_is_refused(osbs_tif: Path, tmp_path: Path) -> None:
    bare = _copy(osbs_tif, tmp_path / "bare.tif", drop=("crs", "transform"))
    with pytest.raises(InvalidScene, match="bare.tif: not georeferenced"):
        open_scene(bare, _card_for(osbs_tif))


def test_rotated_transform_is_refused(osbs_tif: Path, tmp_path: Path) -> None:
    with rasterio.open(osbs_tif) as src:
        rotated = src.transform * Affine.rotation(10)
    path = _copy(osbs_tif, tmp_path / "rotated.tif", transform=rotated)
    with pytest.raises(InvalidScene, match="rotated.tif: rotated or sheared"):
        open_scene(path, _card_for(osbs_tif))


def test_unreadable_and_missing_files_are_refused(tmp_path: Path, osbs_tif: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(InvalidScene, match="junk.tif: not a raster GDAL can read"):
        open_scene(junk, _card_for(osbs_tif))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InvalidScene, match="empty.tif"):
        open_scene(empty, _card_for(osbs_tif))
    with pytest.raises(InvalidScene, match="nothere.tif: no such file"):
        open_scene(tmp_path / "nothere.tif", _card_for(osbs_tif))


def test_padding_and_nodata_are_invalid(landsat_tif: Path, landsat_model) -> None:  # type: ignore[no-untyped-def]
    with open_scene(landsat_tif, landsat_model.card) as scene, rasterio.open(landsat_tif) as src:
        grid = ChipGrid(scene.width, scene.height, 16, 8, 2)
        last = grid.cols - 1
        batch = scene.read_chip_row(grid, grid.rows - 1)
        outside_x = scene.width - batch.chips[last].x
        assert 0 < outside_x < 16
        assert not batch.valid[last][:, outside_x:].any()  # right padding
        assert (batch.pixels[last][:, outside_x:] == 0).all()
        mask = src.dataset_mask(window=Window(0, grid.chip(grid.rows - 1, 0).y, 16, 16)) > 0
        rows_inside = scene.height - grid.chip(grid.rows - 1, 0).y
        np.testing.assert_array_equal(batch.valid[0][:rows_inside], mask[:rows_inside])
        assert not batch.valid[0][rows_inside:].any()  # bottom padding


def _card_for(osbs_tif: Path):  # type: ignore[no-untyped-def]
    from models.card import Band, Encoding, FixedPoint, Layer, ModelCard, PopulationCode

    return ModelCard(
        name="plain",
        version="0",
        task="segmentation",
        classes=["a", "b"],
        colors=[[0] * 4, [1] * 4],
        bands=[Band(name=n) for n in ("red", "green", "blue")],
        gsd_m=0.1,
        patch_size=8,
        output_stride=8,
        encoding=Encoding(levels=1, thresholds=[[1.0]] * 3),
        layers=[Layer(name="c", kind="conv2d", filters=2, kernel=8, stride=8)],
        population_code=PopulationCode(neurons_per_class=1, owner=[0, 1], beta=1.0),
        fixed_point=FixedPoint(weight_step=0.125),
    )


def test_geographic_scene_gsd_is_measured_in_metres(osbs_tif: Path, rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """OSBS_029 really warped to EPSG:4326: its GSD in metres is found at the scene centre (about 0.1 m)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    path = tmp_path / "osbs_lonlat.tif"
    with rasterio.open(osbs_tif) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        profile = {
            **src.profile,
            "crs": "EPSG:4326",
            "transform": transform,
            "width": width,
            "height": height,
        }
        with rasterio.open(path, "w", **profile) as dst:
            for band in range(1, 4):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.nearest)
    # Independent measure: one pixel step at the centre, projected back into the scene's own UTM zone.
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32617", always_xy=True)
    lon, lat = transform * (width / 2, height / 2)
    x0, y0 = to_utm.transform(lon, lat)
    x1, _ = to_utm.transform(lon + transform.a, lat)
    _, y1 = to_utm.transform(lon, lat + transform.e)
    with open_scene(path, rgb_model.card) as scene:
        assert scene.resampled is not None and scene.crs.to_epsg() == 4326
        gx, gy = scene.resampled.source_gsd_m
        assert gx == pytest.approx(abs(x1 - x0), rel=0.01) and gy == pytest.approx(abs(y1 - y0), rel=0.01)
        assert scene.width == math.ceil(width * gx / 0.2 - 1e-9)


@pytest.mark.parametrize(
    ("dtype", "layout", "masking"),
    [("uint16", "tiled", "internal_mask"), ("int16", "striped", "nodata"), ("uint8", "tiled", "alpha")],
)
def test_dtypes_layouts_and_masks_read_the_same(
    landsat_tif: Path, make_model, tmp_path: Path, dtype: str, layout: str, masking: str
) -> None:  # type: ignore[no-untyped-def]
    """Real Landsat pixels rewritten with another dtype, block layout and kind of mask read identically."""
    model = make_model(
        "rgb-landsat",
        bands=("red", "green", "blue"),
        gsd_m=28.5,
        patch=16,
        output_stride=2,
        classes=("a", "b"),
    )
    path = tmp_path / f"landsat_{dtype}_{layout}_{masking}.tif"
    with rasterio.open(landsat_tif) as src:
        pixels, mask = src.read([3, 2, 1]), src.dataset_mask()
        profile = {**src.profile, "dtype": dtype, "nodata": None, "count": 3}
    profile |= (
        {"tiled": True, "blockxsize": 128, "blockysize": 128} if layout == "tiled" else {"tiled": False}
    )
    data = np.where(mask > 0, pixels, 0).astype(dtype)
    if masking == "nodata":
        profile["nodata"] = -1
        data = np.where(mask > 0, data, -1).astype(dtype)
    if masking == "alpha":  # RGB + an alpha band, as GDAL writes it
        profile |= {"count": 4, "photometric": "RGB", "alpha": "YES"}
        data = np.concatenate([data, mask[None].astype(dtype)])
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if masking == "internal_mask":
            dst.write_mask(mask)
    with rasterio.open(path) as check:
        assert check.mask_flag_enums[0] != [MaskFlags.all_valid]  # the file really carries its mask
    with open_scene(path, model.card) as scene:
        assert scene.band_indexes == [1, 2, 3]
        got, valid = scene.read(Window(-5, -5, scene.width + 10, scene.height + 10))
    np.testing.assert_array_equal(valid[5:-5, 5:-5], mask > 0)
    assert not valid[:5].any() and not valid[:, -5:].any()
    assert (got[~valid] == 0).all()  # nodata values and padding both read as 0
    expected = np.where(mask > 0, pixels, 0).astype(dtype).astype(np.float32)
    np.testing.assert_array_equal(
        np.where(valid[5:-5, 5:-5], got[5:-5, 5:-5].transpose(2, 0, 1), 0), expected
    )


@pytest.mark.parametrize(
    ("scene_name", "model_name"), [("osbs_tif", "rgb_model"), ("landsat_tif", "landsat_model")]
)
def test_a_batch_of_scattered_chips_reads_exactly_as_chip_by_chip(
    scene_name: str, model_name: str, request: pytest.FixtureRequest
) -> None:
    """What an inference worker reads (runs of a row's chips, rows mixed, edge chips padded) equals one read
    per chip; the resampled OSBS scene included."""
    path, pkg = request.getfixturevalue(scene_name), request.getfixturevalue(model_name)
    with open_scene(path, pkg.card) as scene:
        grid = ChipGrid.for_model(
            scene.width, scene.height, pkg.card.patch_size, pkg.card.output_stride, None
        )
        chips = [c for r in range(grid.rows) for c in grid.row(r)]
        rng = np.random.default_rng(3)
        picked = [chips[i] for i in rng.choice(len(chips), 40, replace=False)] + chips[-3:]
        batch = scene.read_chips(picked)
        for i, chip in enumerate(picked):
            pixels, valid = scene.read(chip.window)
            assert np.array_equal(batch.pixels[i], pixels) and np.array_equal(batch.valid[i], valid), chip
