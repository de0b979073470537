"""Box-level evaluation of a detection model through the whole pipeline, on held-out images.

The figures a user cares about are those of the *final merged boxes* that ``detections.geojson`` carries, so
this runs ``spikescan predict``'s own code path on each held-out image, maps every returned box back to pixel
coordinates through the scene's transform, and matches it to the hand-drawn boxes at IoU >= 0.4 (the
threshold DeepForest evaluates with): each prediction, highest score first, takes the unmatched ground-truth
box it overlaps most. Precision = matched / predicted, recall = matched / ground truth.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from pyproj import Transformer
from rasterio.transform import Affine
from shapely import STRtree, box

from models import package as model_package
from models.package import ModelPackage
from spikescan import data
from spikescan.errors import InvalidInput

IOU_THRESHOLD = 0.4
# SOAP_061.png has no georeferencing. It is wrapped in a GeoTIFF at NEON's 0.1 m pixel size in UTM 11N (the
# SOAP site's zone) with a nominal origin; matching is in pixel space, so the origin cannot move a figure.
SOAP_CRS = "EPSG:32611"
SOAP_ORIGIN = (297000.0, 4100000.0)
NEON_PIXEL_M = 0.1

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels


@dataclass(frozen=True)
class HeldOut:
    name: str
    scene: Path
    truth: list[Box]


@dataclass(frozen=True)
class Matching:
    predicted: int
    truth: int
    matched: int

    def __add__(self, other: Matching) -> Matching:
        return Matching(self.predicted + other.predicted, self.truth + other.truth,
                        self.matched + other.matched)

    @property
    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 0.0

    @property
    def f1(self) -> float:
        return f1_score(self.predicted, self.truth, self.matched)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "predicted": self.predicted,
            "truth": self.truth,
            "matched": self.matched,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def f1_score(predicted: float, truth: float, matched: float) -> float:
    return 2 * matched / (predicted + truth) if predicted + truth else 0.0


@dataclass(frozen=True)
class MatchDetail:
    """Which predictions matched, and every box's centre: what a spatial bootstrap resamples."""

    matched: np.ndarray  # bool [n predicted]
    predicted_centres: np.ndarray  # [n predicted, 2] x, y
    truth_centres: np.ndarray  # [n truth, 2]

    @property
    def summary(self) -> Matching:
        return Matching(len(self.matched), len(self.truth_centres), int(self.matched.sum()))


def match_boxes(
    predicted: list[tuple[Box, float]], truth: list[Box], threshold: float = IOU_THRESHOLD
) -> Matching:
    """Greedy one-to-one matching by descending score; a spatial index keeps it near-linear."""
    return match_detail(predicted, truth, threshold).summary


def match_detail(
    predicted: list[tuple[Box, float]], truth: list[Box], threshold: float = IOU_THRESHOLD
) -> MatchDetail:
    truth_geoms = [box(*b) for b in truth]
    tree = STRtree(truth_geoms)
    taken = np.zeros(len(truth), dtype=bool)
    order = sorted(range(len(predicted)), key=lambda i: -predicted[i][1])
    hit = np.zeros(len(predicted), dtype=bool)
    for i in order:
        geom = box(*predicted[i][0])
        best, best_iou = -1, threshold
        for j in tree.query(geom):
            if taken[j]:
                continue
            inter = geom.intersection(truth_geoms[j]).area
            iou = inter / (geom.area + truth_geoms[j].area - inter)
            if iou >= best_iou:
                best, best_iou = int(j), iou
        if best >= 0:
            taken[best] = True
            hit[i] = True
    return MatchDetail(hit, _centres([p[0] for p in predicted]), _centres(truth))


def _centres(boxes: list[Box]) -> np.ndarray:
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2])


