"""The ``spinnaker`` backend: N tiled copies of the network on a real SpiNNaker board through sPyNNaker.

How many copies: the planner's count for the configured boards (``spikescan plan``: cores and chips' SDRAM).
Patches go in as spike-source arrays, a batch of ``copies`` patches per timestep, and output spikes come back
recorded; the decoding is the one the NEST backend uses (``pynn_backend.py``), which NEST and the tests
exercise. By default it builds the layout the plan's headline figures are for (``planner.build_layout``):
strips of copies sweeping one input band per step (``workers/spinnaker/strip_input.py``) when they project
most, which they do for both shipped models. The batch path finds columns of neighbouring chips in a batch
by content and the pipeline hands over whole bands of chip rows (``batch_size_for``), so each pixel is sent
about once; any other batch still computes exactly. ``shared_side`` 2 builds 2 x 2 blocks instead.

Without hardware nothing here can run spikes: sPyNNaker's virtual board maps and builds weights but loads
nothing. So the backend refuses with a clear message unless a board (``SPIKESCAN_SPINNAKER_MACHINE``) or a
spalloc server (``SPIKESCAN_SPALLOC_SERVER``) is configured. sPyNNaker runs in this (worker) process, with
HOME and the working directory pointed at the project's own workspace, where its config is written.
"""

from __future__ import annotations

import os
from types import ModuleType

from models.package import ModelPackage
from models.pynn_net import describe
from spikescan.config import Settings, get_settings
from spikescan.errors import BackendUnavailable
from workers.backends.pynn_backend import PyNNBackend, import_simulator
from workers.spinnaker.planner import (
    BuildLayout,
    build_layout,
    fit_copies,
    fit_shared_copies,
    fit_strip_copies,
    plan,
)
from workers.spinnaker.workspace import Workspace


def board_config(settings: Settings) -> str:
    """The spynnaker.cfg for the configured hardware; refuses when none is configured."""
    if settings.spinnaker_machine:
        machine = f"machine_name = {settings.spinnaker_machine}\nversion = 5\n"
    elif settings.spalloc_server:
        machine = f"spalloc_server = {settings.spalloc_server}\nspalloc_user = {settings.spalloc_user}\n"
    else:
        raise BackendUnavailable(
            "backend 'spinnaker' needs a SpiNNaker board: set SPIKESCAN_SPINNAKER_MACHINE to the board's "
            "address or SPIKESCAN_SPALLOC_SERVER to a spalloc server (see docs/spinnaker.md); "
            "--backend emulator computes the same spikes on the CPU"
        )
    return f"[Machine]\n{machine}\n[Mode]\nmode = Production\n"


class SpinnakerBackend(PyNNBackend):
    name = "spinnaker"
    negative_inhibitory = False  # sPyNNaker takes magnitudes on the inhibitory receptor
    exact_weight_bounds = True

    def __init__(self, package: ModelPackage, settings: Settings | None = None,
                 shared_side: int | None = None, strip_copies: int | None = None) -> None:
        """Without ``shared_side`` / ``strip_copies`` the backend builds the layout ``spikescan plan``
        reports as its headline (``planner.build_layout``: strips when they project most), so the plan's
        figures are for the network that runs; either one given builds that layout instead (0: per-copy)."""
        self.settings = settings or get_settings()
        self._cfg = board_config(self.settings)  # refuse before touching anything
        net, boards = describe(package), self.settings.spinnaker_boards
        if shared_side is None and strip_copies is None:
            layout = build_layout(plan(package, boards))  # measures the sample patches: seconds
        elif strip_copies:
            copies = fit_strip_copies(net, package.card.patch_size, boards, strip_copies)
            layout = BuildLayout("strips", copies, strip_copies=strip_copies)
        elif shared_side and shared_side > 1:
            copies = fit_shared_copies(net, package.card.patch_size, boards, shared_side)
            layout = BuildLayout("2x2 blocks", copies, shared_side=shared_side)
        else:
            layout = BuildLayout("per-copy input", fit_copies(net, boards)[0])
        self.layout = layout
        super().__init__(package, copies=layout.copies, shared_side=layout.shared_side,
                         strip_copies=layout.strip_copies)

    def _setup_simulator(self) -> ModuleType:
        workspace = Workspace.for_settings(self.settings)
        workspace.prepare(self._cfg)
        os.environ["HOME"] = str(workspace.root / "home")
        os.chdir(workspace.root / "run")
        sim = import_simulator("pyNN.spiNNaker", "spinnaker", "spinnaker")
        sim.setup(timestep=1.0, n_boards_required=self.settings.spinnaker_boards)
        return sim  # type: ignore[no-any-return]
