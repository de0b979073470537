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

from workers.stac import published

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


@pytest.fixture(scope="module")
def dated_crop(osbs_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 200 x 200 window of OSBS_029 whose TIFF DateTime tag says when it was flown."""
    path = tmp_path_factory.mktemp("dated") / "flight 7 (north).tif"
    with rasterio.open(osbs_tif) as src:
        window = rasterio.windows.Window(0, 0, 200, 200)
        profile = {**src.profile, "width": 200, "height": 200, "transform": src.window_transform(window)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.update_tags(TIFFTAG_DATETIME="2018:07:14 15:32:10")
    return path


def test_datetime_is_the_acquisition_and_created_the_processing(
    dated_crop: Path, rgb_model, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from workers import pipeline

    pipeline.run(dated_crop, rgb_model, tmp_path, scene_name="flight 7 (north).tif")
    item = json.loads((tmp_path / "item.json").read_text())
    assert not list(_validator().iter_errors(item))
    props = item["properties"]
    assert props["datetime"] == "2018-07-14T15:32:10Z"
    assert props["spikescan:acquisition"] == "TIFFTAG_DATETIME"
    assert props["created"] > "2025" and props["created"] != props["datetime"]
    assert item["id"].startswith("flight-7-north-rand-rgb-")
    assert props["title"].startswith("flight 7 (north).tif")
    assert json.loads((tmp_path / "report.json").read_text())["scene_name"] == "flight 7 (north).tif"


@pytest.mark.parametrize("run", ["osbs_run", "landsat_run"])
def test_an_undated_scene_has_no_datetime_but_a_valid_range(run: str, request: pytest.FixtureRequest) -> None:
    out, _ = request.getfixturevalue(run)
    props = json.loads((out / "item.json").read_text())["properties"]
    assert props["datetime"] is None and props["spikescan:acquisition"] == "unknown"
    assert props["start_datetime"] < props["end_datetime"] <= props["created"]


@pytest.mark.parametrize(
    ("raw", "start", "end"),
    [
        ("2018:07:14 15:32:10", "2018-07-14T15:32:10Z", None),
        ("2021-03-02T10:11:12.5+02:00", "2021-03-02T08:11:12Z", None),
        ("2020-05-01", "2020-05-01T00:00:00Z", "2020-05-01T23:59:59Z"),
        ("0000:00:00 00:00:00", None, None),
        ("yesterday", None, None),
    ],
)
def test_acquisition_times_are_parsed_or_refused(raw: str, start: str | None, end: str | None) -> None:
    from workers.acquisition import iso, parse

    got = parse(raw)
    if start is None:
        assert got is None
        return
    assert got is not None and iso(got.start) == start
    assert iso(got.end) == (end or start)


def test_a_published_item_has_absolute_hrefs_and_a_self_link() -> None:
    stored = {"type": "Feature", "links": [{"rel": "self", "href": "old"}, {"rel": "license", "href": "x"}],
              "assets": {"classes": {"href": "classes.tif", "type": "image/tiff"},
                         "elsewhere": {"href": "https://other.example/a.tif"}}}
    out = published(stored, "https://host/v1/jobs/j1/results/")
    classes = {"href": "https://host/v1/jobs/j1/results/classes.tif", "type": "image/tiff"}
    assert out["assets"]["classes"] == classes
    assert out["assets"]["elsewhere"]["href"] == "https://other.example/a.tif"  # absolute already: kept
    assert out["links"] == [
        {"rel": "self", "href": "https://host/v1/jobs/j1/results/item.json", "type": "application/geo+json"},
        {"rel": "license", "href": "x"},
    ]
    assert stored["assets"]["classes"]["href"] == "classes.tif"  # the stored item is not changed


def test_a_published_item_is_still_a_valid_stac_item(osbs_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = osbs_run
    item = published(json.loads((out / "item.json").read_text()), "http://127.0.0.1:8000/v1/jobs/j1/results")
    errors = sorted(_validator().iter_errors(item), key=str)
    assert not errors, errors[0].message
    assert Item.from_dict(item).get_self_href() == "http://127.0.0.1:8000/v1/jobs/j1/results/item.json"
