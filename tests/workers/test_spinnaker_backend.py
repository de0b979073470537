"""The spinnaker backend refuses cleanly without a board, and writes sPyNNaker's config for one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikescan.config import Settings
from spikescan.errors import BackendUnavailable
from workers.backends.spinnaker import board_config


def test_cli_refuses_without_a_board(tmp_path: Path, landsat_tif: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPIKESCAN_SPINN") and k != "SPIKESCAN_SPALLOC_SERVER"
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikescan.cli",
            "predict",
            str(landsat_tif),
            "--model",
            "landcover-landsat",
            "--out",
            str(out),
            "--backend",
            "spinnaker",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SPIKESCAN_SPINNAKER_MACHINE" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_board_config_names_the_machine_or_spalloc() -> None:
    with pytest.raises(BackendUnavailable):
        board_config(Settings())
    machine = board_config(Settings(spinnaker_machine="192.168.240.1"))
    assert "machine_name = 192.168.240.1" in machine and "virtual_board" not in machine
    spalloc = board_config(Settings(spalloc_server="http://spalloc.example:8080", spalloc_user="me"))
    assert "spalloc_server = http://spalloc.example:8080" in spalloc and "spalloc_user = me" in spalloc
