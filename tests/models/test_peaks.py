"""Peak picking: objects from a score map, strip by strip exactly as on the whole map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.evaluate import held_out_trees, match_boxes
from models.tasks.peaks import Box, PeakSpec, PeakStream, iou, pick_boxes


def _random_map(seed: int, h: int = 97, w: int = 83) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.zeros((h, w, 4), np.float32)
    for k in (1, 2, 3):
        marks = np.zeros((h, w))
        marks.flat[rng.integers(0, h * w, 40)] = 1
        scores[..., k] = np.clip(ndimage.gaussian_filter(marks, 1.5) * 12, 0, 1)
    scores[..., 0] = 1 - scores[..., 1:].sum(-1).clip(0, 1)
    valid = np.ones((h, w), bool)
    valid[:, :5] = False
    valid[60:70, 40:] = False
    return scores, valid


def _stream(scores: np.ndarray, valid: np.ndarray, spec: PeakSpec, heights: list[int],
            footprint: tuple[float, float]) -> list[Box]:
    stream, found, y = PeakStream(spec, footprint), [], 0
    for h in heights:
        found += list(stream.feed(y, scores[y:y + h], valid[y:y + h]))
        y += h
    assert y == valid.shape[0]
    return found + list(stream.close())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("heights", [[97], [1] * 97, [6, 6, 7, 1, 13, 6, 6, 6, 20, 26], [48, 49]])
def test_strips_give_exactly_the_boxes_of_the_whole_map(seed: int, heights: list[int]) -> None:
    scores, valid = _random_map(seed)
    spec = PeakSpec((1, 2, 3), (3.0, 5.0, 8.0), sigma=1.0, min_score=0.2, nms_iou=0.3)
    footprint = (82.7, 96.3)
    whole = pick_boxes(scores, valid, spec, footprint)
    streamed = _stream(scores, valid, spec, heights, footprint)
    key = lambda b: (b.row, b.col)  # noqa: E731
    assert len(whole) > 10
    assert sorted(streamed, key=key) == sorted(whole, key=key)


def test_boxes_stay_inside_the_footprint_and_valid_data_and_do_not_overlap() -> None:
    scores, valid = _random_map(3)
    spec = PeakSpec((1, 2, 3), (3.0, 5.0, 8.0), sigma=1.0, min_score=0.2, nms_iou=0.3)
    boxes = pick_boxes(scores, valid, spec, (80.5, 90.25))
    assert boxes
    for b in boxes:
        assert 0 <= b.x0 < b.x1 <= 80.5 and 0 <= b.y0 < b.y1 <= 90.25
        assert valid[int(b.y0):int(np.ceil(b.y1)), int(b.x0):int(np.ceil(b.x1))].any()
        assert b.x0 >= 5  # the invalid left margin is clipped off
    assert all(iou(a, b) <= 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_suppression_works_across_a_strip_seam() -> None:
    """Two peaks on either side of a strip boundary, one box apart by less than its size: one survives,
    whether the map arrives whole or split between them."""
    h, w = 40, 30
    scores = np.zeros((h, w, 2), np.float32)
    scores[19, 15, 1], scores[21, 15, 1] = 0.9, 0.8  # rows 19 and 21; the strips meet at row 20
    scores[..., 0] = 1 - scores[..., 1]
    valid = np.ones((h, w), bool)
    spec = PeakSpec((1,), (6.0,), sigma=0.0, min_score=0.5, nms_iou=0.3)
    whole = pick_boxes(scores, valid, spec)
    streamed = _stream(scores, valid, spec, [20, 20], (30.0, 40.0))
    assert [(b.row, b.col) for b in whole] == [(b.row, b.col) for b in streamed] == [(19, 15)]
    loose = PeakSpec((1,), (6.0,), sigma=0.0, min_score=0.5, nms_iou=0.9)
    assert len(_stream(scores, valid, loose, [20, 20], (30.0, 40.0))) == 2  # the IoU threshold decides


def test_true_labels_round_trip_to_the_truth_boxes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Centre cells marked in the right size bin, on the real OSBS_029 crowns (0.8 m cells of a 0.1 m image):
    the boxes that come back match the hand-drawn ones at IoU >= 0.4."""
    osbs = next(h for h in held_out_trees(tmp_path) if h.name == "OSBS_029")
    cell_px, bins = 8, np.array([30.0, 45.0])  # source pixels: < 3 m, 3-4.5 m, larger
    sides_px = (20.0, 37.0, 55.0)
    h = w = 400 // cell_px
    scores = np.zeros((h, w, 4), np.float32)
    for x0, y0, x1, y1 in osbs.truth:
        size = ((x1 - x0) + (y1 - y0)) / 2
        r, c = int((y0 + y1) / 2 // cell_px), int((x0 + x1) / 2 // cell_px)
        scores[r, c, 1 + int(np.searchsorted(bins, size))] = 1.0
    scores[..., 0] = 1 - scores[..., 1:].sum(-1)
    spec = PeakSpec((1, 2, 3), tuple(s / cell_px for s in sides_px), sigma=0.0, min_score=0.5, nms_iou=0.9)
    boxes = pick_boxes(scores, np.ones((h, w), bool), spec)
    predicted = [((b.x0 * cell_px, b.y0 * cell_px, b.x1 * cell_px, b.y1 * cell_px), b.score) for b in boxes]
    m = match_boxes(predicted, osbs.truth)
    assert m.predicted <= len(osbs.truth)  # two crowns can share a centre cell, never more boxes than crowns
    assert m.f1 >= 0.85, m.as_dict()


def test_min_score_is_chosen_where_validation_boxes_score_best(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """True OSBS_029 crown centres at 0.9 plus isolated false peaks at 0.3: of the candidate thresholds the
    one between them wins (0.2 keeps the false peaks, 0.95 finds nothing), and the card carries it."""
    from models import package
    from models.tasks.detection import LabelledMap, choose_min_score

    card = package.load("trees-rgb").card
    card = card.model_copy(update={"detection": card.detection.model_copy(update={"sigma_cells": 0.0})})
    osbs = next(h for h in held_out_trees(tmp_path) if h.name == "OSBS_029")
    model_px = card.gsd_m / 0.1  # source pixels (0.1 m) per model pixel
    cell_px = card.output_stride * model_px
    h = w = int(400 // cell_px)
    scores = np.zeros((h, w, 4), np.float32)
    for x0, y0, x1, y1 in osbs.truth:
        scores[int((y0 + y1) / 2 // cell_px), int((x0 + x1) / 2 // cell_px), 2] = 0.9
    far = ndimage.binary_dilation(scores[..., 2] > 0, iterations=4)
    rng = np.random.default_rng(0)
    free = np.flatnonzero(~far)
    scores[..., 1].flat[rng.choice(free, 25, replace=False)] = 0.3
    scores[..., 0] = 1 - scores[..., 1:].sum(-1)
    truth = [tuple(v / model_px for v in b) for b in osbs.truth]
    labelled = [LabelledMap("OSBS_029", truth, scores, np.ones((h, w), bool))]
    chosen, report = choose_min_score(card, labelled, [0.2, 0.5, 0.95])
    assert chosen.detection.min_score == 0.5 == report["chosen_min_score"]
    f1 = report["f1_by_min_score"]
    assert f1["0.5"] > f1["0.2"] and f1["0.95"] == 0.0, f1
