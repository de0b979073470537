"""Upload a real scene over HTTP to a real uvicorn server, follow it to `done` over SSE, fetch everything."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import morecantile
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate

from models.package import ModelPackage
from service.signing import UrlSigner
from spikescan.config import Settings
from workers.jobs import OUTPUTS

if TYPE_CHECKING:
    from tests.service.conftest import Stack


def _events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    seen = []
    with stack.client() as http, http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
    return seen


@pytest.fixture(scope="module")
def finished(stack: Stack, osbs_tif: Path, rgb_model: ModelPackage, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with stack.client() as http, open(osbs_tif, "rb") as fh:
        r = http.post(
            "/v1/jobs", data={"model": rgb_model.name}, files={"scene": ("OSBS_029.tif", fh, "image/tiff")}
        )
    assert r.status_code == 202, r.text
    accepted = r.json()
    events = _events(stack, accepted["id"])
    out = tmp_path_factory.mktemp("downloads")
    with stack.client() as http:
        for name in OUTPUTS:
            got = http.get(f"/v1/jobs/{accepted['id']}/results/{name}")
            assert got.status_code == 200, (name, got.text)
            (out / name).write_bytes(got.content)
    return accepted, events, out


def test_accepted_job_has_links_and_events_end_in_done(finished) -> None:  # type: ignore[no-untyped-def]
    accepted, events, _ = finished
    assert accepted["status"] == "queued"
    assert set(OUTPUTS) <= set(accepted["links"]) and accepted["links"]["events"].endswith("/events")
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "done"
    assert statuses.index("done") == len(statuses) - 1
    done = [e["progress"]["chips_done"] for e in events]
    assert done == sorted(done)  # progress never runs backwards
    final = events[-1]["progress"]
    assert final["chips_done"] == final["chips_total"] > 0 and final["chips_failed"] == 0
    assert final["eta_s"] == 0 and final["chipping_complete"]


def test_outputs_are_valid_georeferenced_layers_identical_to_the_in_process_run(
    finished, osbs_tif: Path, osbs_reference: Path, rgb_model: ModelPackage, read_bands
) -> None:  # type: ignore[no-untyped-def]
    _, _, out = finished
    with rasterio.open(osbs_tif) as scene:
        crs, bounds = scene.crs, scene.bounds
    for name in ("classes.tif", "scores.tif"):
        assert cog_validate(out / name)[0], name
        with rasterio.open(out / name) as ds:
            assert ds.crs == crs
            assert np.allclose(tuple(ds.bounds), tuple(bounds), atol=1e-6)
        assert np.array_equal(read_bands(out / name), read_bands(osbs_reference / name)), name
    fc = json.loads((out / "detections.geojson").read_text())
    ref = json.loads((osbs_reference / "detections.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(ref["features"]) > 0
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds)
    coords = np.array([pt for f in fc["features"] for ring in f["geometry"]["coordinates"] for pt in ring])
    assert (coords[:, 0] >= west - 1e-7).all() and (coords[:, 0] <= east + 1e-7).all()
    assert (coords[:, 1] >= south - 1e-7).all() and (coords[:, 1] <= north + 1e-7).all()
    item = json.loads((out / "item.json").read_text())
    assert item["type"] == "Feature" and {"classes", "scores", "detections", "report"} <= set(item["assets"])
    assert item["properties"]["spikescan:model"]["id"] == rgb_model.id
    # The same STAC Item as the in-process pipeline writes (whose schema validity its own tests check),
    # apart from what differs per run: timings, and the id derived from the scene's path.
    ref_item = json.loads((osbs_reference / "item.json").read_text())
    # Served with absolute hrefs (test_the_stac_item_served_has_absolute_links), stored with relative ones.
    assert {k: {**a, "href": a["href"].rsplit("/", 1)[-1]} for k, a in item["assets"].items()} == ref_item[
        "assets"
    ]
    assert item["bbox"] == ref_item["bbox"]
    assert item["geometry"] == ref_item["geometry"] and item["stac_extensions"] == ref_item["stac_extensions"]
    varying = {"spikescan:timings_s", "datetime", "created", "updated", "end_datetime"}
    props, ref_props = item["properties"], ref_item["properties"]
    assert props.keys() == ref_props.keys()
    assert {k: v for k, v in props.items() if k not in varying} == {
        k: v for k, v in ref_props.items() if k not in varying
    }
    report = json.loads((out / "report.json").read_text())
    assert report["chips"]["processed"] + report["chips"]["skipped"] == report["chips"]["total"]
    assert report["backend"] == "emulator"


def test_cog_byte_ranges_are_served_and_gdal_reads_it_over_http(stack: Stack, finished, read_bands) -> None:  # type: ignore[no-untyped-def]
    accepted, _, out = finished
    path = f"/v1/jobs/{accepted['id']}/results/classes.tif"
    whole = (out / "classes.tif").read_bytes()
    with stack.client() as http:
        r = http.get(path, headers={"Range": "bytes=100-299"})
        head = http.head(path)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 100-299/{len(whole)}"
    assert r.content == whole[100:300]
    assert head.status_code == 200 and head.headers["accept-ranges"] == "bytes"
    with rasterio.Env(
        GDAL_HTTP_HEADERS=f"Authorization: Bearer {stack.keys[0]}", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"
    ):
        with rasterio.open(f"/vsicurl/{stack.url}{path}") as remote:
            assert np.array_equal(remote.read(), read_bands(out / "classes.tif"))
            assert remote.overviews(1)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a PNG tile has no CRS
def test_web_mercator_tiles_of_the_class_layer(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, out = finished
    with rasterio.open(out / "classes.tif") as ds:
        west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 20)
    with stack.client() as http:
        r = http.get(f"/v1/jobs/{accepted['id']}/tiles/{tile.z}/{tile.x}/{tile.y}.png")
        far = http.get(f"/v1/jobs/{accepted['id']}/tiles/20/0/0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with rasterio.MemoryFile(r.content) as mem, mem.open() as png:
        assert png.driver == "PNG" and (png.width, png.height) == (256, 256)
        rgba = png.read()
    assert rgba.shape[0] == 4 and rgba[3].any()  # coloured cells, opaque where the layer has data
    assert far.status_code == 404 and far.json()["error"]["code"] == "not_found"


def test_status_metrics_models_and_openapi(stack: Stack, finished, rgb_model: ModelPackage) -> None:  # type: ignore[no-untyped-def]
    accepted, _, _ = finished
    with stack.client() as http:
        status = http.get(f"/v1/jobs/{accepted['id']}").json()
        models = http.get("/v1/models").json()
        metrics = http.get("/metrics").text
        spec = http.get("/openapi.json").json()
        health = http.get("/healthz").json()
    assert status["status"] == "done" and status["progress"]["chips_per_s"] > 0
    assert {m["name"] for m in models} >= {rgb_model.name}
    assert 'spikescan_stream_backlog{stream="infer"}' in metrics
    assert 'route="/v1/jobs/{job_id}/results/{name}"' in metrics
    assert {"/v1/jobs", "/v1/batches", "/v1/jobs/{job_id}/events"} <= set(spec["paths"])
    bodies = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert bodies["application/json"]["schema"]["title"] == "UriSubmission"
    assert "scene" in bodies["multipart/form-data"]["schema"]["properties"]
    assert "$ref" not in json.dumps(spec["paths"]["/v1/batches"]["post"]["requestBody"])
    assert health == {
        "status": "ok",
        "redis": True,
        "version": health["version"],
        "persistence": "aof-always",
    }


def test_delete_removes_a_finished_job_and_its_files(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    with stack.client() as http, open(osbs_tif, "rb") as fh:
        job_id = http.post("/v1/jobs", data={"model": rgb_model.name}, files={"scene": ("s.tif", fh)}).json()[
            "id"
        ]
        assert stack.wait_done(http, job_id)["status"] == "done"
        assert (stack.data_dir / "jobs" / job_id / "out" / "classes.tif").is_file()
        assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (stack.data_dir / "jobs" / job_id).exists()


def test_delete_cancels_a_live_job_and_workers_drop_its_chips(
    stack: Stack, landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    scene = stack.inputs / "landsat-cancel.tif"
    scene.write_bytes(landsat_tif.read_bytes())
    with stack.client() as http:
        job_id = http.post("/v1/jobs", json={"uri": str(scene), "model": landsat_model.name}).json()["id"]
        r = http.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        status = stack.wait_done(http, job_id)
        r = stack.rclient()
        deadline = time.monotonic() + 60
        while r.xlen("spikescan:stream:infer") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.xlen("spikescan:stream:infer") == 0  # queued chips of the cancelled job were dropped
        r.close()
        final = http.get(f"/v1/jobs/{job_id}").json()
        assert status["status"] == final["status"] == "cancelled"
        assert (
            final["progress"]["chips_done"] < final["progress"]["chips_total"]
            or final["progress"]["chips_total"] == 0
        )
        assert not (stack.data_dir / "jobs" / job_id / "out" / "classes.tif").exists()
        assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404


def test_the_job_is_named_after_its_upload_everywhere(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, out = finished
    with stack.client() as http:
        status = http.get(f"/v1/jobs/{accepted['id']}").json()
        listed = http.get("/v1/jobs").json()
    assert status["scene_name"] == "OSBS_029.tif"
    assert next(j for j in listed if j["id"] == accepted["id"])["scene_name"] == "OSBS_029.tif"
    assert json.loads((out / "report.json").read_text())["scene_name"] == "OSBS_029.tif"
    item = json.loads((out / "item.json").read_text())
    assert item["id"].startswith("OSBS_029-") and item["properties"]["title"].startswith("OSBS_029.tif")


def test_jobs_are_listed_newest_first(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    with stack.client() as http:
        listed = http.get("/v1/jobs").json()
    created = [j["created"] for j in listed]
    assert len(created) >= 1 and created == sorted(created, reverse=True)


def test_an_unknown_result_file_is_a_404(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, _ = finished
    with stack.client() as http:
        r = http.get(f"/v1/jobs/{accepted['id']}/results/nope.tif")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "classes.tif" in r.json()["error"]["message"]  # says what there is


def _signed(stack: Stack, job_id: str) -> dict[str, str]:
    with stack.client() as http:
        return http.get(f"/v1/jobs/{job_id}").json()["links"]  # type: ignore[no-any-return]


def test_signed_urls_open_without_a_key(stack: Stack, finished, read_bands) -> None:  # type: ignore[no-untyped-def]
    accepted, _, out = finished
    links = _signed(stack, accepted["id"])
    assert {f"signed:{name}" for name in OUTPUTS} | {"signed:tiles"} <= set(links)
    url = links["signed:classes.tif"]
    whole = (out / "classes.tif").read_bytes()
    with httpx.Client(timeout=60) as anonymous:  # no key header at all
        assert anonymous.get(links["classes.tif"]).status_code == 401  # the plain URL still needs the key
        ranged = anonymous.get(url, headers={"Range": "bytes=100-299"})
        assert ranged.status_code == 206 and ranged.content == whole[100:300]
        assert anonymous.get(links["signed:report.json"]).json()["scene_name"] == "OSBS_029.tif"
        with rasterio.open(out / "classes.tif") as ds:
            west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        t = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 20)
        tile = anonymous.get(links["signed:tiles"].format(z=t.z, x=t.x, y=t.y))
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(f"/vsicurl/{url}") as remote:
        assert np.array_equal(remote.read(), read_bands(out / "classes.tif")) and remote.overviews(1)
    # pyogrio's own GDAL warns through its error handler (a retried range request; "built against curl 8.20,
    # running against 8.11" once rasterio's GDAL has loaded its libcurl): inside a C callback pytest's
    # warnings-as-errors would make that an unraisable exception, so they are recorded and shown on failure.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        meta = pyogrio.read_info(f"/vsicurl/{links['signed:detections.gpkg']}")
    expected = len(json.loads((out / "detections.geojson").read_text())["features"])
    assert meta["features"] == expected, [str(w.message) for w in seen]


def test_the_stac_item_served_has_absolute_links_that_open(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, _ = finished
    links = _signed(stack, accepted["id"])
    results = f"{stack.url}/v1/jobs/{accepted['id']}/results/"
    with stack.client() as http:
        item = http.get(links["item.json"]).json()
        assert {"rel": "self", "href": results + "item.json", "type": "application/geo+json"} in item["links"]
        for asset in item["assets"].values():
            assert asset["href"].startswith(results), asset
            assert http.head(asset["href"]).status_code == 200, asset
    # Fetched by its signed URL, the Item leads to signed files: a STAC browser given the link needs no key.
    with httpx.Client(timeout=60) as anonymous:
        signed = anonymous.get(links["signed:item.json"]).json()
        assert [x["href"] for x in signed["links"] if x["rel"] == "self"] == [links["signed:item.json"]]
        for key, asset in signed["assets"].items():
            assert asset["href"] == links[f"signed:{item['assets'][key]['href'].rsplit('/', 1)[-1]}"]
            assert anonymous.head(asset["href"]).status_code == 200, asset


def test_links_are_built_on_the_public_url_when_one_is_set(  # type: ignore[no-untyped-def]
    new_stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    public = "https://scan.example.org/spikescan"
    stack = new_stack(SPIKESCAN_PUBLIC_URL=public + "/")
    with stack.client() as http, open(osbs_tif, "rb") as fh:
        r = http.post("/v1/jobs", data={"model": rgb_model.name}, files={"scene": fh})
    assert r.status_code == 202, r.text
    job_links = r.json()["links"]
    assert job_links["self"] == f"{public}/v1/jobs/{r.json()['id']}"
    assert all(url.startswith(public + "/v1/jobs/") for url in job_links.values())


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="GDAL's command-line tools are not installed")
def test_gdalinfo_opens_a_signed_url_with_names_from_the_sidecar(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, _ = finished
    links = _signed(stack, accepted["id"])
    done = subprocess.run(["gdalinfo", "-json", f"/vsicurl/{links['signed:classes.tif']}"],
                          capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(done.stdout)
    # Category names live only in classes.tif.aux.xml: GDAL found the sidecar through the same signed path.
    assert info["bands"][0]["categories"] == ["background", "crown"]
    assert info["bands"][0]["colorInterpretation"] == "Palette"
    done = subprocess.run(["ogrinfo", "-so", "-al", f"/vsicurl/{links['signed:detections.fgb']}"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "Feature Count:" in done.stdout and "area_m2: Real" in done.stdout


def test_tampered_expired_and_foreign_signatures_are_refused(stack: Stack, finished) -> None:  # type: ignore[no-untyped-def]
    accepted, _, _ = finished
    url = _signed(stack, accepted["id"])["signed:classes.tif"]
    prefix, _, rest = url.partition("/signed/")
    token, _, tail = rest.partition("/")
    expires, _, sig = token.partition(".")
    signer = UrlSigner.from_settings(Settings(api_keys=list(stack.keys)))
    assert signer is not None
    with stack.rclient() as r:
        job_owner = r.hget(f"spikescan:job:{accepted['id']}", "owner").decode()
    stale = signer.token(accepted["id"], job_owner, int(time.time()) - 10)
    cases = {
        "bad_signature": f"{prefix}/signed/{expires}.{sig[:-2]}xx/{tail}",
        "bad_signature ": f"{prefix}/signed/{int(expires) + 3600}.{sig}/{tail}",  # expiry pushed out
        "signature_expired": f"{prefix}/signed/{stale}/{tail}",
    }
    with httpx.Client(timeout=30) as anonymous:
        for code, bad in cases.items():
            r = anonymous.get(bad)
            assert r.status_code in (401, 403) and r.json()["error"]["code"] == code.strip(), (code, r.text)
        # A good token for this job opens no other job.
        other = anonymous.get(url.replace(accepted["id"], "j" + "0" * 20))
        assert other.status_code == 404
        assert anonymous.delete(url.rsplit("/results/", 1)[0]).status_code in (404, 405)
