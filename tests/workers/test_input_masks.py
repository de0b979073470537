"""A scene's own mask is nodata: a GDAL mask band (JPEG orthophotos with an internal mask) and an alpha band
(RGBA scenes) both make the masked area nodata in classes.tif — never "background" — whether the scene is
scanned at its own GSD or resampled on the fly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from tests.conftest import RGB
from workers import pipeline

HOLE = (slice(100, 300), slice(100, 300))  # inside the scene, touching no border: no fill rule can find it


def _masked_copy(src_path: Path, out: Path, kind: str) -> Path:
    with rasterio.open(src_path) as src:
        pixels, profile = src.read(), dict(src.profile)
    profile.pop("nodata", None)
    mask = np.full(pixels.shape[1:], 255, np.uint8)
    mask[HOLE] = 0
    if kind == "alpha":
        profile.update(count=4, photometric="RGB", alpha="YES")
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(np.concatenate([pixels, mask[None]]))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    else:  # a JPEG-compressed orthophoto with an internal mask band, as gdal_translate -mask writes them
        profile.update(compress="JPEG", photometric="YCBCR", tiled=True, blockxsize=128, blockysize=128)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(out, "w", **profile) as dst:
            dst.write(pixels)
            dst.write_mask(mask)
    return out


@pytest.mark.parametrize("kind", ["mask", "alpha"])
@pytest.mark.parametrize("gsd", [0.2, 0.1])  # resampled 2x on the fly; scanned at the scene's own GSD
def test_the_scenes_mask_is_nodata_in_the_classes(
    kind: str, gsd: float, osbs_tif: Path, make_model, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    scene = _masked_copy(osbs_tif, tmp_path / f"{kind}.tif", kind)
    with rasterio.open(scene) as ds:
        assert not (ds.dataset_mask()[HOLE]).any()  # GDAL itself sees the hole
    model = make_model(f"m{int(gsd * 10)}", bands=RGB, gsd_m=gsd, patch=48, output_stride=4,
                       classes=("background", "crown"))
    rep = pipeline.run(scene, model, tmp_path / "out")
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        classes = ds.read(1)
    cell = round(gsd / 0.1) * 4  # scene pixels per output cell
    inside = slice(math.ceil(100 / cell), 300 // cell)  # cells wholly inside the hole
    assert classes[inside, inside].size > 50 and (classes[inside, inside] == 255).all()
    outside = slice(0, 100 // cell)
    assert (classes[outside] != 255).all()  # the rest was scanned
    assert not [w for w in rep["warnings"] if w["code"] == "undeclared_fill"]