def held_out_trees(workdir: Path) -> list[HeldOut]:
    root = data.ensure("deepforest")
    with (root / "OSBS_029.csv").open() as fh:
        osbs = [tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")) for r in csv.DictReader(fh)]
    soap_scene = workdir / "SOAP_061.tif"
    _png_to_geotiff(root / "SOAP_061.png", soap_scene)
    return [
        HeldOut("OSBS_029", root / "OSBS_029.tif", osbs),  # type: ignore[arg-type]
        HeldOut("SOAP_061", soap_scene, _voc_boxes(root / "SOAP_061.xml")),
    ]


def _voc_boxes(path: Path) -> list[Box]:
    out = []
    for obj in ET.parse(path).getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is not None:
            out.append(tuple(float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out  # type: ignore[return-value]


def _png_to_geotiff(png: Path, dest: Path) -> None:
    with warnings.catch_warnings():
        # Expected: the PNG has no georeferencing, which is why it is being wrapped.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(png) as src:
            pixels = src.read()
    transform = Affine(NEON_PIXEL_M, 0, SOAP_ORIGIN[0], 0, -NEON_PIXEL_M, SOAP_ORIGIN[1])
    profile = {
        "driver": "GTiff",
        "width": pixels.shape[2],
        "height": pixels.shape[1],
        "count": 3,
        "dtype": pixels.dtype,
        "crs": SOAP_CRS,
        "transform": transform,
    }
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(pixels[:3])
        dst.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
        ]


def predicted_pixel_boxes(geojson: Path, scene: Path) -> list[tuple[Box, float]]:
    """Boxes of detections.geojson (EPSG:4326) back in the scene's pixel coordinates."""
    with rasterio.open(scene) as src:
        inverse, crs = ~src.transform, src.crs
    to_scene = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    out = []
    for feature in json.loads(geojson.read_text())["features"]:
        ring = feature["geometry"]["coordinates"][0]
        xs, ys = to_scene.transform([p[0] for p in ring], [p[1] for p in ring])
        cols, rows = zip(*(inverse * (x, y) for x, y in zip(xs, ys, strict=True)), strict=True)
        out.append(((min(cols), min(rows), max(cols), max(rows)), float(feature["properties"]["score"])))
    return out


# --- leave-one-site-out ---------------------------------------------------------------------------------

BOOTSTRAP_BLOCK_PX = 100  # 10 m squares of a 0.1 m image: the unit a spatial bootstrap resamples
BOOTSTRAP_DRAWS = 2000
FOLDS_DIR = "folds"  # <package>/folds/holdout-<IMAGE>/: the fold packages a card's figures come from


def block_counts(detail: MatchDetail, width: float, height: float, block: float = BOOTSTRAP_BLOCK_PX
                 ) -> np.ndarray:
    """[blocks, 3] predicted, truth, matched per square block (a box counts where its centre lies)."""
    nx, ny = max(int(np.ceil(width / block)), 1), max(int(np.ceil(height / block)), 1)

    def index(centres: np.ndarray) -> np.ndarray:
        col = np.clip((centres[:, 0] // block).astype(int), 0, nx - 1)
        row = np.clip((centres[:, 1] // block).astype(int), 0, ny - 1)
        return row * nx + col

    pred_idx = index(detail.predicted_centres)
    counts = np.zeros((nx * ny, 3))
    np.add.at(counts[:, 0], pred_idx, 1)
    np.add.at(counts[:, 1], index(detail.truth_centres), 1)
    np.add.at(counts[:, 2], pred_idx[detail.matched], 1)
    return counts


def bootstrap_f1(blocks: list[np.ndarray], seed: int = 0) -> list[float]:
    """95 % interval of box F1 when each image's blocks are resampled with replacement (stratified by
    image), so an interval reflects how much the figure hangs on a few parts of few images."""
    rng = np.random.default_rng(seed)
    draws = np.zeros((BOOTSTRAP_DRAWS, 3))
    for counts in blocks:
        picks = rng.integers(0, len(counts), size=(BOOTSTRAP_DRAWS, len(counts)))
        draws += counts[picks].sum(axis=1)
    f1 = np.array([f1_score(*d) for d in draws])
    return [round(float(np.percentile(f1, 2.5)), 4), round(float(np.percentile(f1, 97.5)), 4)]


@dataclass(frozen=True)
class Scored:
    """One detector on one image: the match and its blocks."""

    detail: MatchDetail
    blocks: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {**self.detail.summary.as_dict(), "f1_95ci": bootstrap_f1([self.blocks])}


def _score(predicted: list[tuple[Box, float]], item: HeldOut, size: tuple[int, int]) -> Scored:
    detail = match_detail(predicted, item.truth)
    return Scored(detail, block_counts(detail, *size))


def site_images(workdir: Path) -> dict[str, tuple[HeldOut, np.ndarray]]:
    """Every annotated tree image: its scene (a GeoTIFF the pipeline reads), truth boxes and RGB pixels."""
    from models.datasets import read_rgb

    root = data.ensure("deepforest")
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[HeldOut, np.ndarray]] = {}
    for item in held_out_trees(workdir):
        out[item.name] = (item, read_rgb(item.scene))
    for stem in TREE_SITES:
        if stem not in out:
            png = root / f"{stem}.png"
            out[stem] = (HeldOut(stem, png, _voc_boxes(root / f"{stem}.xml")), read_rgb(png))
    return {stem: out[stem] for stem in TREE_SITES}


TREE_SITES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop",
              "OSBS_029", "SOAP_061")


def fold_packages(pkg: ModelPackage) -> dict[str, Path]:
    """The package's fold packages by held-out image, from ``<package>/folds/holdout-<IMAGE>/``."""
    root = pkg.path / FOLDS_DIR if pkg.path else None
    found = {}
    for image in ("OSBS_029", "SOAP_061"):
        if root is not None and (root / f"holdout-{image}" / "model.json").is_file():
            found[image] = root / f"holdout-{image}"
    if not found:
        raise InvalidInput(
            f"{pkg.name}: no fold packages under {root} — train them with `spikescan train {pkg.name} "
            f"--holdout OSBS_029 --out <package>/{FOLDS_DIR}/holdout-OSBS_029` (and SOAP_061), or pass --fold"
        )
    return found


def holdout_of(fold: ModelPackage) -> list[str]:
    value = fold.card.training.get("holdout", [])
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def evaluate_fold(image: str, fold_dir: Path, sites: dict[str, tuple[HeldOut, np.ndarray]], workdir: Path,
                  stride: int | None) -> dict[str, object]:
    """The fold's model and both baselines on the image the fold never saw."""
    from models import baselines
    from workers import pipeline

    fold = model_package.load(fold_dir)
    if image not in holdout_of(fold):
        raise InvalidInput(f"{fold_dir}: its card does not hold {image} out of training (training.holdout "
                           f"is {holdout_of(fold)}); scoring it there would not be a held-out figure")
    item, pixels = sites[image]
    size = (pixels.shape[1], pixels.shape[0])
    out = workdir / f"fold-{image}"
    pipeline.run(item.scene, fold, out, stride=stride, quiet=True)
    model = _score(predicted_pixel_boxes(out / "detections.geojson", item.scene), item, size)
    training = [baselines.LabelledImage(n, px, h.truth) for n, (h, px) in sites.items()
                if n not in holdout_of(fold)]
    side = baselines.median_side(training)
    cell_px = max(int(round(fold.card.gsd_m * fold.card.output_stride / NEON_PIXEL_M)), 1)
    exg = baselines.tune_excess_green(training, cell_px, side)
    exg_boxes = baselines.excess_green_boxes(pixels, cell_px, side, exg["min_score"], exg["sigma_cells"])
    scored = {"model": model, "excess_green": _score(exg_boxes, item, size),
              "grid": _score(baselines.grid_boxes(*size, side), item, size)}
    return {
        "fold_model": {"path": str(fold_dir), "id": fold.id, "holdout": holdout_of(fold),
                       "trained_on": [n for n, _ in sites.items() if n not in holdout_of(fold)]},
        **{name: s.as_dict() for name, s in scored.items()},
        "baseline_settings": {"median_side_px": round(side, 2), "excess_green": exg,
                              "from": "the fold's training images (median side, excess-green settings)"},
        "_blocks": {name: s.blocks for name, s in scored.items()},
    }


def evaluate_trees(model: str | Path, workdir: Path, stride: int | None = None,
                   folds: dict[str, Path] | None = None) -> dict[str, object]:
    """Leave-one-site-out box P/R/F1 (IoU >= 0.4) with 95 % intervals, next to the two baselines."""
    pkg = model_package.load(model)
    if pkg.card.task != "detection":
        raise InvalidInput(f"{pkg.name} is a {pkg.card.task} model; box evaluation needs a detection model")
    chosen = folds or fold_packages(pkg)
    sites = site_images(workdir)
    per_fold = {image: evaluate_fold(image, Path(d), sites, workdir, stride) for image, d in chosen.items()}
    pooled: dict[str, object] = {}
    for name in ("model", "excess_green", "grid"):
        total = Matching(0, 0, 0)
        for f in per_fold.values():
            part = f[name]
            assert isinstance(part, dict)
            total = total + Matching(int(part["predicted"]), int(part["truth"]), int(part["matched"]))
        blocks = [f["_blocks"][name] for f in per_fold.values()]  # type: ignore[index]
        pooled[name] = {**total.as_dict(), "f1_95ci": bootstrap_f1(blocks)}
    for f in per_fold.values():
        f.pop("_blocks")
    return {
        "protocol": "leave-one-site-out: each fold's model never saw its image (nor tuned on it); box "
                    f"IoU >= {IOU_THRESHOLD} one-to-one matching; 95 % interval from a spatial bootstrap "
                    f"over {BOOTSTRAP_BLOCK_PX // 10} m blocks",
        "iou_threshold": IOU_THRESHOLD,
        "folds": per_fold,
        "pooled": pooled,
        "model_id": pkg.id,
        "command": f"spikescan evaluate {pkg.name}",
    }


def headline(result: dict[str, object]) -> str:
    folds, pooled = result["folds"], result["pooled"]
    assert isinstance(folds, dict) and isinstance(pooled, dict)
    parts = ", ".join(f"{image.split('_')[0]} {f['model']['f1']:.2f}" for image, f in folds.items())
    return (f"boxes IoU>=0.4 F1 {pooled['model']['f1']:.2f} leave-one-site-out ({parts}); no-model "
            f"baselines: excess-green {pooled['excess_green']['f1']:.2f}, grid {pooled['grid']['f1']:.2f}")


def write_to_card(model: str | Path, result: dict[str, object]) -> None:
    """Record the figures in the package's card (the weights, and so weights_sha256, stay as they are)."""
    pkg = model_package.load(model)
    base = str(pkg.card.metrics.get("headline", "")).split("; boxes")[0]
    model_package.record_metrics(
        pkg,
        {
            "leave_one_site_out": {k: v for k, v in result.items() if k != "model_id"},
            "headline": f"{base}; {headline(result)}".lstrip("; "),
        },
    )


def parse_folds(values: list[str] | None) -> dict[str, Path] | None:
    if not values:
        return None
    out = {}
    for value in values:
        image, sep, path = value.partition("=")
        if not sep or not image or not path:
            raise InvalidInput(f"--fold {value!r}: expected IMAGE=PACKAGE_DIR, e.g. OSBS_029=/tmp/foldA")
        out[image] = Path(path)
    return out


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate_trees(args.model, Path(tmp), args.stride, parse_folds(getattr(args, "fold", None)))
    if args.write_card:
        write_to_card(args.model, result)
    print(json.dumps(result, indent=1))
    print(headline(result), file=sys.stderr)
    return 0
