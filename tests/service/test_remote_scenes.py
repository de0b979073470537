"""JSON ``{"uri": ...}`` jobs for scenes behind URLs and in buckets, through a real stack (uvicorn API, Redis,
chipper, inference and mosaicker processes), a real Range HTTP server and moto's S3 server: allowed URLs give
the layers of the local run; everything else is a 4xx JSON error naming the URL and the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from tests.remote import RangeServer, S3Server, range_server
from tests.service.conftest import Stack, nothing_left
from tests.stac_scenes import build_s2_item
from workers import pipeline


@pytest.fixture()
def remote_stack(new_stack: Callable[..., Stack], served: RangeServer, s3: S3Server) -> Stack:
    stack = new_stack(SPIKESCAN_INPUT_ROOTS=f"{served.url}/,s3://scenes/nc/", **s3.env)
    stack.pipeline_workers(infer=1)
    return stack


def test_https_and_s3_jobs_give_the_local_layers(
    remote_stack: Stack, served: RangeServer, landsat_model: ModelPackage, landsat_reference: Path
) -> None:
    with remote_stack.client() as http:
        for uri in (f"{served.url}/scene.tif", "s3://scenes/nc/scene.tif"):
            r = http.post("/v1/jobs", json={"uri": uri, "model": landsat_model.name})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            status = remote_stack.wait_done(http, job_id)
            assert status["status"] == "done", status
            out = remote_stack.data_dir / "jobs" / job_id / "out"
            for name in ("classes.tif", "scores.tif"):
                with rasterio.open(out / name) as got, rasterio.open(landsat_reference / name) as want:
                    assert got.transform == want.transform
                    assert np.array_equal(got.read(), want.read()), (uri, name)
            extent = http.get(f"/v1/jobs/{job_id}/extent")
            assert extent.status_code == 200 and len(extent.json()["bbox"]) == 4


def test_uris_outside_the_roots_or_broken_are_4xx_json_naming_the_problem(
    remote_stack: Stack, served: RangeServer, landsat_model: ModelPackage
) -> None:
    base = served.url
    port = base.rsplit(":", 1)[1]
    cases = [
        (f"http://localhost:{port}/scene.tif", 403, "forbidden", "outside the server's input roots"),
        (f"http://127.0.0.1.nip.io:{port}/scene.tif", 403, "forbidden", "outside the server's input roots"),
        ("s3://scenes/other/scene.tif", 403, "forbidden", "outside the server's input roots"),
        ("s3://scenes/nc/missing.tif", 422, "invalid_scene", "no such object in the bucket"),
        (f"{base}/../etc/passwd.tif", 400, "invalid_input", "'.' and '..' path segments"),
        ("gs://scenes/nc/scene.tif", 400, "invalid_input", "unsupported scheme 'gs'"),
        (f"{base}/missing.tif", 422, "invalid_scene", "not found (HTTP 404)"),
        (f"{base}/forbidden/scene.tif", 422, "invalid_scene", "access denied (HTTP 403)"),
        (f"{base}/redirect-away/scene.tif", 422, "invalid_scene", "redirects to another host"),
        (f"{base}/page.tif", 422, "invalid_scene", "not a GeoTIFF"),
        (f"{base}/scene.png", 422, "invalid_scene", "only GeoTIFFs"),
    ]
    check = nothing_left(remote_stack)
    with remote_stack.client() as http:
        for uri, status, code, message in cases:
            for r in (
                http.post("/v1/jobs", json={"uri": uri, "model": landsat_model.name}),
                http.post("/v1/batches", json={"uris": [uri], "model": landsat_model.name}),
            ):
                error = r.json()["error"]
                assert (r.status_code, error["code"]) == (status, code), (uri, r.text)
                assert error["message"].startswith(uri) and message in error["message"], (uri, r.text)
    check()


# --- STAC Items ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s2_item(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_s2_item(tmp_path_factory.mktemp("s2"))


def test_a_stac_item_inline_or_by_url_gives_the_layers_of_the_stacked_bands(
    new_stack: Callable[..., Stack], s2_item: dict[str, Any], landsat_model: ModelPackage, tmp_path: Path
) -> None:
    root = s2_item["root"]
    want = tmp_path / "stacked"
    pipeline.run(root / "stacked.tif", landsat_model, want)
    with range_server(root) as www:
        stack = new_stack(SPIKESCAN_INPUT_ROOTS=f"{www.url}/")
        stack.pipeline_workers(infer=1)
        inline = json.loads(json.dumps(s2_item["item"]))
        for asset in inline["assets"].values():
            asset["href"] = f"{www.url}/{asset['href']}"
        with stack.client() as http:
            for body in ({"item": inline}, {"uri": f"{www.url}/item.json"}):
                r = http.post("/v1/jobs", json={**body, "model": landsat_model.name})
                assert r.status_code == 202, r.text
                status = stack.wait_done(http, r.json()["id"])
                assert status["status"] == "done", status
                out = stack.data_dir / "jobs" / r.json()["id"] / "out"
                for name in ("classes.tif", "scores.tif"):
                    with rasterio.open(out / name) as got, rasterio.open(want / name) as ref:
                        assert np.array_equal(got.read(), ref.read()), (body.keys(), name)


def test_a_stac_item_reading_outside_the_roots_is_refused(
    remote_stack: Stack, served: RangeServer, s2_item: dict[str, Any], landsat_model: ModelPackage
) -> None:
    item = json.loads(json.dumps(s2_item["item"]))
    for asset in item["assets"].values():
        asset["href"] = f"{served.url}/{asset['href']}"
    item["assets"]["B04"]["href"] = "https://elsewhere.example.org/B04.tif"
    check = nothing_left(remote_stack)
    with remote_stack.client() as http:
        r = http.post("/v1/jobs", json={"item": item, "model": landsat_model.name})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"].startswith("https://elsewhere.example.org/B04.tif: not accepted")
        r = http.post("/v1/jobs", json={"item": item, "uri": "s3://scenes/nc/scene.tif", "model": "x"})
        assert r.status_code == 400, r.text
        assert "exactly one of 'uri' and 'item'" in r.json()["error"]["message"]
        r = http.post("/v1/jobs", json={"item": {"type": "Feature"}, "model": landsat_model.name})
        assert r.status_code == 422 and "not a STAC Item" in r.json()["error"]["message"], r.text
    check()
