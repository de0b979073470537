"""The weights a SpiNNaker board would really hold, read back from sPyNNaker, as emulator weights.

sPyNNaker turns each weight into a fixed-point integer with a power-of-two step chosen per population and
receptor from the weights and input statistics it sees (the "ring-buffer shift"). A virtual-board run builds
those synaptic matrices exactly as they would be loaded; ``Projection.get("weight")`` then returns them.
This module maps every returned synapse back to the package array entry it came from (conv kernels are
shared by every position, biases come from the clock source), checks that each entry got one value
everywhere, undoes the one-hot input's cumulative first-layer weights (the differences of the board's prefix
sums are the thermometer weights that make the emulator compute the same input sums), and expresses all of
them as integers on the finest power-of-two step that holds them, so
``Emulator(pkg, weights, weight_step)`` computes exactly what the board would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from models.package import ModelPackage
from models.pynn_net import describe
from spikescan.config import Settings
from spikescan.errors import BackendUnavailable
from workers.spinnaker.workspace import Workspace

WEIGHTS_TIMEOUT_S = 1800.0


def read_back(pkg: ModelPackage, settings: Settings) -> dict[str, np.ndarray]:
    """Float board weights per package array (``<layer>.w`` / ``<layer>.b``), from a virtual-board run."""
    if pkg.path is None:
        raise BackendUnavailable("reading board weights needs a model package on disk")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "board.npz"
        result = Workspace.for_settings(settings).run_child(
            "workers.spinnaker.mapping",
            ["--model", str(pkg.path), "--copies", "1", "--mode", "weights", "--weights-out", str(out)],
            WEIGHTS_TIMEOUT_S,
        )
        if not result.get("ok"):
            raise BackendUnavailable(f"sPyNNaker could not build the board's weights: {result.get('error')}")
        with np.load(out) as npz:
            got = {k: npz[k] for k in npz.files}
    return assemble(pkg, got)


def assemble(pkg: ModelPackage, got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    net = describe(pkg)
    values: dict[str, np.ndarray] = {k: np.zeros(v.shape, np.float64) for k, v in pkg.weights.items()}
    seen: dict[str, np.ndarray] = {k: np.zeros(v.size, bool) for k, v in pkg.weights.items()}
    for i, spec in enumerate(net.projections):
        if not spec.param or spec.param_index is None:
            continue
        rows = got[f"p{i}"]
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        if rows.shape[0] != spec.rows.shape[0] or not np.array_equal(rows[:, :2], spec.rows[:, :2]):
            raise BackendUnavailable(
                f"sPyNNaker returned other synapses than were built for {spec.pre}->{spec.post}"
            )
        signed = np.abs(rows[:, 2]) * (1.0 if spec.excitatory else -1.0)
        flat = values[spec.param].reshape(-1)
        first = ~seen[spec.param][spec.param_index]
        flat[spec.param_index[first]] = signed[first]
        if not np.allclose(flat[spec.param_index], signed, rtol=0, atol=1e-12):
            raise BackendUnavailable(
                f"the board holds different values for one shared weight of {spec.param}"
            )
        seen[spec.param][spec.param_index] = True
    if net.cumulative_param:
        values[net.cumulative_param] = per_level(values[net.cumulative_param], net.onehot_levels)
    return values


def per_level(cumulative: np.ndarray, levels: int) -> np.ndarray:
    """Inverse of ``models.encoding.cumulative_levels`` along the input-channel axis (last but one)."""
    axis = cumulative.ndim - 2
    moved = np.moveaxis(cumulative, axis, -1)
    shaped = moved.reshape(*moved.shape[:-1], -1, levels)
    diffs = np.diff(shaped, axis=-1, prepend=0.0)
    return np.moveaxis(diffs.reshape(moved.shape), -1, axis)


def on_grid(values: dict[str, np.ndarray], finest: int = 24) -> tuple[dict[str, np.ndarray], float]:
    """Integers and the coarsest power-of-two step that represents every value exactly."""
    for bits in range(finest + 1):
        step = 2.0**-bits
        if all(np.allclose(v / step, np.round(v / step), rtol=0, atol=1e-9) for v in values.values()):
            return {k: np.round(v / step).astype(np.int64) for k, v in values.items()}, step
    raise BackendUnavailable("board weights are not on a power-of-two grid")
