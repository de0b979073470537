"""Why the leave-one-site-out tree figures stop where they do: hindsight sweeps on the held-out images.

Run from the repository: ``.venv/bin/python docs/analysis/tree_cues.py``. Every figure here uses the held-out
image's own truth to choose a setting, so none is a held-out score; they bound what a setting could reach.
It reads the shipped fold packages (``models/zoo/trees-rgb/folds``), runs each on the image it never saw
through ``spikescan predict``'s code path, and prints

1. box F1 (IoU >= 0.4) of the fold model for every peak threshold: the best in hindsight;
2. box F1 of the fold model's crown score fused with excess-green, ``w * model + (1 - w) * ExG / 0.15``,
   for weights w (the same peak picking, one medium box side): what mixing the two cues could reach;
3. box F1 at looser IoU thresholds: how many crowns are found at all, against how many are boxed well.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import baselines  # noqa: E402
from models import evaluate as ev  # noqa: E402
from models import package as model_package  # noqa: E402
from models.tasks.peaks import PeakSpec, pick_boxes  # noqa: E402
from workers import pipeline  # noqa: E402

FOLDS = Path(__file__).resolve().parents[2] / "models" / "zoo" / "trees-rgb" / "folds"
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)
WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)
EXG_SCALE = 0.15  # excess-green of a green crown cell is ~0.1-0.2: this puts it on the model's 0-1 scale


def boxes(score: np.ndarray, spec: PeakSpec, cell_px: int) -> list:
    valid = np.ones(score.shape[:2], bool)
    return [((b.x0 * cell_px, b.y0 * cell_px, b.x1 * cell_px, b.y1 * cell_px), b.score)
            for b in pick_boxes(score, valid, spec)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sites = ev.site_images(work)
        for image in ("OSBS_029", "SOAP_061"):
            fold = model_package.load(FOLDS / f"holdout-{image}")
            item, pixels = sites[image]
            pipeline.run(item.scene, fold, work / image, quiet=True)
            with rasterio.open(work / image / "scores.tif") as src:
                scores = src.read(list(range(1, len(fold.card.classes) + 1))).transpose(1, 2, 0) / 255.0
            cell_m = fold.card.gsd_m * fold.card.output_stride
            cell_px = int(round(cell_m / ev.NEON_PIXEL_M))
            sides = tuple(s / cell_m for s in fold.card.detection.sides_m)
            targets = tuple(fold.card.class_index(c) for c in fold.card.target_classes)
            d = fold.card.detection
            print(f"\n{image} (fold model trained without it)")
            row = []
            for ms in THRESHOLDS:
                spec = PeakSpec(targets, sides, d.sigma_cells, ms, d.nms_iou, d.peak_radius)
                row.append(f"{ms}: {ev.match_boxes(boxes(scores, spec, cell_px), item.truth).f1:.2f}")
            print("  1. model, F1 by min_score:", ", ".join(row), f"(card's: {d.min_score})")
            crown = np.clip(scores[..., list(targets)].sum(axis=-1), 0, 1)
            exg = np.clip(baselines.excess_green_cells(pixels, cell_px)[0][..., 0] / EXG_SCALE, 0, 1)
            for w in WEIGHTS:
                fused = (w * crown + (1 - w) * exg)[..., None]
                best = max(
                    (ev.match_boxes(boxes(fused, PeakSpec((0,), (sides[1],), 1.0, ms, d.nms_iou), cell_px),
                                    item.truth).f1, ms)
                    for ms in (0.1, 0.2, 0.3, 0.4, 0.5)
                )
                print(f"  2. fused w={w}: best F1 {best[0]:.2f} (min_score {best[1]})")
            spec = PeakSpec(targets, sides, d.sigma_cells, 0.3, d.nms_iou, d.peak_radius)
            found = boxes(scores, spec, cell_px)
            loose = ", ".join(f"IoU {t}: {ev.match_boxes(found, item.truth, t).f1:.2f}"
                              for t in (0.05, 0.2, 0.4))
            print(f"  3. model at min_score 0.3, F1 by IoU threshold: {loose}")


if __name__ == "__main__":
    main()
