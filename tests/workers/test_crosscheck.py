"""NEST, an independent simulator, agrees with the emulator on real patches of both shipped models."""

from __future__ import annotations

import pytest

from models import package
from workers.crosscheck import crosscheck


@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_nest_agrees_with_emulator_on_200_real_patches(model: str) -> None:
    result = crosscheck(package.load(model), "nest", 200)
    assert result["patches"] == 200
    assert result["class_agreement"] >= 0.99
    # The semantics are exact on both sides (integer-grid weights, delta synapses, one step per layer).
    assert result["spike_agreement"] == 1.0
    assert result["input_code"] == "one-hot levels"  # NEST was fed one spike per pixel-band
