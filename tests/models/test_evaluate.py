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
