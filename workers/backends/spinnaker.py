"""The ``spinnaker`` backend: N tiled copies of the network on a real SpiNNaker board through sPyNNaker.

How many copies: the planner's count for the configured boards (``spikescan plan``: cores and chips' SDRAM).
Patches go in as spike-source arrays, a batch of ``copies`` patches per timestep, and output spikes come back
recorded; the decoding is the one the NEST backend uses (``pynn_backend.py``), which NEST and the tests
exercise. ``shared_side`` 2 builds the shared input layout (``workers/spinnaker/shared_input.py``): a batch
whose chips come in squares of neighbouring chips sends each pixel once per square; any other batch still
computes exactly, a time slot per patch.

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
from workers.spinnaker.planner import fit_copies, fit_shared_copies
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

    def __init__(self, package: ModelPackage, settings: Settings | None = None, shared_side: int = 0) -> None:
        self.settings = settings or get_settings()
        self._cfg = board_config(self.settings)  # refuse before touching anything
        net, boards = describe(package), self.settings.spinnaker_boards
        if shared_side > 1:
            copies = fit_shared_copies(net, package.card.patch_size, boards, shared_side)
        else:
            copies = fit_copies(net, boards)[0]
        super().__init__(package, copies=copies, shared_side=shared_side)

    def _setup_simulator(self) -> ModuleType:
        workspace = Workspace.for_settings(self.settings)
        workspace.prepare(self._cfg)
        os.environ["HOME"] = str(workspace.root / "home")
        os.chdir(workspace.root / "run")
        sim = import_simulator("pyNN.spiNNaker", "spinnaker", "spinnaker")
        sim.setup(timestep=1.0, n_boards_required=self.settings.spinnaker_boards)
        return sim  # type: ignore[no-any-return]
