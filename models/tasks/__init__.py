"""Task plug-ins: one module per task (labels, metrics, vector output, evaluation); ``for_card`` picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.tasks.base import CellFeature, Footprint, Task, VectorOutput, VectorParams

if TYPE_CHECKING:
    from models.card import ModelCard

__all__ = ["CellFeature", "Footprint", "Task", "VectorOutput", "VectorParams", "for_card"]


def for_card(card: ModelCard) -> Task:
    """The task plug-in of a model card (importing the modules registers them)."""
    from models.tasks import detection, segmentation  # noqa: F401 - registration by import

    try:
        return Task.registry[card.task](card)
    except KeyError:
        from spikescan.errors import ModelPackageError

        raise ModelPackageError(f"{card.name}: no task plug-in for task {card.task!r}") from None
