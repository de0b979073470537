"""Detection: one box per object, from the peaks of the mosaicked object-score map.

Labels are object centres in size bins (``models.datasets``); cell metrics are precision/recall of the
target classes taken together (an object-centre cell is right whichever size bin it names); the vector
output is ``models.tasks.peaks`` on the mosaic's strips; the peak threshold is chosen on validation score maps
here (``choose_min_score``); box-level matching (IoU ≥ 0.4) lives in ``models.evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from shapely.geometry import box as shapely_box

from models import metrics
from models.card import ModelCard
from models.tasks.base import CellFeature, Footprint, Task, VectorParams
from models.tasks.peaks import Box, PeakSpec, PeakStream


def peak_spec(card: ModelCard, cell_m: float, params: VectorParams | None = None) -> PeakSpec:
    """The card's peak settings in cells of ``cell_m`` metres, with the run's overrides."""
    d = card.detection
    params = params or VectorParams()
    return PeakSpec(
        targets=tuple(card.class_index(c) for c in card.target_classes),
        sides=tuple(s / cell_m for s in d.sides_m),
        sigma=d.sigma_cells,
        min_score=d.min_score if params.min_score is None else params.min_score,
        nms_iou=d.nms_iou if params.nms_iou is None else params.nms_iou,
        radius=d.peak_radius,
    )


class BoxOutput:
    """The detection task's ``VectorOutput``: boxes as features, decided strip by strip."""

    def __init__(self, card: ModelCard, footprint: Footprint, params: VectorParams | None) -> None:
        self.label = card.detection.label or card.target_classes[0]
        self.cell_m = footprint.cell_m
        spec = peak_spec(card, footprint.cell_m, params)
        self._stream = PeakStream(spec, (footprint.width, footprint.height))

    def feed(self, y0: int, scores: np.ndarray, valid: np.ndarray) -> Iterator[CellFeature]:
        return map(self._feature, self._stream.feed(y0, scores, valid))

    def close(self) -> Iterator[CellFeature]:
        return map(self._feature, self._stream.close())

    def _feature(self, b: Box) -> CellFeature:
        return CellFeature(shapely_box(b.x0, b.y0, b.x1, b.y1), self.label, b.score)


class DetectionTask(Task):
    name = "detection"

    def vector_output(self, footprint: Footprint, params: VectorParams | None = None) -> BoxOutput:
        return BoxOutput(self.card, footprint, params)

    def score_cells(self, truth: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
        """Object-centre cells (any target class) against background, over labelled cells."""
        targets = [self.card.class_index(c) for c in self.card.target_classes]
        as_object = np.isin(predicted, targets).astype(np.int16)
        t = np.where(truth >= 0, np.isin(truth, targets), -1).astype(np.int16)
        return dict(metrics.binary_report(t, as_object, 1))

    def headline(self, scores: dict[str, object]) -> str:
        return (f"object-centre cells P {scores['precision']:.2f} R {scores['recall']:.2f} "
                f"F1 {scores['f1']:.2f} (validation, spiking)")


@dataclass(frozen=True)
class LabelledMap:
    """A validation scene's mosaicked score map [rows, cols, classes] with its valid cells and true boxes
    (model pixels: x0, y0, x1, y1)."""

    name: str
    truth: list[tuple[float, ...]]
    scores: np.ndarray
    valid: np.ndarray


def map_boxes(card: ModelCard, scores: np.ndarray, valid: np.ndarray, params: VectorParams | None = None
              ) -> list[tuple[tuple[float, float, float, float], float]]:
    """Peak boxes of a whole score map in model pixels, with their scores (what ``BoxOutput`` streams)."""
    from models.tasks.peaks import pick_boxes

    s = card.output_stride
    spec = peak_spec(card, card.gsd_m * s, params)
    return [((b.x0 * s, b.y0 * s, b.x1 * s, b.y1 * s), b.score) for b in pick_boxes(scores, valid, spec)]


def box_table(card: ModelCard, maps: list[LabelledMap], min_scores: list[float]
              ) -> dict[float, dict[str, object]]:
    """Box P/R/F1 at IoU >= 0.4 per candidate ``min_score``, per scene and pooled."""
    from models.evaluate import Matching, match_boxes

    out: dict[float, dict[str, object]] = {}
    for ms in min_scores:
        per, total = {}, Matching(0, 0, 0)
        for m in maps:
            found = map_boxes(card, m.scores, m.valid, VectorParams(min_score=ms))
            matched = match_boxes(found, m.truth)  # type: ignore[arg-type]
            per[m.name] = matched.as_dict()
            total = total + matched
        out[ms] = {"images": per, "overall": total.as_dict()}
    return out


def choose_min_score(card: ModelCard, maps: list[LabelledMap], candidates: list[float]
                     ) -> tuple[ModelCard, dict[str, object]]:
    """The pooled box F1 on the validation maps decides (the lower threshold on a tie)."""
    table = box_table(card, maps, candidates)
    best = max(candidates, key=lambda ms: (table[ms]["overall"]["f1"], -ms))  # type: ignore[index]
    card = card.model_copy(update={"detection": card.detection.model_copy(update={"min_score": best})})
    return card, {"chosen_min_score": best, **table[best],
                  "f1_by_min_score": {str(ms): table[ms]["overall"]["f1"]  # type: ignore[index]
                                      for ms in candidates},
                  "how": "spiking package on the validation strips, workers.arrayscan chip grid + mosaic, "
                         "models.tasks.peaks, models.evaluate.match_boxes"}
