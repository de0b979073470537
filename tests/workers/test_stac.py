"""item.json validates offline against the STAC 1.1 Item schema and carries the projection extension.

pystac bundles the core STAC 1.1.0 and GeoJSON JSON schemas (``pystac.validation.local_validator``) but not
the projection extension's, so the core Item is validated with jsonschema against the bundled schemas, and
the ``proj:*`` fields against the field rules of projection v2.0.0 written out below (and read back through
pystac's ProjectionExtension).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rasterio
from jsonschema import Draft7Validator
from pystac import Item
from pystac.extensions.projection import ProjectionExtension
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ITEM_SCHEMA = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
# Field rules of https://stac-extensions.github.io/projection/v2.0.0/schema.json (not bundled offline).
PROJ_V2 = {
    "type": "object",
    "required": ["proj:code", "proj:shape", "proj:transform", "proj:bbox"],
    "properties": {
        "proj:code": {"type": ["string", "null"]},
        "proj:wkt2": {"type": ["string", "null"]},
        "proj:shape": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}},
        "proj:transform": {
            "type": "array",
            "oneOf": [{"minItems": 6, "maxItems": 6}, {"minItems": 9, "maxItems": 9}],
            "items": {"type": "number"},
        },
        "proj:bbox": {
            "type": "array",
            "oneOf": [{"minItems": 4, "maxItems": 4}, {"minItems": 6, "maxItems": 6}],
            "items": {"type": "number"},
        },
    },
}


def _validator() -> Draft7Validator:
    registry: Registry = Registry().with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7))
        for uri, schema in get_local_schema_cache().items()
    )
    return Draft7Validator(get_local_schema_cache()[ITEM_SCHEMA], registry=registry)


@pytest.mark.parametrize("run", ["osbs_run", "landsat_run"])
def test_item_validates_and_describes_the_outputs(run: str, request: pytest.FixtureRequest) -> None:
    out, rep = request.getfixturevalue(run)
    item: dict[str, Any] = json.loads((out / "item.json").read_text())
    errors = sorted(_validator().iter_errors(item), key=str)
    assert not errors, errors[0].message
    assert not list(Draft7Validator(PROJ_V2).iter_errors(item["properties"]))
    assert "https://stac-extensions.github.io/projection/v2.0.0/schema.json" in item["stac_extensions"]

    proj = ProjectionExtension.ext(Item.from_dict(item))
    with rasterio.open(out / "classes.tif") as ds:
        assert proj.shape == [ds.height, ds.width]
        assert proj.transform == pytest.approx(list(ds.transform)[:6])
        assert proj.bbox == pytest.approx(list(ds.bounds))
        epsg = ds.crs.to_epsg()
    assert proj.code == (f"EPSG:{epsg}" if epsg else None)
    if epsg is None:
        assert item["properties"]["proj:wkt2"]
    for asset in item["assets"].values():
        assert (out / asset["href"]).is_file()
    props = item["properties"]
    assert props["spikescan:model"]["id"] == rep["model"]["id"] and props["spikescan:model"]["id"].startswith(
        "sha256:"
    )
    assert props["spikescan:backend"] == "emulator"
    assert (
        props["spikescan:chip_size"] == rep["grid"]["patch"]
        and props["spikescan:stride"] == rep["grid"]["stride"]
    )
    assert props["spikescan:spikes_total"] == rep["spikes_total"] > 0
    assert "spikescan:energy_j" in props and "total" in props["spikescan:timings_s"]


def test_item_footprint_contains_the_detections(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    from shapely.geometry import shape

    out, _ = osbs_run
    footprint = shape(json.loads((out / "item.json").read_text())["geometry"]).buffer(1e-9)
    for f in json.loads((out / "detections.geojson").read_text())["features"]:
        assert footprint.contains(shape(f["geometry"]))
