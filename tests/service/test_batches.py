"""Batches: several scenes in one request, drained by two inference workers; each scene accepted or refused
on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import rasterio
from rasterio.windows import Window

from models.package import ModelPackage
from workers.jobs import OUTPUTS

if TYPE_CHECKING:
    from tests.service.conftest import Stack

# Different windows of the real OSBS scene: (col, row, width, height).
WINDOWS = [
    (0, 0, 400, 400),
    (0, 0, 200, 200),
    (200, 0, 200, 300),
    (50, 120, 333, 250),
    (100, 100, 150, 150),
    (0, 300, 400, 100),
]


@pytest.fixture(scope="module")
def crops(stack: Stack, osbs_tif: Path) -> list[Path]:
    paths = []
    with rasterio.open(osbs_tif) as src:
        for i, (c, r, w, h) in enumerate(WINDOWS):
            win = Window(c, r, w, h)
            profile = src.profile | {"width": w, "height": h, "transform": src.window_transform(win)}
            path = stack.inputs / f"crop{i}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=win))
            paths.append(path)
    return paths


def test_a_batch_of_six_scenes_completes_on_two_inference_workers(
    stack: Stack, crops: list[Path], rgb_model: ModelPackage
) -> None:
    with stack.client() as http:
        r = http.post("/v1/batches", json={"model": rgb_model.name, "uris": [str(p) for p in crops]})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert len(batch["jobs"]) == len(crops) >= 5
        finals = [stack.wait_done(http, j["id"]) for j in batch["jobs"]]
        listed = http.get(f"/v1/batches/{batch['id']}").json()
    assert [f["status"] for f in finals] == ["done"] * len(crops)
    assert all(f["progress"]["chips_done"] == f["progress"]["chips_total"] > 0 for f in finals)
    assert {j["id"] for j in listed["jobs"]} == {j["id"] for j in batch["jobs"]}
    assert all(j["batch"] == batch["id"] for j in listed["jobs"])
    for j in batch["jobs"]:
        assert (stack.data_dir / "jobs" / j["id"] / "out" / "classes.tif").is_file()
    assert all(stack.procs[name].poll() is None for name in ("infer-1", "infer-2"))  # both served to the end


def test_a_batch_with_bad_scenes_runs_the_good_ones_and_names_every_error(
    stack: Stack, crops: list[Path], rgb_model: ModelPackage, osbs_tif: Path
) -> None:
    bad = stack.inputs / "broken.tif"
    bad.write_bytes(osbs_tif.read_bytes()[:5000])
    uris = [str(crops[0]), str(bad), str(osbs_tif)]  # good; truncated; outside the input roots
    with stack.client() as http:
        r = http.post("/v1/batches", json={"model": rgb_model.name, "uris": uris})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert len(batch["jobs"]) == 1
        final = stack.wait_done(http, batch["jobs"][0]["id"])
        listed = http.get(f"/v1/batches/{batch['id']}").json()
    errors = {e["scene"]: e for e in batch["errors"]}
    assert set(errors) == {str(bad), str(osbs_tif)}
    assert errors[str(bad)]["status"] == 422 and "broken.tif" in errors[str(bad)]["error"]["message"]
    assert errors[str(osbs_tif)]["status"] == 403 and errors[str(osbs_tif)]["error"]["code"] == "forbidden"
    assert final["status"] == "done"
    assert [j["scene_name"] for j in listed["jobs"]] == ["crop0.tif"]


def test_a_batch_whose_every_scene_is_bad_is_refused_naming_each(
    stack: Stack, rgb_model: ModelPackage, osbs_tif: Path
) -> None:
    with stack.rclient() as r:
        before = r.zcard("spikescan:jobs")
    bad = stack.inputs / "broken2.tif"
    bad.write_bytes(osbs_tif.read_bytes()[:5000])
    empty = stack.inputs / "empty.tif"
    empty.write_bytes(b"")
    with stack.client() as http:
        r = http.post("/v1/batches", json={"model": rgb_model.name, "uris": [str(bad), str(empty)]})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "broken2.tif" in message and "empty.tif" in message
    with stack.rclient() as r:
        assert r.zcard("spikescan:jobs") == before


def test_a_multipart_batch_refuses_a_bad_file_on_its_own(
    stack: Stack, crops: list[Path], rgb_model: ModelPackage
) -> None:
    with stack.client() as http, open(crops[4], "rb") as good:
        r = http.post(
            "/v1/batches",
            data={"model": rgb_model.name},
            files=[("scene", ("notes.txt", b"not a raster", "text/plain")),
                   ("scene", ("good.tif", good, "image/tiff"))],
        )
        assert r.status_code == 202, r.text
        body = r.json()
        final = stack.wait_done(http, body["jobs"][0]["id"])
    assert len(body["jobs"]) == 1 and final["scene_name"] == "good.tif" and final["status"] == "done"
    assert [e["scene"] for e in body["errors"]] == ["notes.txt"] and body["errors"][0]["status"] == 422
    assert not list((stack.data_dir / "uploads").iterdir())


def test_a_multipart_batch_uploads_several_scenes(
    stack: Stack, crops: list[Path], rgb_model: ModelPackage
) -> None:
    with stack.client() as http, open(crops[1], "rb") as a, open(crops[4], "rb") as b:
        r = http.post(
            "/v1/batches",
            data={"model": rgb_model.name},
            files=[("scene", ("a.tif", a, "image/tiff")), ("scene", ("b.tif", b, "image/tiff"))],
        )
        assert r.status_code == 202, r.text
        finals = [stack.wait_done(http, j["id"]) for j in r.json()["jobs"]]
    assert [f["status"] for f in finals] == ["done", "done"]
    assert not list((stack.data_dir / "uploads").iterdir())


def test_the_client_batch_submits_server_paths_and_downloads_results(
    stack: Stack, crops: list[Path], rgb_model: ModelPackage, tmp_path: Path
) -> None:
    args = ["submit", "--uri", str(crops[2]), str(crops[3]), "--server", stack.url, "--model", rgb_model.name]
    env = stack.env | {"SPIKESCAN_API_KEY": stack.keys[1]}
    cmd = [sys.executable, "-m", "spikescan.cli", *args, "--wait", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_ids = done.stdout.split()[:2]
    for job_id in job_ids:
        assert sorted(p.name for p in (tmp_path / job_id).iterdir()) == sorted(OUTPUTS)
    with stack.client(stack.keys[0]) as other:  # submitted with the second key: invisible to the first
        assert all(other.get(f"/v1/jobs/{j}").status_code == 404 for j in job_ids)
