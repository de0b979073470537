"""``scores.tif`` and ``classes.tif`` open in GDAL/QGIS as they are: no alpha band taken from the data, the
card's colours with their alpha, class names as categories and a raster attribute table."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags

from workers.cog import NODATA_CLASS, LayerWriter
from workers.mosaic import Strip
from workers.pam import sidecar_path

CLASSES = ["background", "tree"]
COLORS = [[0, 0, 0, 0], [10, 200, 30, 255]]  # as trees-rgb's card: class 0 transparent


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 300 x 200 two-class mosaic through LayerWriter: left half class 0, right half class 1, the
    last 20 rows never seen (nodata)."""
    out = tmp_path_factory.mktemp("layers")
    writer = LayerWriter(out, 300, 200, Affine(0.4, 0, 400000, 0, -0.4, 3280000), CRS.from_epsg(32617),
                         CLASSES, COLORS)
    scores = np.zeros((200, 300, 2), np.float32)
    scores[:, :150, 0], scores[:, 150:, 1] = 0.9, 0.8
    scores[:, :150, 1], scores[:, 150:, 0] = 0.1, 0.2
    hits = np.full((200, 300), 2, np.int32)
    hits[180:] = 0
    disagreement = np.full((200, 300), 0.5, np.float32)  # 255 once scaled: would be "opaque" as an alpha
    disagreement[:, :100] = 0.0  # ... and transparent here
    for y0 in range(0, 200, 50):
        rows = slice(y0, y0 + 50)
        writer.write_strip(Strip(y0, scores[rows], hits[rows], disagreement[rows]))
    writer.finish()
    return out


def test_scores_bands_are_all_data_never_alpha(written: Path) -> None:
    with rasterio.open(written / "scores.tif") as ds:
        assert ds.count == 4  # 2 classes + hits + disagreement: once written R, G, B, Alpha
        assert ColorInterp.alpha not in ds.colorinterp
        assert set(ds.colorinterp) <= {ColorInterp.gray, ColorInterp.undefined}
        assert all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)
        assert ds.descriptions == ("score:background", "score:tree", "hits", "disagreement")
        assert (ds.dataset_mask() == 255).all()  # the cells of zero disagreement are not hidden


def test_classes_colour_table_is_the_cards_with_alpha(written: Path) -> None:
    with rasterio.open(written / "classes.tif") as ds:
        assert ds.nodata == NODATA_CLASS
        cmap = ds.colormap(1)
        assert [list(cmap[i]) for i in range(len(CLASSES))] == COLORS
        assert cmap[NODATA_CLASS][3] == 0
        values = ds.read(1)
    assert set(np.unique(values).tolist()) == {0, 1, NODATA_CLASS}


def test_classes_sidecar_holds_categories_and_a_rat(written: Path) -> None:
    text = sidecar_path(written / "classes.tif").read_text()
    assert "<GDALRasterAttributeTable" in text and "<Category>tree</Category>" in text


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="GDAL's command-line tools are not installed")
def test_gdalinfo_reads_names_colours_and_no_alpha(written: Path) -> None:
    def info(name: str) -> dict[str, Any]:
        done = subprocess.run(["gdalinfo", "-json", str(written / name)], capture_output=True, text=True,
                              check=True)
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    classes = info("classes.tif")["bands"][0]
    assert classes["categories"] == CLASSES
    assert [e for e in classes["colorTable"]["entries"][:2]] == COLORS
    rat = info("classes.tif")["rat"]
    assert [f["name"] for f in rat["fieldDefn"]][:2] == ["value", "class"]
    assert [row["f"][:2] for row in rat["row"]] == [[0, "background"], [1, "tree"]]
    scores = info("scores.tif")["bands"]
    assert [b["colorInterpretation"] for b in scores] == ["Gray", "Undefined", "Undefined", "Undefined"]
    assert all("mask" not in b or b["mask"]["flags"] == ["ALL_VALID"] for b in scores)
