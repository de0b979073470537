"""Scenes from URLs and buckets (workers.sources) over real HTTP and a real S3-compatible server: the same
pixels and the same layers as the local file, only ranges of it read, and every way a remote scene goes wrong
refused naming the URL and the problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from spikescan.errors import InvalidScene, SceneTooLarge, SceneUnreachable
from tests.bad_scenes import claims_huge
from tests.remote import RangeServer, S3Server, free_port
from workers import sources
from workers.chips import ChipGrid
from workers.scene import open_scene

LAYERS = ("classes.tif", "scores.tif")


@pytest.fixture()
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This process's AWS_* environment pointed at the moto server (GDAL reads it from here)."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def _every_row(ref: str, landsat_model: ModelPackage) -> tuple[np.ndarray, np.ndarray]:
    with open_scene(ref, landsat_model.card) as scene:
        grid = ChipGrid.for_model(scene.width, scene.height, 16, 2, None)
        rows = [scene.read_chip_row(grid, r) for r in range(grid.rows)]
        return np.concatenate([b.pixels for b in rows]), np.concatenate([b.valid for b in rows])


def test_an_https_scene_reads_the_same_pixels_as_the_file_in_ranges(
    served: RangeServer, landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    served.requests.clear()
    remote = _every_row(f"{served.url}/scene.tif", landsat_model)
    local = _every_row(str(landsat_tif), landsat_model)
    assert np.array_equal(remote[0], local[0]) and np.array_equal(remote[1], local[1])
    gets = [r for r in served.requests if r[0] == "GET"]
    # Every GET is a range request, none asked for the whole file; no sidecar files were probed.
    assert gets and all(rng and rng.startswith("bytes=") for _, _, rng in gets)
    assert {path for _, path, _ in served.requests} == {"/scene.tif"}


def test_vsicurl_and_a_same_host_redirect_are_the_same_scene(
    served: RangeServer, landsat_model: ModelPackage
) -> None:
    for ref in (f"/vsicurl/{served.url}/scene.tif", f"{served.url}/redirect-here/scene.tif"):
        with open_scene(ref, landsat_model.card) as scene:
            assert scene.path == ref and scene.source.name == "scene.tif"
            assert (scene.width, scene.height) == (489, 443)
            assert scene.source.gdal_path == f"/vsicurl/{served.url}/scene.tif"  # GDAL follows nothing


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/redirect-away/scene.tif", InvalidScene, r"redirects to another host \(localhost:\d+\)"),
        ("/forbidden/scene.tif", InvalidScene, r"access denied \(HTTP 403\)"),
        ("/missing.tif", InvalidScene, r"not found \(HTTP 404\)"),
        ("/no-range/scene.tif", InvalidScene, r"the server ignores HTTP Range requests"),
        ("/page.tif", InvalidScene, r"not a GeoTIFF: the file is an XML or HTML document"),
        ("/empty.tif", InvalidScene, r"the file is empty"),
        ("/scene.png", InvalidScene, r"only GeoTIFFs are read from URLs"),
    ],
)
def test_a_bad_url_is_refused_naming_it_and_the_problem(
    served: RangeServer, landsat_model: ModelPackage, path: str, error: type[Exception], message: str
) -> None:
    url = served.url + path
    with pytest.raises(error, match=re.escape(url) + ": " + message):
        open_scene(url, landsat_model.card)


def test_an_unreachable_host_is_its_own_error(landsat_model: ModelPackage) -> None:
    url = f"http://127.0.0.1:{free_port()}/scene.tif"
    with pytest.raises(SceneUnreachable, match=re.escape(url) + ": unreachable"):
        open_scene(url, landsat_model.card)


def test_a_remote_header_claiming_too_many_pixels_is_refused_before_pixels_are_read(
    served: RangeServer, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    claims_huge(osbs_tif, served.root / "huge.tif")  # 12 kB of pixels, a header claiming 10^12
    url = f"{served.url}/huge.tif"
    with pytest.raises(SceneTooLarge, match=re.escape(url) + ": header claims 1,000,000 x 1,000,000"):
        open_scene(url, rgb_model.card)


def test_aws_endpoint_url_becomes_gdals_s3_endpoint() -> None:
    assert sources.s3_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}) == {
        "AWS_S3_ENDPOINT": "127.0.0.1:9000", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"
    }
    https = sources.s3_options({"AWS_ENDPOINT_URL_S3": "https://s3.example.org/", "AWS_ENDPOINT_URL": "x"})
    assert https["AWS_S3_ENDPOINT"] == "s3.example.org" and https["AWS_HTTPS"] == "YES"
    # GDAL's own name wins.
    assert sources.s3_options({"AWS_ENDPOINT_URL": "http://a", "AWS_S3_ENDPOINT": "b"}) == {}
    assert sources.s3_options({}) == {}


def test_an_s3_scene_reads_the_same_pixels_as_the_file(
    aws_env: S3Server, landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    remote = _every_row("s3://scenes/nc/scene.tif", landsat_model)
    local = _every_row(str(landsat_tif), landsat_model)
    assert np.array_equal(remote[0], local[0]) and np.array_equal(remote[1], local[1])
    with pytest.raises(InvalidScene, match=r"s3://scenes/nc/nothing.tif: no such object in the bucket"):
        open_scene("s3://scenes/nc/nothing.tif", landsat_model.card)
    with pytest.raises(InvalidScene, match=r"s3://scenes/: an s3:// URL names a bucket and a key"):
        open_scene("s3://scenes/", landsat_model.card)


# --- the command line, end to end ---------------------------------------------------------------------------
def _predict(scene: str, model: ModelPackage, out: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", scene, "--model", str(model.path),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


def _same_layers(a: Path, b: Path) -> None:
    for name in LAYERS:
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            assert x.transform == y.transform and x.crs == y.crs
            assert np.array_equal(x.read(), y.read()), name


def test_predict_over_http_gives_the_local_layers(
    served: RangeServer, landsat_model: ModelPackage, landsat_reference: Path, tmp_path: Path
) -> None:
    done = _predict(f"{served.url}/scene.tif", landsat_model, tmp_path)
    assert done.returncode == 0, done.stderr
    _same_layers(tmp_path, landsat_reference)
    assert '"scene": "http://127.0.0.1' in (tmp_path / "report.json").read_text()


def test_predict_from_s3_gives_the_local_layers(
    s3: S3Server, landsat_model: ModelPackage, landsat_reference: Path, tmp_path: Path
) -> None:
    done = _predict("s3://scenes/nc/scene.tif", landsat_model, tmp_path, s3.env)
    assert done.returncode == 0, done.stderr
    _same_layers(tmp_path, landsat_reference)


def test_predict_of_a_bad_url_exits_2_with_one_line(served: RangeServer, landsat_model: ModelPackage,
                                                     tmp_path: Path) -> None:
    done = _predict(f"{served.url}/forbidden/scene.tif", landsat_model, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"spikescan: error: {served.url}/forbidden/scene.tif: access denied (HTTP 403)"
    )
