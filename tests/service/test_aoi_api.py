"""API field ``aoi`` (``workers.aoi``): JSON and multipart submissions limited to an area of interest; an AOI
that misses the scene or is not an area is a 400 naming the field, and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio

from models.package import ModelPackage
from tests.service.conftest import nothing_left, upload
from tests.workers.test_aoi import _polygon_lonlat

if TYPE_CHECKING:
    from tests.service.conftest import Stack

FAR = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}


def test_a_job_with_an_aoi_skips_chips_outside_and_leaves_them_nodata(
    stack: Stack, landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    shutil.copy(landsat_tif, stack.inputs / "aoi-landsat.tif")
    corner = _polygon_lonlat(landsat_tif, (0.5, 0.9), (0.5, 0.9))
    area = {"type": "Feature", "properties": {}, "geometry": corner}
    with stack.client() as http:
        r = http.post("/v1/jobs", json={"uri": str(stack.inputs / "aoi-landsat.tif"),
                                         "model": landsat_model.name, "aoi": area})
        assert r.status_code == 202, r.text
        status = stack.wait_done(http, r.json()["id"])
        classes = http.get(f"/v1/jobs/{r.json()['id']}/results/classes.tif")
    assert status["status"] == "done"
    p = status["progress"]
    assert p["chips_skipped"] > 2 * p["chips_total"], p  # only the queued (inside) chips count in the total
    with rasterio.MemoryFile(classes.content) as mem, mem.open() as src:
        data = src.read(1)
    h, w = data.shape
    assert (data[: h * 4 // 10, :] == 255).all() and (data[:, : w * 4 // 10] == 255).all()
    assert (data[h * 6 // 10 : h * 85 // 100, w * 6 // 10 : w * 85 // 100] != 255).mean() > 0.95


def test_an_aoi_off_the_scene_or_not_an_area_is_a_400_naming_the_field(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    check = nothing_left(stack)
    with stack.client() as http:
        off = upload(http, osbs_tif, rgb_model.name, aoi=json.dumps(FAR))
        point = upload(http, osbs_tif, rgb_model.name, aoi='{"type": "Point", "coordinates": [0, 0]}')
        garbage = upload(http, osbs_tif, rgb_model.name, aoi="POLYGON((0 0, 1 0, 1 1, 0 0))")
        shutil.copy(osbs_tif, stack.inputs / "aoi-osbs.tif")
        job = {"uri": str(stack.inputs / "aoi-osbs.tif"), "model": rgb_model.name, "aoi": FAR}
        by_uri = http.post("/v1/jobs", json=job)
    for r, words in ((off, "does not overlap OSBS_029.tif"), (point, "is no area"), (garbage, "not GeoJSON"),
                     (by_uri, "does not overlap")):
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("field `aoi`") and words in message and "--aoi" not in message, message
    check()


def test_a_batch_takes_one_aoi_for_every_scene(
    stack: Stack, landsat_tif: Path, landsat_model: ModelPackage, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    """Batches take ``aoi`` as single jobs do (JSON and multipart): each job skips the chips outside it; an
    AOI that is no area refuses the batch with the field named."""
    for name in ("b1.tif", "b2.tif"):
        shutil.copy(landsat_tif, stack.inputs / name)
    corner = _polygon_lonlat(landsat_tif, (0.5, 0.9), (0.5, 0.9))
    uris = [str(stack.inputs / n) for n in ("b1.tif", "b2.tif")]
    with stack.client() as http:
        r = http.post("/v1/batches", json={"uris": uris, "model": landsat_model.name, "aoi": corner})
        assert r.status_code == 202, r.text
        statuses = [stack.wait_done(http, j["id"]) for j in r.json()["jobs"]]
        with open(osbs_tif, "rb") as fh:  # uploads: a scene under the test server's upload cap
            osbs_corner = _polygon_lonlat(osbs_tif, (0.5, 0.9), (0.5, 0.9))
            form = {"model": rgb_model.name, "aoi": json.dumps(osbs_corner)}
            multipart = http.post("/v1/batches", data=form, files=[("scene", ("m1.tif", fh.read()))])
        assert multipart.status_code == 202, multipart.text
        statuses.append(stack.wait_done(http, multipart.json()["jobs"][0]["id"]))
        bad = http.post("/v1/batches", json={"uris": uris, "model": landsat_model.name,
                                             "aoi": {"type": "Point", "coordinates": [0, 0]}})
    for status in statuses:
        assert status["status"] == "done", status
        assert status["progress"]["chips_skipped"] > status["progress"]["chips_total"], status["progress"]
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("field `aoi`"), bad.text
