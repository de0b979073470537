"""Recipes, card construction and a short real training run through the same code as `spikescan train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from models import datasets, package, train
from models.network import count_synapses
from spikescan.cli import main as cli_main
from spikescan.errors import InvalidInput


def test_unknown_recipe_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="unknown recipe 'nope'.*landcover-landsat"):
        train.load_recipe("nope")


def test_broken_recipe_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("{nope")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        train.load_recipe(str(bad))


def test_cli_reports_a_bad_recipe_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "no-such-recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_receptive_field_grows_with_kernels_and_strides() -> None:
    recipe = train.load_recipe("trees-rgb")
    recipe["layers"] = [
        {"name": "a", "kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
        {"name": "b", "kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
        {"name": "c", "kind": "conv2d", "filters": 4, "kernel": 5, "stride": 1, "padding": "same"},
        {"name": "d", "kind": "conv2d", "filters": 4, "kernel": 3, "stride": 1, "padding": "same"},
        {"name": "out", "kind": "conv2d", "filters": 0, "kernel": 1, "stride": 1, "padding": "same"},
    ]
    card = train.make_card(recipe, [[float(k) for k in range(8)]] * 3, seed=1)
    # Each k x k layer adds (k - 1) x (product of the strides below it): 1 + 2 + 2*2 + 4*4 + 2*4.
    assert card.receptive_field_px == 31
    n_classes = len(recipe["classes"])
    assert len(card.population_code.owner) == n_classes * recipe["neurons_per_class"]
    assert card.layers[-1].filters == n_classes * recipe["neurons_per_class"]


def test_recipes_choose_a_fixed_or_an_adaptive_schedule() -> None:
    from models.whetstone import AdaptiveSchedule, FixedSchedule

    recipe = {"float_epochs": 5, "sharp_epochs": 2, "sharpen": {"kind": "fixed", "epochs_per_layer": 1.5}}
    schedule, last = train.sharpening_schedule(recipe, 3)
    assert isinstance(schedule, FixedSchedule) and schedule.start_epoch == 5 and last == 5 + 5 + 2
    recipe["sharpen"] = {"kind": "adaptive", "step": 0.25, "patience": 3, "tolerance": 0.2, "max_epochs": 40}
    schedule, last = train.sharpening_schedule(recipe, 3)
    assert isinstance(schedule, AdaptiveSchedule) and schedule.step == 0.25 and last == 45


def test_output_bias_offset_moves_only_the_named_class_neurons() -> None:
    import numpy as np

    pkg = package.load("trees-rgb")
    moved = train.offset_output_biases(dict(pkg.weights), pkg.card, {"crown_medium": -3})
    owner = np.asarray(pkg.card.population_code.owner)
    crown = owner == pkg.card.class_index("crown_medium")
    delta = moved["out.b"] - pkg.weights["out.b"]
    assert (delta[crown] == -3).all() and (delta[~crown] == 0).all()
    assert train.offset_output_biases(dict(pkg.weights), pkg.card, {}) is not None


@pytest.mark.tf
def test_short_training_run_writes_a_valid_measured_package(tmp_path: Path) -> None:
    recipe = train.load_recipe("landcover-landsat")
    recipe.update(float_epochs=1, sharp_epochs=0, sharpen={"kind": "fixed", "epochs_per_layer": 0.34},
                  check_patches=200)
    short = tmp_path / "short.json"
    short.write_text(json.dumps(recipe))
    out = tmp_path / "pkg"
    assert train.main(argparse.Namespace(recipe=str(short), out=str(out), seed=5)) == 0
    pkg = package.load(out)
    m = pkg.card.metrics
    assert m["emulator_keras_agreement"]["patches_identical"] == 1.0  # type: ignore[index]
    assert m["synapses_per_copy"] == count_synapses(pkg.card)
    for key in ("float_unsharpened", "keras_sharpened_float_weights", "spiking", "board_class_agreement",
                "spikes_per_patch", "neurons_per_copy", "headline"):
        assert key in m
    assert pkg.card.training["seed"] == 5 and pkg.card.training["epochs"] == 3


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", ["landcover-landsat", "trees-rgb"])
def test_training_reproduces_the_shipped_card(name: str, tmp_path: Path) -> None:
    """`spikescan train NAME` from scratch gives the shipped card's held-out metrics (training is seeded
    and TensorFlow runs with op determinism, so on the same software they match exactly)."""
    shipped = package.load(name)
    assert cli_main(["train", name, "--out", str(tmp_path / name)]) == 0
    again = package.load(tmp_path / name)
    for key in ("spiking", "float_unsharpened"):
        ours, theirs = again.card.metrics[key], shipped.card.metrics[key]
        score = "f1" if shipped.card.task == "detection" else "overall_accuracy"
        assert ours[score] == pytest.approx(theirs[score], abs=0.03), key  # type: ignore[index]


@pytest.mark.tf
@pytest.mark.parametrize("fold", ["trees-rgb", "trees-rgb/folds/holdout-OSBS_029"])
def test_detection_threshold_table_in_the_card_is_what_tuning_gives(fold: str) -> None:
    """Re-running the peak-threshold choice on the package's own validation strips (same holdout) gives the
    card's recorded table and threshold: the card's validation figures come from the shipped code path."""
    from models.package import ZOO

    pkg = package.load(ZOO / fold)
    recipe = train.load_recipe("trees-rgb")
    prepared = datasets.prepare(recipe, tuple(pkg.card.training["holdout"]))  # type: ignore[arg-type]
    card, tuned = train.tune_detection(pkg, prepared.test, [float(v) for v in recipe["tune_min_score"]])
    recorded = pkg.card.metrics["validation_boxes_iou40"]
    assert card.detection.min_score == pkg.card.detection.min_score == tuned["chosen_min_score"]
    assert tuned["f1_by_min_score"] == recorded["f1_by_min_score"]  # type: ignore[index]
    assert tuned["overall"] == recorded["overall"]  # type: ignore[index]
