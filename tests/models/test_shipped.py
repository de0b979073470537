"""The shipped cards are complete, consistent with their networks, and their spiking metrics reproduce."""

from __future__ import annotations

import json

import numpy as np

from models import datasets, train
from models.network import count_synapses, layer_shapes, output_grid
from models.package import ModelPackage
from spikescan.data import SOURCES

REQUIRED = ("float_unsharpened", "keras_sharpened_float_weights", "spiking", "emulator_keras_agreement",
            "board_class_agreement", "spikes_per_patch", "neurons_per_copy", "synapses_per_copy", "headline")


def test_card_reports_everything(shipped: ModelPackage) -> None:
    m = shipped.card.metrics
    missing = [k for k in REQUIRED if k not in m]
    assert not missing, f"{shipped.name}: card lacks {missing}"
    assert m["emulator_keras_agreement"]["patches_identical"] == 1.0  # type: ignore[index]
    assert m["emulator_keras_agreement"]["patches"] >= 1000  # type: ignore[index]
    assert isinstance(m["headline"], str) and m["headline"]


def test_card_counts_match_the_network(shipped: ModelPackage) -> None:
    card = shipped.card
    assert card.metrics["synapses_per_copy"] == count_synapses(card)
    neurons = sum(ls.neurons for ls in layer_shapes(card) if ls.layer.kind != "flatten")
    assert card.metrics["neurons_per_copy"] == neurons <= 25_000
    assert output_grid(card) == (card.output_cells, card.output_cells)
    assert card.receptive_field_px == train.receptive_field(card)
    assert card.fixed_point.weight_step == 2.0 ** -6


def test_card_provenance_names_pinned_data_and_the_command(shipped: ModelPackage) -> None:
    t = shipped.card.training
    assert str(t["command"]).startswith(f"spikescan train {shipped.name}")
    for entry in t["data"]:  # type: ignore[union-attr]
        source = next(s for s in SOURCES.values() if s.requirement == entry["package"])
        assert entry["sha256"] == source.sha256 and entry["licence"] == source.licence
    assert {"seed", "epochs", "wall_time_s", "software"} <= set(t)


def test_spiking_metrics_in_the_card_are_reproduced_by_the_emulator(shipped: ModelPackage) -> None:
    scenes = datasets.prepare(train.load_recipe(shipped.name)).test
    again = train.evaluate(shipped.card, scenes, train.emulator_predictor(shipped))
    # The emulator is exact, so the numbers are identical, not merely close (JSON round-trips floats).
    assert json.loads(json.dumps(again)) == shipped.card.metrics["spiking"]


def test_the_model_beats_the_majority_class(shipped: ModelPackage) -> None:
    scenes = datasets.prepare(train.load_recipe(shipped.name)).test
    labels = np.concatenate([s.labels[s.labels >= 0] for s in scenes])
    spiking = shipped.card.metrics["spiking"]
    if shipped.card.task == "detection":
        assert spiking["f1"] > 2 * labels.mean() / (1 + labels.mean())  # type: ignore[index]  # all-crown F1
    else:
        assert spiking["overall_accuracy"] > np.bincount(labels).max() / len(labels)  # type: ignore[index]
