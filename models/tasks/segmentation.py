"""Segmentation: a class per output cell; regions of the target classes as polygons.

Labels are per-cell classes (-1 unlabelled); cell metrics are overall accuracy, per-class recall and the
confusion matrix; the vector output is ``models.tasks.regions.RegionStream``: every connected region of a
target class as one polygon (holes kept), merged across strips without seams.
"""

from __future__ import annotations

import numpy as np

from models import metrics
from models.tasks.base import Footprint, Task, VectorOutput, VectorParams


class SegmentationTask(Task):
    name = "segmentation"

    def vector_output(self, footprint: Footprint, params: VectorParams | None = None) -> VectorOutput:
        from models.tasks.regions import RegionStream

        return RegionStream(self.card, footprint)

    def score_cells(self, truth: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
        return metrics.classification_report(truth, predicted, self.card.classes)

    def headline(self, scores: dict[str, object]) -> str:
        return f"overall accuracy {scores['overall_accuracy']:.2f} (spatially held-out test split, spiking)"
