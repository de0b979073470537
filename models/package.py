"""Model packages on disk: ``<dir>/model.json`` + ``<dir>/weights.npz``; load, validate, save, list.

The id of a package is the sha256 of its content (both files, in a fixed order), so any change to the card
or weights gives a new id, and a result's ``item.json`` names exactly what produced it.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from models.card import ModelCard
from models.network import layer_shapes, output_grid, weight_shape
from spikescan.errors import ModelPackageError, UnknownModel

ZOO = Path(__file__).resolve().parent / "zoo"
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
_NPZ_READS = threading.Lock()


@dataclass(frozen=True)
class ModelPackage:
    card: ModelCard
    # Integer weights on the card's fixed-point grid: "<layer>.w" and "<layer>.b".
    weights: dict[str, np.ndarray]
    id: str
    path: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.card.name

    def float_weights(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        step = self.card.fixed_point.weight_step
        return (
            self.weights[f"{layer}.w"].astype(np.float32) * np.float32(step),
            self.weights[f"{layer}.b"].astype(np.float32) * np.float32(step),
        )


def content_id(card_bytes: bytes, weight_bytes: bytes) -> str:
    digest = hashlib.sha256()
    for part in (card_bytes, weight_bytes):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return "sha256:" + digest.hexdigest()


def search_dirs(extra: Path | None = None) -> list[Path]:
    return [d for d in (extra, ZOO) if d is not None]


def in_catalogue(name: str, extra: Path | None = None) -> Path | None:
    """The package called ``name`` in ``extra`` or the zoo (never a path of the caller's choosing)."""
    return next((root / name for root in search_dirs(extra) if (root / name / CARD_FILE).is_file()), None)


def resolve(name_or_dir: str | Path, extra: Path | None = None) -> Path:
    candidate = Path(name_or_dir)
    if (candidate / CARD_FILE).is_file():
        return candidate
    if candidate.is_dir():
        raise ModelPackageError(f"{candidate}: not a model package (no {CARD_FILE})")
    found = in_catalogue(str(name_or_dir), extra)
    if found is not None:
        return found
    known = ", ".join(sorted(p.name for p in available(extra))) or "none"
    raise UnknownModel(f"unknown model {str(name_or_dir)!r} (available: {known})")


def available(extra: Path | None = None) -> list[Path]:
    seen: dict[str, Path] = {}
    for root in search_dirs(extra):
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / CARD_FILE).is_file():
                    seen.setdefault(d.name, d)
    return list(seen.values())


def load(name_or_dir: str | Path, extra: Path | None = None) -> ModelPackage:
    path = resolve(name_or_dir, extra)
    card_bytes = _read(path / CARD_FILE)
    weight_bytes = _read(path / WEIGHTS_FILE)
    try:
        card = ModelCard.model_validate_json(card_bytes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "card"
        raise ModelPackageError(
            f"{path / CARD_FILE}: not a spikescan model card ({where}: {first['msg']})"
        ) from None
    if card.weights_sha256 and hashlib.sha256(weight_bytes).hexdigest() != card.weights_sha256:
        raise ModelPackageError(
            f"{path / WEIGHTS_FILE}: checksum does not match the card (modified or corrupt)"
        )
    weights = _parse_weights(weight_bytes, path / WEIGHTS_FILE)
    _check_weights(card, weights, path)
    return ModelPackage(card, weights, content_id(card_bytes, weight_bytes), path)


def from_parts(card: ModelCard, weights: dict[str, np.ndarray]) -> ModelPackage:
    """An in-memory package (training, tests), identical to what ``save`` then ``load`` would give."""
    card_bytes, weight_bytes, card = _serialise(card, weights)
    _check_weights(card, weights, None)
    return ModelPackage(
        card, {k: np.asarray(v) for k, v in weights.items()}, content_id(card_bytes, weight_bytes)
    )


def save(card: ModelCard, weights: dict[str, np.ndarray], directory: Path) -> ModelPackage:
    card_bytes, weight_bytes, card = _serialise(card, weights)
    _check_weights(card, weights, directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS_FILE).write_bytes(weight_bytes)
    (directory / CARD_FILE).write_bytes(card_bytes)
    return load(directory)


def record_metrics(pkg: ModelPackage, updates: dict[str, object]) -> ModelPackage:
    """Write measured figures into a package's card; the weights (and weights_sha256) are left as they are,
    the package id changes with the card."""
    if pkg.path is None:
        raise ModelPackageError(f"{pkg.name}: only a package on disk can have its card updated")
    card = pkg.card.model_copy(update={"metrics": {**pkg.card.metrics, **updates}})
    return save(card, pkg.weights, pkg.path)


def _serialise(card: ModelCard, weights: dict[str, np.ndarray]) -> tuple[bytes, bytes, ModelCard]:
    buf = io.BytesIO()
    # Fixed member order and timestamps so the same weights always hash the same.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(weights):
            arr = io.BytesIO()
            np.save(arr, np.ascontiguousarray(weights[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, arr.getvalue())
    weight_bytes = buf.getvalue()
    card = card.model_copy(update={"weights_sha256": hashlib.sha256(weight_bytes).hexdigest()})
    card_bytes = (json.dumps(card.model_dump(mode="json"), indent=1) + "\n").encode()
    return card_bytes, weight_bytes, card


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelPackageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_npz(source: Path | io.BytesIO) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, pickles refused. One thread at a time: numpy parses .npy headers with
    ast.literal_eval, which on CPython 3.11 before 3.11.8 fails at random with "SystemError: AST constructor
    recursion depth mismatch" when threads use it at once (CPython gh-106905) — and the API reads packages
    and chip results from several request threads."""
    with _NPZ_READS, np.load(source, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _parse_weights(data: bytes, where: Path) -> dict[str, np.ndarray]:
    try:
        return read_npz(io.BytesIO(data))
    except Exception as exc:  # numpy raises several types for a damaged archive
        raise ModelPackageError(f"{where}: not a readable weights archive ({type(exc).__name__})") from None


def _check_weights(card: ModelCard, weights: dict[str, np.ndarray], where: Path | None) -> None:
    label = str(where) if where else card.name
    try:
        shapes = layer_shapes(card)
        output_grid(card)
    except ValueError as exc:
        raise ModelPackageError(f"{label}: inconsistent layer list ({exc})") from None
    expected: set[str] = set()
    for ls in shapes:
        if not ls.layer.has_weights:
            continue
        wshape = weight_shape(ls)
        for key, shape in ((f"{ls.layer.name}.w", wshape), (f"{ls.layer.name}.b", (wshape[-1],))):
            expected.add(key)
            arr = weights.get(key)
            if arr is None:
                raise ModelPackageError(f"{label}: weights for {key} missing")
            if tuple(arr.shape) != shape:
                raise ModelPackageError(
                    f"{label}: {key} has shape {tuple(arr.shape)}, the card implies {shape}"
                )
            if not np.issubdtype(arr.dtype, np.integer):
                raise ModelPackageError(f"{label}: {key} must hold integers on the fixed-point grid")
    extra = set(weights) - expected
    if extra:
        raise ModelPackageError(f"{label}: unexpected arrays in weights: {sorted(extra)}")
