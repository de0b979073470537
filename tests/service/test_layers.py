"""Map layers besides the classes (``service.layers``): the scene itself under the results, and score ramps.

Over HTTP against real stacks (uvicorn, Redis, workers), on the real Landsat scene and the real OSBS image.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds
from rio_tiler.colormap import cmap

from models.card import Band
from models.package import ModelPackage
from service import layers
from tests.service.conftest import upload

if TYPE_CHECKING:
    from tests.service.conftest import Stack

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # PNG tiles
TMS = morecantile.tms.get("WebMercatorQuad")


def _rgba(png: bytes) -> np.ndarray:
    with rasterio.MemoryFile(png) as mem, mem.open() as src:
        assert src.driver == "PNG" and src.count == 4
        return src.read()


def _centre_tile(path: Path, z: int) -> str:
    with rasterio.open(path) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    t = TMS.tile((w + e) / 2, (s + n) / 2, z)
    return f"{t.z}/{t.x}/{t.y}"


def test_scene_tiles_show_the_imagery_as_soon_as_the_job_exists(
    new_stack: Callable[..., Stack], landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    s = new_stack(SPIKESCAN_MAX_UPLOAD_MB="64")  # no workers: the job stays queued
    shutil.copy(landsat_tif, s.inputs / "landsat.tif")
    with s.client() as http:
        job = http.post("/v1/jobs", json={"uri": str(s.inputs / "landsat.tif"), "model": landsat_model.name})
        base = f"/v1/jobs/{job.json()['id']}/tiles/{_centre_tile(landsat_tif, 12)}.png"
        scene = http.get(f"{base}?layer=scene")
        bogus = http.get(f"{base}?layer=satellite")
        scores = http.get(f"{base}?layer=scores")
        far = http.get(f"/v1/jobs/{job.json()['id']}/tiles/12/0/0.png?layer=scene")
        config = http.get("/web/config.json").json()
    assert config["basemap_url"] is None  # no basemap unless the operator sets one: nothing fetched offline
    assert scene.status_code == 200 and scene.headers["content-type"] == "image/png"
    rgba = _rgba(scene.content)
    opaque = rgba[3] > 0
    assert opaque.mean() > 0.5  # the tile is inside the scene, which has a nodata corner or two
    colours = np.unique(rgba[:3, opaque].T, axis=0)
    assert len(colours) > 1000, "imagery has thousands of colours; a flat fill or a palette has few"
    # Stretched, not raw: Landsat DNs of 40-130 would never come near white without the percentile stretch.
    lo, hi = np.percentile(rgba[:3, opaque], (1, 99))
    assert lo < 30 and hi > 200, (lo, hi)
    assert bogus.status_code == 400 and bogus.json()["error"]["code"] == "invalid_input"
    assert "classes, scene, scores" in bogus.json()["error"]["message"]
    assert scores.status_code == 404 and "no results yet" in scores.json()["error"]["message"]
    assert far.status_code == 404 and far.json()["error"]["code"] == "not_found"


def test_scene_colours_come_from_the_cards_red_green_blue_else_the_first_three(
    landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    card = landsat_model.card
    with rasterio.open(landsat_tif) as src:
        assert [b.name for b in card.bands[:3]] == ["blue", "green", "red"]
        assert layers.rgb_bands(src, card, None) == [3, 2, 1]
        assert layers.rgb_bands(src, card, "5,4,3,2,1") == [3, 4, 5]  # the job's own band mapping
        plain = card.model_copy(update={"bands": [Band(name=f"b{i}") for i in range(1, 6)]})
        assert layers.rgb_bands(src, plain, "2,3,4,5,1") == [2, 3, 4]


def test_the_stretch_comes_from_a_bounded_sample_and_is_computed_once(tmp_path: Path) -> None:
    path = tmp_path / "ramp.tif"
    width, height = 3000, 2000  # larger than the sample: 8x8 windows of 128 px read, not 6 Mpx
    ramp = np.tile(np.linspace(0, 1000, width, dtype=np.float32), (height, 1))
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
               "crs": "EPSG:32617", "transform": Affine(1, 0, 4e5, 0, -1, 3e6), "tiled": True, "nodata": -1}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(ramp, 1)
    (lo, hi), = layers.stretch(path, [1])
    assert 0 <= lo < 60 and 940 < hi <= 1000  # the 2nd and 98th percentiles of a uniform ramp: 20 and 980
    assert layers.stretch(path, [1]) is layers.stretch(path, [1])  # cached per scene file


def test_score_tiles_ramp_the_target_classes_and_name_a_bad_class(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    with stack.client() as http:
        job = upload(http, osbs_tif, rgb_model.name).json()["id"]
        assert stack.wait_done(http, job)["status"] == "done"
        base = f"/v1/jobs/{job}/tiles/{_centre_tile(osbs_tif, 19)}.png"
        summed = http.get(f"{base}?layer=scores")
        one = http.get(f"{base}?layer=scores&class={rgb_model.card.classes[0]}")
        bad = http.get(f"{base}?layer=scores&class=dragons")
        classes = http.get(base)
    assert summed.status_code == one.status_code == classes.status_code == 200, summed.text
    ramp = {tuple(int(v) for v in c) for c in cmap.get("viridis").values()}
    for png in (summed.content, one.content):
        rgba = _rgba(png)
        opaque = rgba[3] > 0
        assert opaque.mean() > 0.2
        assert {tuple(c) for c in rgba[:, opaque].T} <= ramp  # every drawn cell is a ramp colour
    # Where the class layer has no data, neither has the score layer.
    assert ((_rgba(classes.content)[3] > 0) == (_rgba(summed.content)[3] > 0)).mean() > 0.99
    assert bad.status_code == 400 and "dragons" in bad.json()["error"]["message"]
