"""Honest inputs over HTTP (workers/input_check.py): a hopeless 16-bit scene is refused with a 422 naming the
upload, the ``scale`` and ``nodata`` fields are the ways out (multipart and JSON), an undeclared fill shows
in the job record and report.json with its exact pixel count, and scene normalisation statistics computed at
submission reach every inference worker: the service's outputs equal the in-process run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import rasterio

from models import package
from models.package import ModelPackage
from tests import input_scenes
from tests.service.conftest import Stack, nothing_left, upload
from tests.workers.test_input_check import standardised_copy
from workers import pipeline
from workers.jobs import OUTPUTS

if TYPE_CHECKING:
    import httpx


@pytest.fixture(scope="module")
def scenes(osbs_tif: Path, landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("api-input-scenes")
    return {
        "sixteen_bit": input_scenes.sixteen_bit(osbs_tif, d / "osbs16.tif"),
        "undeclared_fill": input_scenes.undeclared_fill(landsat_tif, d / "landsat_undeclared.tif"),
    }


def _download(http: httpx.Client, job_id: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        got = http.get(f"/v1/jobs/{job_id}/results/{name}")
        assert got.status_code == 200, (name, got.text)
        (out / name).write_bytes(got.content)
    return out


def _same_rasters(a: Path, b: Path) -> None:
    for name in ("classes.tif", "scores.tif"):
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            assert np.array_equal(x.read(), y.read()), name


def test_a_16_bit_scene_is_refused_with_a_422_naming_the_upload(
    stack: Stack, scenes: dict[str, Path], rgb_model: ModelPackage
) -> None:
    check = nothing_left(stack)
    with stack.client() as http:
        r = upload(http, scenes["sixteen_bit"], rgb_model.name, filename="camera16.tif")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "out_of_range"
    assert err["message"].startswith("camera16.tif: 100.0 % of its valid pixels")
    # The API's own words: a request field, never the CLI's flag.
    assert "field `scale` = 0.00" in err["message"] and "--scale" not in err["message"]
    assert str(scenes["sixteen_bit"].parent) not in err["message"]
    check()


def test_the_scale_field_makes_it_run_clean(
    stack: Stack, scenes: dict[str, Path], rgb_model: ModelPackage, tmp_path: Path
) -> None:
    with stack.client() as http:
        r = upload(http, scenes["sixteen_bit"], rgb_model.name, scale=repr(1 / 257))
        assert r.status_code == 202, r.text
        final = stack.wait_done(http, r.json()["id"])
        assert final["status"] == "done", final
        assert final["warnings"] == []
        out = _download(http, final["id"], tmp_path)
    rep = json.loads((out / "report.json").read_text())
    assert rep["warnings"] == [] and rep["inputs"]["scale"] == pytest.approx(1 / 257)
    ref = pipeline.run(scenes["sixteen_bit"], rgb_model, tmp_path / "ref", inputs=_options(scale=1 / 257))
    assert ref["warnings"] == []
    _same_rasters(out, tmp_path / "ref")


def test_bad_scale_fields_are_400s(stack: Stack, scenes: dict[str, Path], rgb_model: ModelPackage) -> None:
    with stack.client() as http:
        assert upload(http, scenes["sixteen_bit"], rgb_model.name, scale="big").status_code == 400
        assert upload(http, scenes["sixteen_bit"], rgb_model.name, scale="-2").status_code == 400
        r = http.post("/v1/jobs", json={"uri": str(scenes["sixteen_bit"]), "model": "x", "scale": 0})
        assert r.status_code in (400, 422) and r.json()["error"]["code"]


def test_an_undeclared_fill_is_in_the_job_record_and_report(
    stack: Stack, scenes: dict[str, Path], landsat_model: ModelPackage, tmp_path: Path
) -> None:
    with stack.client() as http:
        r = upload(http, scenes["undeclared_fill"], landsat_model.name)
        assert r.status_code == 202, r.text
        early = http.get(f"/v1/jobs/{r.json()['id']}").json()
        assert [w["code"] for w in early["warnings"]] == ["undeclared_fill"]  # from the sample, at once
        final = stack.wait_done(http, r.json()["id"])
        assert final["status"] == "done", final
        out = _download(http, final["id"], tmp_path / "service")
    (warning,) = final["warnings"]
    assert warning["code"] == "undeclared_fill" and warning["value"] == -99999
    assert warning["pixels"] == input_scenes.LANDSAT_FILL_PIXELS and warning["counted"] == "all pixels"
    rep = json.loads((out / "report.json").read_text())
    assert rep["warnings"] == final["warnings"]
    ref = pipeline.run(scenes["undeclared_fill"], landsat_model, tmp_path / "ref")
    assert rep["inputs"]["counts"] == ref["inputs"]["counts"]  # the chipper counted exactly as in-process
    _same_rasters(out, tmp_path / "ref")


def test_the_json_nodata_field_declares_the_fill(
    stack: Stack, scenes: dict[str, Path], landsat_model: ModelPackage
) -> None:
    target = stack.inputs / "declared-by-caller.tif"
    shutil.copy(scenes["undeclared_fill"], target)
    with stack.client() as http:
        r = http.post("/v1/jobs", json={"uri": str(target), "model": landsat_model.name, "nodata": -99999})
        assert r.status_code == 202, r.text
        final = stack.wait_done(http, r.json()["id"])
    assert final["status"] == "done" and final["warnings"] == []


def test_scene_statistics_reach_every_inference_worker(
    landsat_tif: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    catalogue = tmp_path_factory.mktemp("std-catalogue")
    std = standardised_copy(package.load("landcover-landsat"), landsat_tif, catalogue)
    stack = Stack(tmp_path / "stack", catalogue, SPIKESCAN_MAX_UPLOAD_MB="16")
    try:
        stack.pipeline_workers(infer=2)
        with stack.client() as http:
            r = upload(http, landsat_tif, std.name)
            assert r.status_code == 202, r.text
            final = stack.wait_done(http, r.json()["id"])
            assert final["status"] == "done", final
            out = _download(http, final["id"], tmp_path / "service")
        record = {
            k.decode(): v.decode() for k, v in stack.rclient().hgetall(f"spikescan:job:{final['id']}").items()
        }
    finally:
        stack.stop()
    ref = pipeline.run(landsat_tif, std, tmp_path / "ref")
    rep = json.loads((out / "report.json").read_text())
    stats = json.loads(record["input_check"])["stats"]
    assert stats == {
        "mean": ref["inputs"]["normalisation"]["mean"],
        "std": ref["inputs"]["normalisation"]["std"],
    }
    assert rep["inputs"]["normalisation"] == ref["inputs"]["normalisation"]
    _same_rasters(out, tmp_path / "ref")


def _options(**kwargs: Any):  # type: ignore[no-untyped-def]
    from workers.input_check import InputOptions

    return InputOptions(**kwargs)


def _submit(stack: Stack, *args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = stack.env | {"SPIKESCAN_API_KEY": stack.keys[0]}
    cmd = [
        sys.executable,
        "-m",
        "spikescan.cli",
        "submit",
        *args,
        "--server",
        stack.url,
        "--wait",
        "--out",
        str(out),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def test_the_client_passes_scale_and_nodata_and_prints_warnings(
    stack: Stack,
    scenes: dict[str, Path],
    rgb_model: ModelPackage,
    landsat_model: ModelPackage,
    tmp_path: Path,
) -> None:
    refused = _submit(stack, str(scenes["sixteen_bit"]), "--model", rgb_model.name, out=tmp_path)
    assert refused.returncode == 2 and "HTTP 422 out_of_range" in refused.stderr, refused.stderr
    scaled = _submit(
        stack, str(scenes["sixteen_bit"]), "--model", rgb_model.name, "--scale", "0.0039", out=tmp_path
    )
    assert scaled.returncode == 0, scaled.stderr
    assert "warning" not in scaled.stderr
    target = stack.inputs / "client-batch.tif"
    shutil.copy(scenes["undeclared_fill"], target)
    warned = _submit(stack, "--uri", str(target), "--model", landsat_model.name, out=tmp_path)
    assert warned.returncode == 0, warned.stderr
    assert "warning: 33,209 pixels hold -99999 on every band" in warned.stderr
    sixteen = stack.inputs / "client-batch16.tif"
    shutil.copy(scenes["sixteen_bit"], sixteen)  # the batch (JSON) path's scale field
    batch = _submit(
        stack, "--uri", str(sixteen), "--model", rgb_model.name, "--scale", "0.0039", out=tmp_path
    )
    assert batch.returncode == 0 and "warning" not in batch.stderr, batch.stderr
