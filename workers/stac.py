"""``item.json``: a STAC 1.1 Item with the projection extension (v2: ``proj:code``) describing one job.

The geometry is the scene's footprint in EPSG:4326 (edges densified before reprojection so curved edges stay
honest); ``proj:*`` describe the output grid of the two rasters. Properties carry what produced the result:
the model's content id, the backend, the chip grid, timings, spike counts and the energy estimate (null when
the backend cannot estimate it).

``datetime`` is when the scene was acquired (``workers.acquisition``: from the scene's own metadata); a date
without a time is given as ``start_datetime``/``end_datetime`` of that day, and an unknown acquisition as
``datetime: null`` with the honest range "before this processing" (STAC requires a range when ``datetime`` is
null). When the outputs were made is ``created`` (and the ``spikescan:acquisition`` property says where the
time came from).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urljoin

from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.polygon import orient

from workers.acquisition import Acquired, iso

STAC_VERSION = "1.1.0"
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

ASSETS = {
    "classes": ("classes.tif", COG_TYPE, ["data"], "class index per output cell (255 = no data)"),
    "scores": ("scores.tif", COG_TYPE, ["data"], "per-class scores, hits and disagreement bands"),
    "detections": ("detections.geojson", "application/geo+json", ["data"], "merged target-class detections"),
    "detections-gpkg": ("detections.gpkg", "application/geopackage+sqlite3", ["data"],
                        "the detections as a GeoPackage layer"),
    "detections-fgb": ("detections.fgb", "application/vnd.flatgeobuf", ["data"],
                       "the detections as FlatGeobuf"),
    "report": ("report.json", "application/json", ["metadata"], "chips, throughput, spikes, timings"),
}


def footprint(bounds: tuple[float, float, float, float], crs: CRS) -> dict[str, Any]:
    """The bounds as a lon/lat polygon (GeoJSON mapping), counter-clockwise per RFC 7946."""
    ring = box(*bounds).segmentize(max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 16)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs, ys = zip(*ring.exterior.coords, strict=True)
    lon, lat = to_lonlat.transform(xs, ys)
    return mapping(orient(Polygon(zip(lon, lat, strict=True)), sign=1.0))


# The earliest acquisition an unknown scene is assumed to have: older than any imagery worth scanning.
UNKNOWN_SINCE = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


def when_acquired(acquired: Acquired | None, now: dt.datetime) -> dict[str, Any]:
    """STAC's time fields: an instant as ``datetime``; otherwise ``datetime: null`` and a range."""
    if acquired is not None and acquired.instant:
        return {"datetime": iso(acquired.start), "spikescan:acquisition": acquired.source}
    start, end = (acquired.start, acquired.end) if acquired else (UNKNOWN_SINCE, now)
    return {
        "datetime": None,
        "start_datetime": iso(start),
        "end_datetime": iso(end),
        "spikescan:acquisition": acquired.source if acquired else "unknown",
    }


def build_item(
    item_id: str,
    crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    properties: dict[str, Any],
    *,
    acquired: Acquired | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """A STAC Item for outputs on the grid ``transform`` × ``shape`` (rows, cols) in ``crs``."""
    h, w = shape
    x0, y0 = transform * (0, 0)
    x1, y1 = transform * (w, h)
    proj_bbox = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
    geometry = footprint(tuple(proj_bbox), crs)  # type: ignore[arg-type]
    xs = [c[0] for c in geometry["coordinates"][0]]
    ys = [c[1] for c in geometry["coordinates"][0]]
    epsg = crs.to_epsg()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXT],
        "id": item_id,
        "geometry": geometry,
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "properties": {
            **({"title": title} if title else {}),
            **when_acquired(acquired, now),
            "created": iso(now),
            "proj:code": f"EPSG:{epsg}" if epsg else None,
            **({} if epsg else {"proj:wkt2": crs.to_wkt()}),
            "proj:shape": [h, w],
            "proj:transform": list(transform)[:6],
            "proj:bbox": proj_bbox,
            **properties,
        },
        "links": [],
        "assets": {
            key: {"href": href, "type": mime, "roles": roles, "title": title}
            for key, (href, mime, roles, title) in ASSETS.items()
        },
    }


def item_id(scene_name: str, model_name: str, model_id: str) -> str:
    """``<scene name's stem>-<model>-<id prefix>``, the stem made safe for URLs and file names
    (``scene_name``: an upload's file name, a URL's last segment, a STAC Item id)."""
    stem = scene_name.rsplit(".", 1)[0] if "." in scene_name.strip(".") else scene_name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "scene"
    return f"{safe}-{model_name}-{model_id.split(':')[-1][:12]}"


def published(item: dict[str, Any], results_url: str) -> dict[str, Any]:
    """``item`` as served from ``results_url`` (the absolute URL of the directory holding its files, e.g.
    ``https://host/v1/jobs/<id>/results``): every relative asset href made absolute and a ``self`` link
    added, so the Item still leads to its files once it is handed on (a STAC browser, a catalog, an email).
    The stored ``item.json`` keeps relative hrefs: next to its files (``predict --out``) they are right."""
    base = results_url.rstrip("/") + "/"
    assets = {
        key: {**asset, "href": urljoin(base, asset["href"])} if "href" in asset else asset
        for key, asset in item.get("assets", {}).items()
    }
    links = [link for link in item.get("links", []) if link.get("rel") != "self"]
    links.insert(0, {"rel": "self", "href": base + "item.json", "type": "application/geo+json"})
    return {**item, "assets": assets, "links": links}
