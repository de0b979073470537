"""The network for a user's segmentation model, chosen to fit a SpiNNaker core budget per copy.

Candidates run from the shipped land-cover net (two 3x3 convolutions of 16 and 24 filters) down to one small
layer. Each is counted the way ``spikescan plan`` counts a package (``workers.spinnaker.planner``: every
population split into cores by sPyNNaker's rules), on *dense* weights: a trained network's zero weights only
drop synapses, so the count is an upper bound the trained package stays within. The largest candidate
within the budget is used; the card records every candidate's count.
"""

from __future__ import annotations

import numpy as np

from models import package
from models.card import ModelCard
from models.network import layer_shapes, weight_shape
from spikescan.errors import InvalidInput

APP_CORES_PER_BOARD = 759  # as workers.spinnaker.planner; one core is shared by all copies (the clock)
DEFAULT_COPIES = 4
DEFAULT_MAX_CORES = (APP_CORES_PER_BOARD - 1) // DEFAULT_COPIES

CANDIDATES: list[list[int]] = [[16, 24], [12, 16], [8, 12], [8]]


def layers(filters: list[int]) -> list[dict[str, object]]:
    convs: list[dict[str, object]] = [
        {"name": f"conv{i + 1}", "kind": "conv2d", "filters": f, "kernel": 3, "stride": 1, "padding": "same"}
        for i, f in enumerate(filters)]
    out = {"name": "out", "kind": "conv2d", "filters": 0, "kernel": 1, "stride": 1, "padding": "same"}
    return [*convs, out]


def cores_per_copy(card: ModelCard) -> int:
    """Upper bound of the cores one copy of ``card``'s network takes (dense weights)."""
    from models.pynn_net import describe
    from workers.spinnaker.planner import cores_by_population

    dense = {}
    for ls in layer_shapes(card):
        if ls.layer.has_weights:
            shape = weight_shape(ls)
            dense[f"{ls.layer.name}.w"] = np.ones(shape, np.int32)
            dense[f"{ls.layer.name}.b"] = np.zeros(shape[-1:], np.int32)
    return sum(cores_by_population(describe(package.from_parts(card, dense))).values())


def choose(make_card, max_cores: int,  # type: ignore[no-untyped-def]
           candidates: list[tuple[list[int], list[dict[str, object]]]] | None = None
           ) -> tuple[list[dict[str, object]], dict[str, object]]:
    """The largest candidate within ``max_cores``; ``make_card(layers)`` builds a card for a layer list.
    ``candidates`` (filters, layer list), largest first, replaces the segmentation candidates."""
    counted = []
    for filters, spec in candidates or [(f, layers(f)) for f in CANDIDATES]:
        cores = cores_per_copy(make_card(spec))
        counted.append({"conv_filters": filters, "cores_per_copy_at_most": cores})
        if cores <= max_cores:
            return spec, {"chosen": filters, "max_cores_per_copy": max_cores,
                          "copies_per_board_at_least": (APP_CORES_PER_BOARD - 1) // cores,
                          "candidates": counted,
                          "rule": "the largest candidate whose dense-weight core count fits the budget"}
    smallest = counted[-1]["cores_per_copy_at_most"]
    raise InvalidInput(f"--max-cores-per-copy {max_cores} is too small: the smallest network needs "
                       f"{smallest} cores per copy (fewer bands or classes need fewer)")
