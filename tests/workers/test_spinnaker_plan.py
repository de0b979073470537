"""The planner's copy count is what sPyNNaker's virtual-board mapping places, and one more copy fails.

These run the real sPyNNaker toolchain (partitioning, placement, routing) on a virtual 48-chip board in a
private workspace; nothing reads or writes the user's home directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_plan_map_agrees_with_spynnaker(model: str, tmp_path: Path) -> None:
    env = {**os.environ, "SPIKESCAN_DATA_DIR": str(tmp_path), "HOME": str(tmp_path / "user-home")}
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "plan", "--model", model, "--map"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert plan["copies_per_board"] >= 1
    assert plan["projected_patches_per_s"] > 0 and plan["energy_per_patch_j"] > 0
    mapping = plan["mapping"]
    assert mapping["copies_placed"] == plan["copies"], mapping
    assert mapping["next_fails"] and mapping["next_failure"] == "placement", mapping
    assert mapping["agrees"] is True
    assert mapping["application_cores"] == plan["copies"] * plan["cores_per_copy"] + plan["shared_cores"]
    # The user's home was never touched: sPyNNaker's config lives in the project's workspace.
    assert not (tmp_path / "user-home" / ".spynnaker.cfg").exists()
    assert (tmp_path / "spinnaker" / "home" / ".spynnaker.cfg").is_file()


def test_board_weights_read_back_run_in_the_emulator(tmp_path: Path) -> None:
    from models import package
    from spikescan.config import Settings
    from workers.spinnaker.planner import board_weight_agreement

    report = board_weight_agreement(
        package.load("landcover-landsat"), Settings(data_dir=tmp_path), patches=200
    )
    assert report["patches"] == 200
    assert 0 < report["board_step"] <= 1
    assert report["class_agreement"] >= 0.95, report
