"""Box matching behind `spikescan evaluate`, and the held-out images it reads."""

from __future__ import annotations

from pathlib import Path

import rasterio

from models.evaluate import held_out_trees, match_boxes


def test_match_is_one_to_one_and_respects_iou() -> None:
    truth = [(0, 0, 10, 10), (20, 0, 30, 10)]
    predicted = [
        ((0, 0, 10, 10), 0.9),  # perfect
        ((1, 0, 11, 10), 0.8),  # IoU 0.82 with a box already taken: cannot match twice
        ((20, 0, 26, 10), 0.7),  # IoU 0.6 with the second box
        ((50, 50, 60, 60), 0.6),  # nothing there
    ]
    m = match_boxes(predicted, truth)
    assert (m.predicted, m.truth, m.matched) == (4, 2, 2)
    assert m.precision == 0.5 and m.recall == 1.0
    assert abs(m.f1 - 2 / 3) < 1e-9


def test_iou_below_threshold_does_not_match() -> None:
    # IoU of (0,0,10,10) with (0,0,10,3.9) is 0.39.
    assert match_boxes([((0, 0, 10, 3.9), 1.0)], [(0, 0, 10, 10)]).matched == 0
    assert match_boxes([((0, 0, 10, 4.0), 1.0)], [(0, 0, 10, 10)]).matched == 1


def test_held_out_images_are_georeferenced_with_their_boxes(tmp_path: Path) -> None:
    items = {h.name: h for h in held_out_trees(tmp_path)}
    assert len(items["OSBS_029"].truth) == 61
    assert len(items["SOAP_061"].truth) == 37
    for h in items.values():
        with rasterio.open(h.scene) as src:
            assert src.crs is not None and src.count >= 3
            assert abs(src.res[0] - 0.1) < 1e-9
            assert all(0 <= b[0] < b[2] <= src.width and 0 <= b[1] < b[3] <= src.height for b in h.truth)


def _fold(pkg, directory: Path, holdout: list[str]):  # type: ignore[no-untyped-def]
    from models import package

    card = pkg.card.model_copy(update={"training": {**pkg.card.training, "holdout": holdout}})
    return package.save(card, pkg.weights, directory)


def test_a_fold_that_trained_on_the_image_is_refused(rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from models.evaluate import evaluate_trees
    from spikescan.errors import InvalidInput

    fold = _fold(rgb_model, tmp_path / "fold", ["SOAP_061"])
    with pytest.raises(InvalidInput, match="does not hold OSBS_029 out"):
        evaluate_trees(fold.path, tmp_path / "work", folds={"OSBS_029": fold.path})


def test_fold_figures_stand_next_to_both_baselines(rgb_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from models.evaluate import bootstrap_f1, evaluate_trees, headline

    fold = _fold(rgb_model, tmp_path / "fold", ["OSBS_029"])
    result = evaluate_trees(fold.path, tmp_path / "work", folds={"OSBS_029": fold.path})
    per = result["folds"]["OSBS_029"]  # type: ignore[index]
    for name in ("model", "excess_green", "grid"):
        scores = per[name]
        assert scores["truth"] == 61
        low, high = scores["f1_95ci"]
        assert low <= scores["f1"] <= high
        assert result["pooled"][name]["f1"] == scores["f1"]  # type: ignore[index]
    assert per["grid"]["predicted"] == (400 // 40) ** 2  # 4 m median training crown at 0.1 m: 10 x 10 boxes
    assert per["fold_model"]["trained_on"] == [
        "2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "SOAP_061"]
    # Excess green finds OSBS's pines on bright sand (data.md: 0.54-0.63): the baseline is not a straw man.
    assert per["excess_green"]["f1"] > 0.45
    assert "leave-one-site-out" in headline(result)
    # Resampling identical blocks gives no spread at all; a spread needs blocks that differ.
    import numpy as np

    assert bootstrap_f1([np.array([[2.0, 2.0, 1.0]] * 4)]) == [0.5, 0.5]
