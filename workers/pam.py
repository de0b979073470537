"""``classes.tif.aux.xml``: what a TIFF cannot hold about the class layer, in GDAL's sidecar (PAM) format.

A TIFF palette has no alpha, so a class the card paints transparent (``[0, 0, 0, 0]``) would come out opaque
black; and GeoTIFF has no place for category names or a raster attribute table. GDAL reads all three from
``<file>.aux.xml`` beside the file, and its values win over the in-file palette: so GDAL, QGIS and ArcGIS see
the card's colours with their alpha, the class names (``GetCategoryNames``) and a thematic RAT with one row
per class (value, name, RGBA). The in-file palette and ``CLASS_<i>`` tags stay, for a copy of the TIFF alone.

The sidecar is written once the COG is complete, under a temporary name and renamed (whole or absent).
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree as ET

# GDAL's field types (GDALRATFieldType) and usages (GDALRATFieldUsage), as the PAM XML stores them.
_INTEGER, _STRING = 0, 2
_MINMAX, _NAME, _RED, _GREEN, _BLUE, _ALPHA = 5, 2, 6, 7, 8, 9
_FIELDS = (
    ("value", _INTEGER, _MINMAX),
    ("class", _STRING, _NAME),
    ("red", _INTEGER, _RED),
    ("green", _INTEGER, _GREEN),
    ("blue", _INTEGER, _BLUE),
    ("alpha", _INTEGER, _ALPHA),
)


def sidecar_path(raster: Path) -> Path:
    return raster.with_name(raster.name + ".aux.xml")


def class_table_xml(classes: list[str], colors: list[list[int]], nodata: int) -> str:
    """The PAM document for a one-band class raster: category names, RGBA colour table, thematic RAT.

    ``nodata`` gets a transparent colour-table entry and no RAT row (it is not a class)."""
    if len(classes) != len(colors):
        raise ValueError(f"{len(classes)} classes but {len(colors)} colours")
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for name in classes:
        ET.SubElement(names, "Category").text = name
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    rgba = [_rgba(c) for c in colors]
    # Entries are positional up to the highest value used: fill the gap to nodata with transparent ones.
    for i in range(max(len(rgba), nodata + 1)):
        r, g, b, a = rgba[i] if i < len(rgba) else (0, 0, 0, 0)
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate(_FIELDS):
        defn = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    for value, (name, colour) in enumerate(zip(classes, rgba, strict=True)):
        row = ET.SubElement(rat, "Row", index=str(value))
        for cell in (value, name, *colour):
            ET.SubElement(row, "F").text = str(cell)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_class_sidecar(raster: Path, classes: list[str], colors: list[list[int]], nodata: int) -> Path:
    path = sidecar_path(raster)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(class_table_xml(classes, colors, nodata))
    os.replace(tmp, path)
    return path


def _rgba(colour: list[int]) -> tuple[int, int, int, int]:
    # A card may give RGB only: opaque, as the card's own schema reads it.
    r, g, b, *rest = (int(v) for v in colour)
    return r, g, b, rest[0] if rest else 255
