"""Hosts that share only Redis and a bucket: the API, chipper, inference worker and mosaicker each run as a
process with a private data dir (as root: in a mount namespace of its own, ``unshare --mount``), with
``SPIKESCAN_STORAGE_URL=s3://…`` on moto's S3 server (its own process, over HTTP). An upload job finishes,
its results come back through the API (whole, in ranges, and to GDAL's /vsicurl/) equal to the in-process
run, and nothing is left behind: no chip results once the outputs exist, no running bookkeeping in Redis,
and after the retention time no record and no files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from models.package import ModelPackage
from tests.remote import S3Server
from tests.service.conftest import NAMESPACES, Stack, upload
from tests.service.test_faults import _freeze_while_holding
from workers import pipeline

BUCKET = "spikescan-results"
PREFIX = "deploy-a"


@pytest.fixture(scope="module")
def local_run(
    landsat_tif: Path, landsat_model: ModelPackage, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("landsat-in-process")
    pipeline.run(landsat_tif, landsat_model, out)
    return out


def _bucket_stack(
    new_stack: Callable[..., Stack], s3: S3Server, workers: bool = True, **env: str
) -> Stack:
    client = s3.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    env = {"SPIKESCAN_MAX_UPLOAD_MB": "64", **s3.env, **env}
    stack = new_stack(private_dirs=True, SPIKESCAN_STORAGE_URL=f"s3://{BUCKET}/{PREFIX}", **env)
    if workers:
        stack.pipeline_workers(infer=1)
    return stack


def _centre_tile(scene: Path, zoom: int) -> tuple[int, int, int]:
    with rasterio.open(scene) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, zoom)
    return tile.z, tile.x, tile.y


def _keys(s3: S3Server, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def test_an_upload_job_on_hosts_sharing_only_redis_and_a_bucket_gives_the_in_process_layers(
    new_stack: Callable[..., Stack],
    s3: S3Server,
    landsat_tif: Path,
    landsat_model: ModelPackage,
    local_run: Path,
    tmp_path: Path,
) -> None:
    stack = _bucket_stack(new_stack, s3)
    with stack.client() as http:
        r = upload(http, landsat_tif, landsat_model.name)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        status = stack.wait_done(http, job_id)
        assert status["status"] == "done", status
        got = tmp_path / "got"
        got.mkdir()
        for name in ("classes.tif", "scores.tif", "detections.geojson", "report.json", "item.json"):
            response = http.get(f"/v1/jobs/{job_id}/results/{name}")
            assert response.status_code == 200, (name, response.text)
            (got / name).write_bytes(response.content)
        whole = (got / "classes.tif").read_bytes()
        ranged = http.get(f"/v1/jobs/{job_id}/results/classes.tif", headers={"Range": "bytes=100-299"})
        assert ranged.status_code == 206 and ranged.content == whole[100:300]
        assert ranged.headers["content-range"] == f"bytes 100-299/{len(whole)}"
        tail = http.get(f"/v1/jobs/{job_id}/results/classes.tif", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == whole[-10:]
        beyond = http.get(f"/v1/jobs/{job_id}/results/classes.tif", headers={"Range": f"bytes={len(whole)}-"})
        assert beyond.status_code == 416
        head = http.head(f"/v1/jobs/{job_id}/results/classes.tif")
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(whole)
        z, x, y = _centre_tile(landsat_tif, 12)
        for layer in ("classes", "scores", "scene"):  # read from the bucket by the API
            tile = http.get(f"/v1/jobs/{job_id}/tiles/{z}/{x}/{y}.png", params={"layer": layer})
            assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG"), (layer, tile.text)

    for name in ("classes.tif", "scores.tif"):
        with rasterio.open(got / name) as have, rasterio.open(local_run / name) as want:
            assert have.transform == want.transform and have.crs == want.crs
            assert np.array_equal(have.read(), want.read()), name
    auth = f"Authorization: Bearer {stack.keys[0]}"
    with rasterio.Env(GDAL_HTTP_HEADERS=auth, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        with rasterio.open(f"/vsicurl/{stack.url}/v1/jobs/{job_id}/results/classes.tif") as remote:
            with rasterio.open(local_run / "classes.tif") as want:
                assert np.array_equal(remote.read(), want.read()) and remote.overviews(1)

    # The scene and the outputs are in the bucket; the chip results were deleted once the outputs existed.
    keys = _keys(s3, f"{PREFIX}/jobs/{job_id}/")
    assert f"{PREFIX}/jobs/{job_id}/scene.tif" in keys
    assert f"{PREFIX}/jobs/{job_id}/out/classes.tif" in keys
    assert not [k for k in keys if "/chips/" in k], keys
    # No role kept a file of the job on its own disk: the hosts share nothing but Redis and the bucket.
    for role in ("chipper", "infer-1", "mosaicker"):
        mine = stack.seen_by(role, stack.data_dir_of(role))
        assert mine.is_dir() and _files(mine) == [], role
    assert [p for p in _files(stack.seen_by("api", stack.data_dir_of("api"))) if job_id in str(p)] == []
    if NAMESPACES:  # and no process sees another's directory (here: the test's own view has none of them)
        assert not stack.data_dir_of("mosaicker").exists()
        assert not stack.seen_by("infer-1", stack.data_dir_of("mosaicker")).exists()
    # Running bookkeeping is gone from Redis; the record expires with the default retention (7 days).
    r = stack.rclient()
    assert not r.exists(f"spikescan:job:{job_id}:queued", f"spikescan:job:{job_id}:rows")
    assert 6 * 24 * 3600 < r.ttl(f"spikescan:job:{job_id}") <= 7 * 24 * 3600
    r.close()


def test_an_s3_job_loses_nothing_when_an_inference_worker_is_killed_on_the_bucket_harness(
    new_stack: Callable[..., Stack],
    s3: S3Server,
    landsat_model: ModelPackage,
    local_run: Path,
    tmp_path: Path,
) -> None:
    stack = _bucket_stack(
        new_stack, s3, workers=False, SPIKESCAN_BATCH_SIZE="4", SPIKESCAN_INPUT_ROOTS="s3://scenes/nc/"
    )
    stack.worker("chipper", "chip")
    stack.worker("mosaicker", "mosaic")
    victim = stack.worker("victim", "infer")
    r = stack.rclient()
    with stack.client() as http:
        uri = {"uri": "s3://scenes/nc/scene.tif", "model": landsat_model.name}
        accepted = http.post("/v1/jobs", json=uri)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert _freeze_while_holding(r, victim.pid, "infer") > 0
        victim.kill()  # SIGKILL, holding chips it had not stored or counted
        victim.wait()
        stack.worker("rescuer", "infer")
        status = stack.wait_done(http, job_id, timeout_s=180)
        assert status["status"] == "done", status
        progress = status["progress"]
        assert progress["chips_failed"] == 0
        assert progress["chips_done"] == progress["chips_total"] == r.scard(f"spikescan:job:{job_id}:done")
        for name in ("classes.tif", "scores.tif"):
            (tmp_path / name).write_bytes(http.get(f"/v1/jobs/{job_id}/results/{name}").content)
    r.close()
    for name in ("classes.tif", "scores.tif"):
        with rasterio.open(tmp_path / name) as have, rasterio.open(local_run / name) as want:
            assert np.array_equal(have.read(), want.read()), name
    # Deleted before "done" was recorded: nothing left by the killed worker or the rescuer.
    assert not [k for k in _keys(s3, f"{PREFIX}/jobs/{job_id}/") if "/chips/" in k]


def test_a_finished_job_expires_with_its_files_after_the_result_ttl(
    new_stack: Callable[..., Stack], s3: S3Server, landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    stack = _bucket_stack(new_stack, s3, SPIKESCAN_RESULT_TTL_S="3")
    r = stack.rclient()
    with stack.client() as http:
        job_id = upload(http, landsat_tif, landsat_model.name).json()["id"]
        assert stack.wait_done(http, job_id)["status"] == "done"
        assert 0 < r.ttl(f"spikescan:job:{job_id}") <= 3
        assert _keys(s3, f"{PREFIX}/jobs/{job_id}/out/")  # the outputs, until the record expires
        deadline = time.monotonic() + 30  # expiry (3 s), then the workers' next sweep (every 3 s)
        while time.monotonic() < deadline and (
            _keys(s3, f"{PREFIX}/jobs/{job_id}/") or r.zscore("spikescan:jobs", job_id) is not None
        ):
            time.sleep(0.5)
        assert _keys(s3, f"{PREFIX}/jobs/{job_id}/") == []
        assert r.zscore("spikescan:jobs", job_id) is None
        assert not any(r.sismember(k, job_id) for k in r.scan_iter(match="spikescan:owner:*"))
        assert [k for k in r.scan_iter(match=f"spikescan:job:{job_id}*")] == []
        gone = http.get(f"/v1/jobs/{job_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    r.close()


def test_a_bad_storage_url_is_refused_at_start_up() -> None:
    from workers.objectstore import open_store

    for bad in ("ftp://host/x", "relative/dir", "s3://"):
        with pytest.raises(ValueError, match="SPIKESCAN_STORAGE_URL"):
            open_store(bad, Path("/tmp"))


