"""The one grid a STAC Item's band assets are stacked on, and how each asset gets onto it.

* **The grid** (``target``): the CRS of the asset of the model's first band, at the resolution and extent of
  the finest asset in that CRS. Pixel sizes are compared only within one CRS (metres against degrees says
  nothing); Sentinel-2 and Landsat Items keep every band in one UTM zone, so this is "the finest band".
* **Placed** (``placeable``): an asset in that CRS whose pixels are whole multiples of the grid's and start
  on one of its pixel edges (Sentinel-2's 20 m bands beside its 10 m ones) is a plain VRT source: each grid
  pixel takes the asset pixel it lies in, no arithmetic that could shift it.
* **Warped** (``warped_xml``): anything else — another CRS (a band reprojected by its provider, a tile at a
  UTM zone edge), a resolution that is not a whole multiple, a grid offset by part of a pixel — is warped
  onto the grid by GDAL's warper, serialised as a ``VRTWarpedDataset`` that the stack's VRT names as its
  source (inline XML: the stack stays one string every worker opens the same way). Nearest neighbour, like
  placing: every value in the stack is one the sensor measured (bilinear would invent reflectances across
  field and shore edges, and blend in the fill value along a footprint's edge), a band lands where a placed
  one would, and the scene's own resampling to the model's GSD (``workers.scene``) comes after. The warp
  carries an alpha band that the stack's source honours (``UseMaskBand``), so outside the asset's footprint
  — and on its nodata — the stack keeps its own nodata instead of zeros that would pass for data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from workers import sources
from workers.sources import SceneSource

EPS = 1e-6  # of a grid pixel: grids within this of each other are the same grid (float text round trips)


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int


def target(heads: Sequence[dict[str, Any]]) -> Grid:
    """The grid of the finest asset in the CRS of the first (``heads`` in the model card's band order)."""
    crs = heads[0]["crs"]
    same = [h for h in heads if h["crs"] == crs]
    finest = min(same, key=lambda h: abs(h["transform"].a * h["transform"].e))
    return Grid(crs, finest["transform"], finest["width"], finest["height"])


def placeable(head: dict[str, Any], grid: Grid) -> bool:
    """Whether the asset's pixels are whole blocks of grid pixels, on the grid's pixel edges, in its CRS."""
    st, gt = head["transform"], grid.transform
    if head["crs"] != grid.crs or st.b or st.d:
        return False
    steps = (st.a / gt.a, st.e / gt.e, (st.c - gt.c) / gt.a, (st.f - gt.f) / gt.e)
    return all(abs(v - round(v)) < EPS for v in steps) and round(steps[0]) >= 1 and round(steps[1]) >= 1


def warped_xml(src: SceneSource, grid: Grid, nodata: float | None) -> str:
    """The asset warped onto ``grid`` (nearest, with an alpha band) as a ``VRTWarpedDataset``, reading the
    asset as ``GTIFF_RAW:`` like every other stack source. GDAL writes the XML (its warp transformer with
    the inverse geotransforms and both CRSs); we only name the source.

    Exact coordinates (an error threshold of 1e-6 pixel, not gdalwarp's 1/8): the approximation is fitted
    per warp chunk, and chunks follow the windows chips read, so with it one pixel could take different
    source pixels in two overlapping chips. Exact costs ~0.1 µs a pixel (0.41 s CPU against 0.04 s for a
    3.8 Mpx band here; ~13 s for a whole Sentinel-2 tile at 10 m), small beside the inference."""
    with sources.opened(src) as ds, src.env():
        nodata_args = {"src_nodata": nodata, "nodata": nodata} if nodata is not None else {}
        with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.nearest, tolerance=1e-6, add_alpha=True, **nodata_args) as vrt:
            text = vrt.tags(ns="xml:VRT")["xml:VRT"]
    root = ET.fromstring(text)
    source = root.find("GDALWarpOptions/SourceDataset")
    if source is None:  # every GDAL since 2.0 writes it; refuse loudly rather than stack the wrong file
        raise RuntimeError("GDAL's warped VRT names no SourceDataset")
    source.text = "GTIFF_RAW:" + src.gdal_path
    source.set("relativeToVRT", "0")
    return ET.tostring(root, encoding="unicode")
