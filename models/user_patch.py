"""The scan patch of a user's model from the scale of its labels, when ``--patch`` is not given.

The labels' scale is the median, over the label file's usable features, of each feature's bounding-box
longer side in model pixels (in the first scene's CRS, at ``--gsd``; a detection point counts its box side).

* **segmentation**: that size, rounded up to a multiple of 4, within 8..32 px: a chip covers a typical
  labelled polygon. The output is per pixel and the candidate networks see 3-7 px (3x3 convolutions), so a
  larger chip buys nothing but neurons: at 32 px a copy takes four times the cores it takes at 16.
* **detection**: twice that size, rounded up to a multiple of 4 (the output cell), within 24..64 px. The scan
  steps by half a patch, so an object no wider than half a patch lies wholly inside at least one chip (and
  a training window); 24 is about the smallest candidate's receptive field (23 px), and at 64 the tree net
  (192 cores a copy) no longer fits the default budget while the two smaller candidates still do.
* **the SpiNNaker budget**: neurons per copy grow with the square of the patch, so where the smallest
  candidate network would not fit ``--max-cores-per-copy`` at the rule's patch, the patch shrinks 4 px at a
  time until it does (or reaches the lower bound, where the architecture search refuses the budget).

The card's ``training.patch_from_labels`` records the rule, the median size and the patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import shapely
from pyproj import CRS

from models.user_images import TrainingImage
from models.user_labels import to_crs

STEP = 4  # the detection output cell; segmentation uses it too so the half-patch scan stride stays even


@dataclass(frozen=True)
class Rule:
    times: float  # patch = times x the median label size, before rounding and bounds
    lo: int
    hi: int
    text: str


RULES = {
    "segmentation": Rule(1.0, 8, 32, "median labelled polygon's bounding-box longer side in model pixels, "
                                     "rounded up to a multiple of 4, within 8..32"),
    "detection": Rule(2.0, 24, 64, "twice the median object's bounding-box longer side (a point: its box "
                                   "side) in model pixels, rounded up to a multiple of 4, within 24..64: "
                                   "at the half-patch scan stride such an object lies wholly in a chip"),
}


@dataclass(frozen=True)
class PatchChoice:
    task: str
    median_size_px: float
    from_labels: int  # the rule's patch (after the budget check)
    given: int | None  # --patch, which wins
    capped_from: int | None = None  # the rule's patch before the budget check shrank it
    max_cores_per_copy: int | None = None

    @property
    def patch(self) -> int:
        return self.given if self.given is not None else self.from_labels

    def note(self) -> dict[str, object]:
        out: dict[str, object] = {"rule": RULES[self.task].text,
                                  "median_size_px": round(self.median_size_px, 2), "patch": self.from_labels}
        if self.capped_from is not None:
            out["budget"] = (f"shrunk from {self.capped_from} px so the smallest candidate network fits "
                             f"--max-cores-per-copy {self.max_cores_per_copy}")
        if self.given is not None:
            out["overridden_by"] = f"--patch {self.given}"
        return out


def median_size_px(geometries: np.ndarray, crs: CRS, scene_crs: CRS, gsd_m: float,
                   sides_m: np.ndarray | None = None) -> float:
    """The median feature's bounding-box longer side in model pixels; ``sides_m`` (NaN: use the geometry)
    gives points their box side in metres."""
    bounds = shapely.bounds(to_crs(geometries, crs, scene_crs))
    metres = scene_crs.axis_info[0].unit_conversion_factor
    longer = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) * metres
    if sides_m is not None:
        longer = np.where(np.isnan(sides_m), longer, sides_m)
    return float(np.median(longer)) / gsd_m


def for_labels(task: str, geometries: np.ndarray, crs: CRS, first: TrainingImage, gsd_m: float,
               given: int | None, sides_m: np.ndarray | None = None) -> PatchChoice:
    """The rule's patch for labels ``geometries`` (in ``crs``), measured in the first image's CRS."""
    with first.opened() as src:
        scene_crs = CRS.from_user_input(src.crs)
    return choose(task, median_size_px(geometries, crs, scene_crs, gsd_m, sides_m), given)


def choose(task: str, median_px: float, given: int | None) -> PatchChoice:
    rule = RULES[task]
    patch = STEP * math.ceil(rule.times * median_px / STEP)
    return PatchChoice(task, median_px, int(min(max(patch, rule.lo), rule.hi)), given)


def fit_budget(choice: PatchChoice, cores_at: Callable[[int], int], max_cores: int) -> PatchChoice:
    """``choice`` with the rule's patch shrunk until ``cores_at(patch)`` (the smallest candidate network's
    cores per copy) is within ``max_cores``; an explicit ``--patch`` is left as given."""
    if choice.given is not None:
        return choice
    patch, lo = choice.from_labels, RULES[choice.task].lo
    while patch > lo and cores_at(patch) > max_cores:
        patch -= STEP
    if patch == choice.from_labels:
        return choice
    return replace(choice, from_labels=patch, capped_from=choice.from_labels, max_cores_per_copy=max_cores)
