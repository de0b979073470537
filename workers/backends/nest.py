"""The ``nest`` backend: the same PyNN network on the NEST simulator, an independent check of the emulator.

NEST runs on a 1 ms grid with ``spike_precision="on_grid"`` so PyNN's ``IF_curr_delta`` becomes NEST's
grid-based ``iaf_psc_delta`` (its default, the precise-timing ``iaf_psc_delta_ps``, needs a refractory time of
at least one resolution step, which would stop a neuron firing for two patches in a row). NEST wants
inhibitory current weights negative: a positive one on the inhibitory receptor silently excites.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

from workers.backends.pynn_backend import PyNNBackend, import_simulator


def nest_bulk_connect(sim: ModuleType, pre: Any, post: Any, table: np.ndarray, receptor: str) -> None:
    """The same synapses PyNN's FromListConnector makes, in one NEST call instead of one per neuron (PyNN 0.13
    spends minutes on the trees model's 6 M synapses that way). NEST's ``iaf_psc_delta`` has one receptor; the
    weight's sign (negative for inhibitory rows, see ``negative_inhibitory``) is what inhibits."""
    import nest

    src = np.asarray(pre.node_collection.tolist(), dtype=np.int64)[table[:, 0].astype(np.int64)]
    dst = np.asarray(post.node_collection.tolist(), dtype=np.int64)[table[:, 1].astype(np.int64)]
    nest.Connect(
        src,
        dst,
        "one_to_one",
        {"synapse_model": "static_synapse", "weight": table[:, 2], "delay": table[:, 3]},
    )


class NestBackend(PyNNBackend):
    name = "nest"
    negative_inhibitory = True
    connect = staticmethod(nest_bulk_connect)

    def _setup_simulator(self) -> ModuleType:
        os.environ.setdefault("PYNEST_QUIET", "1")
        sim = import_simulator("pyNN.nest", "nest", "nest")
        sim.setup(timestep=1.0, min_delay=1.0, spike_precision="on_grid")
        return sim  # type: ignore[no-any-return]
