"""What every PyNN-simulated backend shares: encode, run through the tiled copies, decode.

Subclasses only say how to set their simulator up and which sign convention its inhibitory weights use.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from models.emulator import softmax
from models.network import output_grid
from models.package import ModelPackage
from models.pynn_net import describe, input_spikes
from spikescan.errors import BackendUnavailable
from workers.backends.base import Backend, BatchResult
from workers.backends.pynn_build import Connect, TiledNetwork, build, pynn_connect, run_patches
from workers.spinnaker.shared_input import block_for
from workers.spinnaker.strip_input import strip_for


@contextlib.contextmanager
def quiet_pynn() -> Iterator[None]:
    """PyNN 0.13 calls NEST 3.10's deprecated Get/SetStatus and logs that NEST has no initial ``v``; both are
    about PyNN's internals, not our network, and would otherwise flood every batch's output."""
    pynn_log = logging.getLogger("PyNN")
    level = pynn_log.level
    pynn_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"\s*(Set|Get)Status\(\) is deprecated", UserWarning)
            yield
    finally:
        pynn_log.setLevel(level)


def import_simulator(module: str, backend: str, extra: str) -> ModuleType:
    """``pyNN.<simulator>`` imported without its banner and its warnings about optional extensions we do not
    use; a missing install becomes BackendUnavailable naming the extra to install."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend '{backend}' needs the {extra} extra (pip install 'spikescan[{extra}]'): {exc}"
        ) from None


class PyNNBackend(Backend):
    negative_inhibitory: bool = True
    exact_weight_bounds: bool = False  # see pynn_build.build
    connect: Connect = staticmethod(pynn_connect)  # type: ignore[assignment]

    def __init__(
        self,
        package: ModelPackage,
        copies: int = 1,
        weights: dict[str, np.ndarray] | None = None,
        shared_side: int = 0,
        strip_copies: int = 0,
    ) -> None:
        """``shared_side`` > 1: blocks of ``shared_side``² copies share one input population
        (``workers/spinnaker/shared_input.py``); a batch in block order sends each pixel once per block.
        ``strip_copies`` > 0: strips of that many copies sweep the scene, one input band per step
        (``workers/spinnaker/strip_input.py``); a batch in strip order sends each pixel once."""
        super().__init__(package)
        self.sim = self._setup_simulator()
        self.net = describe(package, weights)
        block = block_for(self.net, package.card.patch_size, shared_side) if shared_side > 1 else None
        strip = strip_for(self.net, package.card.patch_size, strip_copies) if strip_copies > 0 else None
        with quiet_pynn():
            self.tiled: TiledNetwork = build(
                self.sim,
                self.net,
                copies,
                negative_inhibitory=self.negative_inhibitory,
                connect=self.connect,
                exact_weight_bounds=self.exact_weight_bounds,
                shared_block=block,
                strip=strip,
            )
        self._copies = copies
        self._layers = [p.name for p in self.net.populations if not p.is_source]
        owner = np.asarray(package.card.population_code.owner)
        self._onehot = (owner[:, None] == np.arange(len(package.card.classes))).astype(np.int32)

    @abstractmethod
    def _setup_simulator(self) -> ModuleType:
        """The ``pyNN.<simulator>`` module, already ``setup()`` with a 1 ms timestep."""

    @property
    def copies(self) -> int:
        return self._copies

    def batch_size_for(self, default: int, chips_per_row: int) -> int:
        """With strips, whole bands of ``strip.copies`` chip rows per batch (the nearest multiple of one to
        ``default``, at least one): the batch path finds the columns of neighbouring chips in a batch by
        content, and a batch that cuts a band of rows short leaves the strip's lower copies idle."""
        strip = self.tiled.strip
        if strip is None:
            return default
        band = strip.copies * max(1, chips_per_row)
        return band * max(1, round(default / band))

    def layer_spikes(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The input's and every layer's spikes, [N, size] per population name (for the cross-check); the
        input in the network's own code (one-hot levels where exact, see ``models/pynn_net.py``)."""
        spikes = input_spikes(self.net, pixels, self.package.card.encoding, valid)
        with quiet_pynn():
            return {"input": spikes, **run_patches(self.tiled, spikes, self._layers)}

    def infer(self, pixels: np.ndarray, valid: np.ndarray) -> BatchResult:
        return self.decode(self.layer_spikes(pixels, valid))

    def decode(self, layers: dict[str, np.ndarray]) -> BatchResult:
        """Class scores and spike totals from ``layer_spikes``' output."""
        card = self.package.card
        cy, cx = output_grid(card)
        out = layers[self.net.output].reshape(-1, cy, cx, self._onehot.shape[0]).astype(np.int32)
        total = sum(v.sum(axis=1, dtype=np.int64) for v in layers.values())
        return BatchResult(
            softmax(out @ self._onehot, card.population_code.beta), np.asarray(total, dtype=np.int64)
        )

    def close(self) -> None:
        self.sim.end()
