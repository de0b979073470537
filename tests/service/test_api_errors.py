"""Bad input gets the right 4xx JSON error and leaves no job, no staged upload and no job directory behind."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from models.package import ModelPackage
from tests.service.conftest import nothing_left as _nothing_left
from tests.service.conftest import upload as _upload

if TYPE_CHECKING:
    from tests.service.conftest import Stack


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, osbs_tif: Path) -> dict[str, Path]:
    """Real broken inputs, each made from the real OSBS scene."""
    d = tmp_path_factory.mktemp("bad")
    with rasterio.open(osbs_tif) as src:
        pixels, profile = src.read(), src.profile
    (d / "notes.tif").write_text("this is not a GeoTIFF\n")
    raw = osbs_tif.read_bytes()
    (d / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    plain = {k: v for k, v in profile.items() if k not in ("crs", "transform")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # exactly what this file is for
        with rasterio.open(d / "nocrs.tif", "w", **plain) as dst:
            dst.write(pixels)
    with rasterio.open(d / "oneband.tif", "w", **(profile | {"count": 1})) as dst:
        dst.write(pixels[:1])
    # 5x5 mirrored tiles of the real scene: 2000x2000x3 uncompressed, 12 MB, over the stack's 4 MB cap.
    big = np.tile(pixels, (1, 5, 5))
    with rasterio.open(
        d / "big.tif", "w", **(profile | {"width": 2000, "height": 2000, "compress": None})
    ) as dst:
        dst.write(big)
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(
    ("name", "status", "code", "words"),
    [
        ("notes", 422, "invalid_scene", "notes.tif: not a raster"),
        ("truncated", 422, "invalid_scene", "truncated.tif: unreadable pixels"),
        ("nocrs", 422, "invalid_scene", "nocrs.tif: not georeferenced"),
        ("oneband", 422, "band_mismatch", "oneband.tif: has 1 band"),
        ("big", 413, "too_large", "big.tif: larger than the server's limit of 4 MB"),
    ],
)
def test_bad_uploads(
    stack: Stack,
    bad_files: dict[str, Path],
    rgb_model: ModelPackage,
    name: str,
    status: int,
    code: str,
    words: str,
) -> None:
    check = _nothing_left(stack)
    with stack.client() as http:
        r = _upload(http, bad_files[name], rgb_model.name)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert words in r.json()["error"]["message"]
    check()


@pytest.mark.parametrize(
    ("model", "fields", "status", "code"),
    [
        ("no-such-model", {}, 404, "unknown_model"),
        ("../../etc", {}, 404, "unknown_model"),
        ("rand-rgb", {"stride": "7"}, 400, "invalid_input"),  # not a multiple of the output stride
        ("rand-rgb", {"stride": "many"}, 400, "invalid_input"),
        ("rand-rgb", {"bands": "1,2,9"}, 422, "band_mismatch"),
    ],
)
def test_bad_upload_parameters(
    stack: Stack, osbs_tif: Path, model: str, fields: dict[str, str], status: int, code: str
) -> None:
    check = _nothing_left(stack)
    with stack.client() as http:
        r = _upload(http, osbs_tif, model, **fields)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    check()


def test_malformed_requests(stack: Stack, osbs_tif: Path) -> None:
    check = _nothing_left(stack)
    with stack.client() as http, open(osbs_tif, "rb") as fh:
        no_model = http.post("/v1/jobs", files={"scene": ("a.tif", fh)})
        no_scene = http.post("/v1/jobs", data={"model": "rand-rgb"}, files={"other": ("a.txt", b"x")})
        bad_json = http.post("/v1/jobs", json={"uri": "/x.tif", "model": "rand-rgb", "colour": "red"})
        not_form = http.post("/v1/jobs", content=b"hello", headers={"content-type": "text/plain"})
    for r, words in (
        (no_model, "'model' is required"),
        (no_scene, "named 'scene'"),
        (bad_json, "colour"),
        (not_form, "multipart/form-data"),
    ):
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    check()


def test_uris_outside_the_input_roots_are_refused_symlinks_included(
    stack: Stack, osbs_tif: Path, tmp_path: Path
) -> None:
    link = stack.inputs / "sneaky.tif"
    link.unlink(missing_ok=True)
    os.symlink(osbs_tif, link)
    escape = f"{stack.inputs}/../outside.tif"
    check = _nothing_left(stack)
    with stack.client() as http:
        for uri in (str(osbs_tif), str(link), escape, f"file://{link}"):
            r = http.post("/v1/jobs", json={"uri": uri, "model": "rand-rgb"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (uri, r.text)
        # URLs are accepted only under a URL root (tests/service/test_remote_scenes.py); this stack has none.
        r = http.post("/v1/jobs", json={"uri": "https://example.org/a.tif", "model": "rand-rgb"})
        assert r.status_code == 403 and "outside the server's input roots" in r.json()["error"]["message"]
        r = http.post("/v1/jobs", json={"uri": "ftp://example.org/a.tif", "model": "rand-rgb"})
        assert r.status_code == 400 and "unsupported scheme 'ftp'" in r.json()["error"]["message"]
        r = http.post("/v1/jobs", json={"uri": str(stack.inputs / "missing.tif"), "model": "rand-rgb"})
        assert r.status_code == 422 and "no such file" in r.json()["error"]["message"]
    check()


def test_keys_see_only_their_own_jobs(stack: Stack, osbs_tif: Path, rgb_model: ModelPackage) -> None:
    with (
        stack.client(stack.keys[0]) as alpha,
        stack.client(stack.keys[1]) as bravo,
        stack.client(None) as anonymous,
        stack.client("wrong-key") as wrong,
    ):
        r = _upload(alpha, osbs_tif, rgb_model.name)
        assert r.status_code == 202
        job = r.json()["id"]
        assert alpha.get(f"/v1/jobs/{job}").status_code == 200
        for path in (
            f"/v1/jobs/{job}",
            f"/v1/jobs/{job}/events",
            f"/v1/jobs/{job}/results/classes.tif",
            f"/v1/jobs/{job}/tiles/1/0/0.png",
        ):
            r = bravo.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert bravo.delete(f"/v1/jobs/{job}").status_code == 404
        assert job not in {j["id"] for j in bravo.get("/v1/jobs").json()}
        assert job in {j["id"] for j in alpha.get("/v1/jobs").json()}
        for client in (anonymous, wrong):
            r = client.get(f"/v1/jobs/{job}")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert client.post("/v1/jobs", json={"uri": "/x", "model": "m"}).status_code == 401
        assert alpha.get("/v1/jobs/jdoesnotexist").status_code == 404
        assert stack.wait_done(alpha, job)["status"] == "done"


def test_results_of_an_unfinished_or_unknown_job(
    stack: Stack, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    with stack.client() as http:
        job = _upload(http, osbs_tif, rgb_model.name).json()["id"]
        r = http.get(f"/v1/jobs/{job}/results/not-a-result.txt")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"  # unknown file: 404, not 422
        stack.wait_done(http, job)
        assert http.get(f"/v1/jobs/{job}/tiles/99/0/0.png").status_code == 400
