"""Broken, tampered or foreign packages are refused with a ModelPackageError that names the problem."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models import package
from spikescan.errors import ModelPackageError, UnknownModel


def refuse(path: Path) -> str:
    with pytest.raises(ModelPackageError) as info:
        package.load(path)
    return info.value.message


def test_intact_copy_loads_with_the_same_id(package_copy: Path, landcover: package.ModelPackage) -> None:
    assert package.load(package_copy).id == landcover.id


def test_truncated_weights_are_refused(package_copy: Path) -> None:
    weights = package_copy / "weights.npz"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = refuse(package_copy)
    assert "weights.npz" in message and "checksum" in message


def test_garbled_weights_without_a_checksum_are_refused(package_copy: Path) -> None:
    card = json.loads((package_copy / "model.json").read_text())
    card["weights_sha256"] = ""
    (package_copy / "model.json").write_text(json.dumps(card))
    (package_copy / "weights.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    assert "not a readable weights archive" in refuse(package_copy)


def test_weights_changed_after_packaging_are_refused(package_copy: Path) -> None:
    arrays = dict(np.load(package_copy / "weights.npz"))
    key = sorted(arrays)[0]
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (package_copy / "weights.npz").write_bytes(buf.getvalue())
    message = refuse(package_copy)
    assert "checksum does not match" in message and str(package_copy / "weights.npz") in message


def test_wrong_weight_shapes_are_refused(landcover: package.ModelPackage, tmp_path: Path) -> None:
    weights = dict(landcover.weights)
    weights["conv1.w"] = weights["conv1.w"][:, :, :, :-1]
    with pytest.raises(ModelPackageError, match=r"conv1\.w has shape .* the card implies"):
        package.save(landcover.card, weights, tmp_path / "bad")


def test_float_weights_are_refused(landcover: package.ModelPackage, tmp_path: Path) -> None:
    weights = {k: v.astype(np.float32) for k, v in landcover.weights.items()}
    with pytest.raises(ModelPackageError, match="integers on the fixed-point grid"):
        package.save(landcover.card, weights, tmp_path / "bad")


def test_a_foreign_json_is_refused(package_copy: Path) -> None:
    (package_copy / "model.json").write_text(json.dumps({"name": "resnet50", "framework": "pytorch"}))
    message = refuse(package_copy)
    assert "not a spikescan model card" in message and "model.json" in message


def test_a_card_that_is_not_json_is_refused(package_copy: Path) -> None:
    (package_copy / "model.json").write_text("<html>404</html>")
    assert "not a spikescan model card" in refuse(package_copy)


def test_missing_weights_file_is_refused(package_copy: Path) -> None:
    (package_copy / "weights.npz").unlink()
    assert "cannot read" in refuse(package_copy)


def test_unexpected_arrays_are_refused(package_copy: Path) -> None:
    card = json.loads((package_copy / "model.json").read_text())
    card["weights_sha256"] = ""
    (package_copy / "model.json").write_text(json.dumps(card))
    arrays = dict(np.load(package_copy / "weights.npz"))
    arrays["extra.w"] = np.zeros(3, dtype=np.int32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (package_copy / "weights.npz").write_bytes(buf.getvalue())
    assert "unexpected arrays" in refuse(package_copy)


def test_an_unknown_name_lists_the_known_models() -> None:
    with pytest.raises(UnknownModel, match="landcover-landsat"):
        package.load("no-such-model")


def test_weights_archive_is_deterministic(landcover: package.ModelPackage, tmp_path: Path) -> None:
    again = package.save(landcover.card, landcover.weights, tmp_path / "again")
    assert again.id == landcover.id
    assert zipfile.is_zipfile(tmp_path / "again" / "weights.npz")
