"""The spinnaker backend refuses cleanly without a board, and writes sPyNNaker's config for one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import package
from models.pynn_net import atoms_per_core, describe
from spikescan.config import Settings
from spikescan.errors import BackendUnavailable
from workers.backends.spinnaker import board_config
from workers.spinnaker import link, strip_input


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


def test_batch_injection_and_readout_run_on_the_virtual_board(tmp_path: Path) -> None:
    """The spinnaker backend's batch path — spike-source arrays for every copy, the shared
    clock, a run, recorded spikes read back and decoded per patch — runs through sPyNNaker on a virtual
    board. Such a board loads nothing, so the layers come back silent: this checks the path, not spikes."""
    from workers.spinnaker.workspace import Workspace

    result = Workspace(tmp_path / "spinnaker").run_child(
        "workers.spinnaker.mapping",
        ["--model", "landcover-landsat", "--copies", "2", "--mode", "inject"],
        timeout_s=900,
    )
    assert result["ok"], result
    assert result["patches"] == 5 and result["input_spikes_scheduled"] > 0
    assert result["input_spikes_loaded"] == result["input_spikes_scheduled"]  # unshared: every patch's own
    assert result["output_shapes"]["out"][0] == 5
    assert result["spikes_returned"] == 0  # a virtual board runs nothing


def test_backend_builds_the_layout_the_plan_headlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's headline figures are for a layout the spinnaker backend builds: by default the backend
    builds exactly that layout (copies, strips or blocks), and asks the pipeline for whole bands of chip
    rows when it is strips."""
    from models import package
    from workers.backends import spinnaker
    from workers.backends.pynn_backend import PyNNBackend
    from workers.spinnaker.planner import plan

    pkg = package.load("landcover-landsat")
    result = plan(pkg)
    built: dict[str, int] = {}
    monkeypatch.setattr(spinnaker, "plan", lambda *_: result)
    monkeypatch.setattr(PyNNBackend, "__init__", lambda self, package, **kw: built.update(kw))
    backend = spinnaker.SpinnakerBackend(pkg, Settings(spinnaker_machine="192.168.240.1"))
    assert result.layout in (result.layouts or {}) and backend.layout.name == result.layout
    assert built["copies"] == result.copies
    if result.layout.startswith("strips"):
        assert result.strip_input is not None
        assert built == {"copies": result.copies, "shared_side": 0,
                         "strip_copies": result.strip_input["strip_copies"]}
        assert result.copies == result.strip_input["copies"]
    explicit = spinnaker.SpinnakerBackend(pkg, Settings(spinnaker_machine="192.168.240.1"), shared_side=0)
    assert explicit.layout.name == "per-copy input" and built["copies"] == result.layouts["per-copy input"][
        "copies"]


def test_strip_backend_asks_for_whole_bands_of_chip_rows() -> None:
    from tests.models.test_pynn_net import CONV, _package
    from workers.backends.nest import NestBackend

    pkg = _package(CONV, 10, 2, 0)
    strip = NestBackend(pkg, copies=3, strip_copies=3)
    plain = NestBackend(pkg, copies=3)
    try:
        assert strip.batch_size_for(64, 10) == 60 and strip.batch_size_for(8, 10) == 30
        assert plain.batch_size_for(64, 10) == 64
    finally:
        strip.close()
        plain.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_shared_input_batch_path_on_the_virtual_board(tmp_path: Path) -> None:
    """The batch path with shared input blocks through sPyNNaker on a virtual board: 4 landcover copies in
    one block, 3 squares of neighbouring chips of the held-out scene. The spike-source arrays hold each
    pixel-band's spike once per square (fewer than the 12 patches' own), and every copy's input synapses,
    as sPyNNaker built them for the board and read back through the copy's window of its block, are the
    unshared description's rows of its own patch, weights included. ~8 min under load (reading back 5 M
    synapses); the fast tests in test_shared_input.py check the same on the description and on NEST."""
    from workers.spinnaker.workspace import Workspace

    result = Workspace(tmp_path / "spinnaker").run_child(
        "workers.spinnaker.mapping",
        ["--model", "landcover-landsat", "--copies", "4", "--shared-block", "2", "--mode", "inject"],
        timeout_s=1800,
    )
    assert result["ok"], result
    assert result["patches"] == 12 and result["time_slots"] == 3
    assert 0 < result["input_spikes_loaded"] < 0.7 * result["input_spikes_scheduled"]
    assert result["connectivity"]["equal"] and result["connectivity"]["synapses_checked"] > 0
    assert result["output_shapes"]["out"][0] == 12 and result["spikes_returned"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_strip_input_batch_path_on_the_virtual_board(tmp_path: Path) -> None:
    """The batch path with strip input through sPyNNaker on a virtual board: one strip of 3 landcover
    copies, the top strip of chip rows of the held-out scene in strip order (61 columns). Its top piece is
    nodata, so one spike-source population gets no spike in the batch, which sPyNNaker 7.4.1's density check
    turned into an IndexError before ``_set_spike_times`` gave such a source the empty form. The arrays hold
    each pixel-band's spike once per sweep (about (n + 1) / (4 n) of the patches' own), and every copy's
    input synapses read back from the board build, delays included, are its own rows re-indexed. ~2 min."""
    from workers.spinnaker.workspace import Workspace

    result = Workspace(tmp_path / "spinnaker").run_child(
        "workers.spinnaker.mapping",
        ["--model", "landcover-landsat", "--copies", "3", "--strip", "3", "--mode", "inject"],
        timeout_s=1200,
    )
    assert result["ok"], result
    columns = result["patches"] // 3
    # One warm-up band before the sweep; one silent slot after it (the shared output's right neighbours).
    assert result["patches"] == 3 * columns and result["time_slots"] == columns + 2
    assert 0 < result["input_spikes_loaded"] < 0.4 * result["input_spikes_scheduled"]
    assert result["connectivity"]["equal"] and result["connectivity"]["synapses_checked"] > 0
    assert result["output_shapes"]["out"][0] == result["patches"] and result["spikes_returned"] == 0
    # sPyNNaker records 12 of the 16 columns of output cells, in the bytes per step the planner counts.
    net = describe(package.load("landcover-landsat"))
    share = strip_input.output_share(net, strip_input.strip_for(net, 16, 3))
    assert share is not None and result["output_record_bytes_per_step"]["neurons"] == 16 * 12 * 21
    framed = link.recorded_bytes_per_step(16 * 16 * 21, atoms_per_core(net, "out", 256), share.recorded())
    raw = framed * link.MESSAGE_MAX_BYTES / (link.MESSAGE_MAX_BYTES + link.WIRE_OVERHEAD_BYTES)
    assert result["output_record_bytes_per_step"]["bytes"] == round(raw)


@pytest.mark.parametrize("argv", [["serve"], ["worker", "--backend", "spinnaker"]])
def test_serve_and_worker_refuse_spinnaker_without_a_board_at_start(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKESCAN_")}
    env["SPIKESCAN_BACKEND"] = "spinnaker"
    done = subprocess.run([sys.executable, "-m", "spikescan.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2
    assert "needs a SpiNNaker board" in done.stderr
