"""Each edge names the user's options its own way: the CLI's flags, the API's request fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from models.package import ModelPackage
from spikescan.errors import OPTIONS, BandMismatch, option, render
from workers.scene import open_scene


def test_an_option_is_a_flag_for_the_cli_and_a_field_for_the_api() -> None:
    text = f"set {option('bands')} to 3 numbers, or {option('scale', 0.0039)}"
    assert render(text, "cli") == "set --bands to 3 numbers, or --scale 0.0039"
    assert render(text, "api") == "set field `bands` to 3 numbers, or field `scale` = 0.0039"


def test_every_option_has_both_spellings_and_an_unknown_one_is_a_programming_error() -> None:
    assert all(flag.startswith("--") and field.isidentifier() for flag, field in OPTIONS.values())
    with pytest.raises(KeyError):
        option("band")


def test_a_seven_band_scene_is_told_the_api_field_or_the_cli_flag(
    tmp_path: Path, rgb_model: ModelPackage
) -> None:
    card = rgb_model.card
    path = tmp_path / "seven.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 7, "dtype": "uint8",
               "crs": "EPSG:32617", "transform": Affine(card.gsd_m, 0, 4e5, 0, -card.gsd_m, 3e6)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((7, 8, 8), np.uint8))
    with pytest.raises(BandMismatch) as info:
        open_scene(path, rgb_model.card)
    assert "set --bands to 3 1-based band numbers" in info.value.message
    assert "set field `bands` to 3" in info.value.for_api() and "--" not in info.value.for_api()
    assert str(info.value) == info.value.message  # logs and tracebacks read like the CLI
