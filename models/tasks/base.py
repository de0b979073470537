"""What every task plug-in provides, and the vector-output protocol the mosaic feeds.

A task (detection, segmentation, ...) owns everything that differs between kinds of model: how labels are
made, how held-out predictions are scored, and how the mosaicked score map becomes vector features. The
raster path (chip grid → backend → mosaic → COGs) is the same for every task; the task only sees the
blended score strips as the mosaic hands them out, top to bottom.

Coordinates of a ``CellFeature`` are *output cells* of the job's grid: x = column, y = row, (0, 0) the
top-left corner of the first cell; the writer in ``workers.vectors`` maps them through the output transform
to the scene's CRS and then to lon/lat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from shapely.geometry.base import BaseGeometry

if TYPE_CHECKING:
    from models.card import ModelCard


@dataclass(frozen=True)
class CellFeature:
    """One vector answer in output-cell coordinates."""

    geometry: BaseGeometry
    class_name: str
    score: float
    properties: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorParams:
    """Run-time overrides of the card's vector settings (``predict --min-score/--nms-iou``, API fields)."""

    min_score: float | None = None
    nms_iou: float | None = None


@dataclass(frozen=True)
class Footprint:
    """The scene in output cells: its width and height (fractional when the scene is not a whole number of
    cells) and the size of one cell in metres of the model's ground sample distance."""

    width: float
    height: float
    cell_m: float


class VectorOutput(Protocol):
    """Consumes the mosaic's strips top to bottom; yields features as soon as they are final."""

    def feed(self, y0: int, scores: np.ndarray, valid: np.ndarray) -> Iterator[CellFeature]:
        """``scores`` float32 [h, w, classes] of output rows ``y0 .. y0+h``; ``valid`` bool [h, w]."""
        ...

    def close(self) -> Iterator[CellFeature]:
        """Everything still pending once the last strip was fed."""
        ...


class Task(ABC):
    """One kind of model. Subclasses register themselves by ``name`` (the card's ``task`` field)."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Task]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            Task.registry[cls.name] = cls

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @abstractmethod
    def vector_output(self, footprint: Footprint, params: VectorParams | None = None) -> VectorOutput:
        """A fresh strip consumer for one job."""

    @abstractmethod
    def score_cells(self, truth: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
        """Per-cell held-out scores (labels -1 are ignored)."""

    @abstractmethod
    def headline(self, metrics: dict[str, object]) -> str:
        """One line for the card and ``spikescan models``."""
