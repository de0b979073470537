"""Fixtures for tests/models: the shipped packages, copies of them to damage, held-out real patches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models import datasets, package, train  # noqa: E402
from models.card import ModelCard  # noqa: E402

SHIPPED = ("landcover-landsat", "trees-rgb")


@pytest.fixture(scope="session", params=SHIPPED)
def shipped(request: pytest.FixtureRequest) -> package.ModelPackage:
    return package.load(request.param)


@pytest.fixture(scope="session")
def landcover() -> package.ModelPackage:
    return package.load("landcover-landsat")


@pytest.fixture()
def package_copy(tmp_path: Path, landcover: package.ModelPackage) -> Path:
    """A private copy of a shipped package, safe to damage."""
    assert landcover.path is not None
    target = tmp_path / "pkg"
    shutil.copytree(landcover.path, target)
    return target


def held_out_scenes(card: ModelCard) -> list[datasets.Scene]:
    """The test imagery the card's metrics come from (labels restricted to the held-out cells)."""
    return datasets.prepare(train.load_recipe(card.name)).test


@pytest.fixture(scope="session")
def real_patches(shipped: package.ModelPackage) -> np.ndarray:
    """At least 1000 real patches of the shipped model's held-out imagery."""
    return train.held_out_patches(shipped.card, held_out_scenes(shipped.card), 1000)
