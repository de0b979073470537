"""The backend interface: the emulator backend computes what the emulator computes; others refuse clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.emulator import Emulator
from spikescan.errors import BackendUnavailable, InvalidInput
from workers.backends import get_backend
from workers.chips import ChipGrid
from workers.scene import open_scene


def test_emulator_backend_on_real_chips(osbs_tif: Path, rgb_model) -> None:  # type: ignore[no-untyped-def]
    with open_scene(osbs_tif, rgb_model.card) as scene:
        batch = scene.read_chip_row(
            ChipGrid(scene.width, scene.height, 48, 24, 4), 7
        )  # bottom row: has padding
    with get_backend("emulator", rgb_model) as backend:
        result = backend.infer(batch.pixels, batch.valid)
        assert backend.copies == 1 and backend.energy_per_chip_j is None
    direct = Emulator(rgb_model).run(batch.pixels, batch.valid)
    np.testing.assert_array_equal(result.scores, direct.scores)
    np.testing.assert_array_equal(result.spikes, direct.spikes_per_layer.sum(axis=1))
    assert result.scores.shape == (len(batch), 12, 12, 2)
    assert np.allclose(result.scores.sum(axis=-1), 1, atol=1e-5)


def test_spinnaker_without_a_board_says_so(rgb_model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendUnavailable, match="backend 'spinnaker'"):
        get_backend("spinnaker", rgb_model)


def test_unknown_backend(rgb_model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="unknown backend 'gpu'"):
        get_backend("gpu", rgb_model)
