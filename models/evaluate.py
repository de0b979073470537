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

    @property
    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "predicted": self.predicted,
            "truth": self.truth,
            "matched": self.matched,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def match_boxes(
    predicted: list[tuple[Box, float]], truth: list[Box], threshold: float = IOU_THRESHOLD
) -> Matching:
    """Greedy one-to-one matching by descending score; a spatial index keeps it near-linear."""
    truth_geoms = [box(*b) for b in truth]
    tree = STRtree(truth_geoms)
    taken = np.zeros(len(truth), dtype=bool)
    matched = 0
    for bbox, _score in sorted(predicted, key=lambda p: -p[1]):
        geom = box(*bbox)
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
            matched += 1
    return Matching(len(predicted), len(truth), matched)


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


def evaluate_trees(model: str | Path, workdir: Path, stride: int | None = None) -> dict[str, object]:
    from workers import pipeline

    pkg = model_package.load(model)
    if pkg.card.task != "detection":
        raise InvalidInput(f"{pkg.name} is a {pkg.card.task} model; box evaluation needs a detection model")
    per_image: dict[str, object] = {}
    totals = Matching(0, 0, 0)
    for item in held_out_trees(workdir):
        out = workdir / item.name
        pipeline.run(item.scene, pkg, out, stride=stride, quiet=True)
        m = match_boxes(predicted_pixel_boxes(out / "detections.geojson", item.scene), item.truth)
        per_image[item.name] = m.as_dict()
        totals = Matching(totals.predicted + m.predicted, totals.truth + m.truth, totals.matched + m.matched)
    return {
        "iou_threshold": IOU_THRESHOLD,
        "images": per_image,
        "overall": totals.as_dict(),
        "model_id": pkg.id,
        "command": f"spikescan evaluate {pkg.name}",
    }


def write_to_card(model: str | Path, result: dict[str, object]) -> None:
    """Record the box metrics in the package's card (the weights, and so weights_sha256, stay as they are)."""
    pkg = model_package.load(model)
    overall = result["overall"]
    assert isinstance(overall, dict)
    base = str(pkg.card.metrics.get("headline", "")).split("; boxes")[0]
    model_package.record_metrics(
        pkg,
        {
            "boxes_iou40": {k: v for k, v in result.items() if k != "model_id"},
            "headline": f"{base}; boxes IoU>=0.4 F1 {overall['f1']:.2f} (held-out)".lstrip("; "),
        },
    )


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate_trees(args.model, Path(tmp), args.stride)
    if args.write_card:
        write_to_card(args.model, result)
    print(json.dumps(result, indent=1))
    return 0
