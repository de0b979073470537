"""A STAC Item whose bands are separate (COG) assets, as one scene: the stack GDAL opens is a VRT we write
in memory, never a file the user has to make.

* **Loading** (``load``): inline JSON, a local ``.json`` path, or an http(s) URL (one GET, no redirects
  followed, at most ``MAX_ITEM_BYTES``). Relative asset hrefs are made absolute against the Item's own
  location (its ``self`` link, else where it was read from), so the Item can be recorded as JSON in a job and
  every worker reads the very same assets.
* **Picking bands** (``pick``): for each band of the model card, the first GeoTIFF asset band whose
  ``eo:bands``/``bands`` common name or name, or asset key (``blue``, ``B02``, ``SR_B2``), is the card band's
  name or common name. Single-band assets win over multi-band ones (a ``visual`` RGB preview is not data).
* **Stacking** (``vrt_xml``): one VRT band per card band, in the card's order, named after it (so
  ``workers.scene.map_bands`` finds them by name), on one grid (``workers.stac_grid``: the finest asset in
  the first band's CRS); coarser bands on that grid are placed by their own geotransforms, assets in another
  CRS or off the grid are warped onto it (both nearest neighbour). Where ``raster:bands`` gives
  ``scale``/``offset`` the band is Float32 ``value * scale + offset`` with the asset's nodata (and
  everything outside an asset's footprint) as NaN, which ``workers.scene`` counts as invalid.

Every asset is opened (header only) through ``workers.sources`` with the GeoTIFF driver when the Item is
read, and the VRT names each one as ``GTIFF_RAW:<path>``: GDAL then opens it with the GeoTIFF driver only,
also when the VRT opens it again later, so a swapped asset can never be a VRT or any other format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import httpx

from models.card import Band, ModelCard
from spikescan.errors import BandMismatch, InvalidScene, SceneUnreachable
from workers import sources, stac_grid
from workers.sources import SceneSource
from workers.stac_grid import Grid

MAX_ITEM_BYTES = 4 << 20  # a Sentinel-2 Item is ~30 kB; anything this large is not an Item
# Sentinel-2 band ids to common names, for Items whose assets lack eo:bands (keys like "B02").
S2_BANDS = {
    "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "rededge", "b06": "rededge",
    "b07": "rededge", "b08": "nir", "b8a": "nir08", "b09": "nir09", "b11": "swir16", "b12": "swir22",
}
_LANDSAT_KEY = re.compile(r"^(sr_|st_)?b(\d+)$")  # SR_B2 style keys carry eo:bands in C2 Items anyway


@dataclass(frozen=True)
class Item:
    """A STAC Item as read, its asset hrefs absolute; ``shown`` names it in messages."""

    data: dict[str, Any]
    shown: str

    @property
    def id(self) -> str:
        return str(self.data.get("id") or "item")

    def to_json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"))


@dataclass(frozen=True)
class Pick:
    """One card band: which asset band it comes from and how to scale it."""

    band: str
    key: str
    href: str
    index: int  # 1-based band of the asset
    scale: float | None
    offset: float | None
    nodata: float | None
    common_name: str | None = None  # eo:bands common name, or the Sentinel-2 one of its asset key


def load(ref: str) -> Item:
    """The Item ``ref`` names (inline JSON, a path or an http(s) URL), hrefs made absolute."""
    text = ref.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidScene(f"STAC Item: not JSON ({exc.msg} at line {exc.lineno})") from None
        return item_from_dict(data, inline_name(data))
    if urlsplit(text).scheme.lower() in ("http", "https"):
        return _parse(_fetch(text), text, text)
    if urlsplit(text).scheme.lower() == "s3":
        raise InvalidScene(f"{text}: STAC Items are read from paths or http(s) URLs (assets may be in S3)")
    path = Path(text.removeprefix("file://"))
    try:
        if path.stat().st_size > MAX_ITEM_BYTES:
            raise InvalidScene(f"{text}: larger than {MAX_ITEM_BYTES >> 20} MB: not a STAC Item")
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidScene(f"{text}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidScene(f"{text}: cannot read ({exc})") from None
    return _parse(raw, text, str(path.resolve()))


def inline_name(data: Any) -> str:
    """How messages name an Item given as JSON rather than by a path or URL."""
    name = data.get("id") if isinstance(data, dict) else None
    return f"STAC Item {name!r}" if isinstance(name, str) and name else "STAC Item"


def _fetch(url: str) -> str:
    try:
        with httpx.Client(timeout=sources.PREFLIGHT_TIMEOUT_S, follow_redirects=False) as client:
            with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    sources.check_status(url, resp.status_code)
                    raise InvalidScene(f"{url}: the server answered HTTP {resp.status_code}")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ITEM_BYTES:
                        raise InvalidScene(f"{url}: larger than {MAX_ITEM_BYTES >> 20} MB: not a STAC Item")
    except httpx.HTTPError as exc:
        raise SceneUnreachable(f"{url}: unreachable ({type(exc).__name__}: {exc})") from None
    return body.decode("utf-8", errors="replace")


def _parse(raw: str, shown: str, location: str | None) -> Item:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidScene(f"{shown}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return item_from_dict(data, shown, location)


def item_from_dict(data: Any, shown: str, location: str | None = None) -> Item:
    """Check the shape of an Item and make its asset hrefs absolute (against ``self`` or ``location``)."""
    is_item = isinstance(data, dict) and data.get("type") == "Feature"
    if not is_item or not isinstance(data.get("assets"), dict):
        raise InvalidScene(f"{shown}: not a STAC Item (a GeoJSON Feature with 'assets')")
    links = data.get("links") if isinstance(data.get("links"), list) else []
    base = next((x.get("href") for x in links if isinstance(x, dict) and x.get("rel") == "self"), location)
    assets: dict[str, Any] = {}
    for key, asset in data["assets"].items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise InvalidScene(f"{shown}: asset {key!r} has no href")
        assets[key] = {**asset, "href": _absolute(asset["href"], base, shown, key)}
    return Item({**data, "assets": assets}, shown)


def _absolute(href: str, base: str | None, shown: str, key: str) -> str:
    if urlsplit(href).scheme or href.startswith(("/", "/vsi")):
        return href
    if base is None:
        raise InvalidScene(f"{shown}: asset {key!r} has a relative href ({href}) and the Item no self link")
    if urlsplit(base).scheme:
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


# --- picking bands ----------------------------------------------------------------------------------------
def pick(item: Item, card: ModelCard) -> list[Pick]:
    """An asset band for every card band, in the card's order; ``BandMismatch`` naming what is missing."""
    return pick_bands(item, card.bands)


def pick_bands(item: Item, bands: Sequence[Band], whose: str = "the model's") -> list[Pick]:
    """An asset band for each of ``bands`` (by name or common name), in their order; ``whose`` says in the
    ``BandMismatch`` who wants a missing band."""
    candidates = _candidates(item)
    picks: list[Pick] = []
    for band in bands:
        want = {band.name.lower(), (band.common_name or "").lower()} - {""}
        found = next((p for names, p in candidates if names & want), None)
        if found is None:
            raise BandMismatch(
                f"{item.shown}: no asset for {whose} band {band.name!r} (by eo:bands common name, name "
                f"or asset key); the Item's GeoTIFF assets offer {', '.join(offered(item)) or 'none'}"
            )
        picks.append(replace(found, band=band.name))
    return picks


def offered(item: Item) -> list[str]:
    """Every name a band of the Item's GeoTIFF assets answers to, sorted."""
    return sorted({n for names, _ in _candidates(item) for n in names})


def _candidates(item: Item) -> list[tuple[set[str], Pick]]:
    """Every band of every GeoTIFF asset with the names it answers to; single-band assets first."""
    out: list[tuple[int, set[str], Pick]] = []
    for key, asset in item.data["assets"].items():
        if not _is_geotiff(asset):
            continue
        bands = asset.get("eo:bands") or asset.get("bands") or [{}]
        raster = asset.get("raster:bands") or asset.get("bands") or []
        for i, meta in enumerate(bands):
            names = {str(meta.get(k, "")).lower() for k in ("common_name", "eo:common_name", "name")} - {""}
            common = str(meta.get("common_name") or meta.get("eo:common_name") or "").lower() or None
            if len(bands) == 1:
                names |= _key_names(key)
                common = common or S2_BANDS.get(key.lower())
            stats = raster[i] if i < len(raster) and isinstance(raster[i], dict) else {}
            nodata = _num(stats.get("nodata", asset.get("nodata")))
            pick_ = Pick("", key, asset["href"], i + 1, _num(stats.get("scale")), _num(stats.get("offset")),
                         nodata, common)
            out.append((len(bands), names, pick_))
    out.sort(key=lambda c: c[0])  # stable: the Item's own order within each size
    return [(names, p) for _, names, p in out]


def _is_geotiff(asset: Mapping[str, Any]) -> bool:
    kind = str(asset.get("type", "")).lower()
    if kind:
        return "image/tiff" in kind
    return urlsplit(asset["href"]).path.lower().endswith(sources.GEOTIFF_SUFFIXES)


def _key_names(key: str) -> set[str]:
    k = key.lower()
    names = {k}
    if k in S2_BANDS:
        names.add(S2_BANDS[k])
    match = _LANDSAT_KEY.match(k)
    if match:
        names.add(f"b{match[2]}")
    return names


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) or math.isnan(number) else None


# --- stacking ---------------------------------------------------------------------------------------------
def source(ref: str | Item, card: ModelCard, admit: Callable[[str], str] | None = None) -> SceneSource:
    """The Item as one scene for ``card``. ``admit`` (the API's allow-list) is asked about every asset
    used."""
    item = ref if isinstance(ref, Item) else load(ref)
    return stack(item, pick(item, card), admit)


def stack(item: Item, picks: list[Pick], admit: Callable[[str], str] | None = None) -> SceneSource:
    """The VRT of ``picks`` as one scene named after the Item (``admit`` as for ``source``)."""
    opened: dict[str, tuple[SceneSource, dict[str, Any]]] = {}
    for p in picks:
        if p.href not in opened:
            href = admit(p.href) if admit else p.href
            src = sources.resolve(href, geotiff_only=True)
            opened[p.href] = (src, _header(src, p))
    options: dict[str, str] = {}
    for src, _ in opened.values():
        options |= dict(src.options)
    grid = stac_grid.target([opened[p.href][1] for p in picks])
    if grid.transform.b or grid.transform.d:
        raise InvalidScene(f"{item.shown}: rotated asset grids are not supported")
    stacked: dict[str, tuple[str, dict[str, Any] | None]] = {}
    for p in picks:
        src, head = opened[p.href]
        if p.href in stacked:
            continue
        if stac_grid.placeable(head, grid):
            stacked[p.href] = ("GTIFF_RAW:" + src.gdal_path, head)
        else:  # None: the source already covers the grid, pixel for pixel
            nodata = p.nodata if p.nodata is not None else head["nodata"]
            stacked[p.href] = (stac_grid.warped_xml(src, grid, nodata), None)
    heads = {h: head for h, (_, head) in opened.items()}
    xml = vrt_xml(picks, stacked, heads, grid)
    return SceneSource(item.shown, xml, "stac", "VRT", options, label=item.id)


def _header(src: SceneSource, p: Pick) -> dict[str, Any]:
    with sources.opened(src) as ds:
        if not 1 <= p.index <= ds.count:
            raise InvalidScene(f"{src.ref}: has {ds.count} band(s), the Item's eo:bands name band {p.index}")
        if ds.crs is None:
            raise InvalidScene(f"{src.ref}: not georeferenced: no CRS")
        return {"crs": ds.crs, "transform": ds.transform, "width": ds.width, "height": ds.height,
                "dtype": ds.dtypes[p.index - 1], "nodata": ds.nodatavals[p.index - 1]}


def vrt_xml(
    picks: list[Pick],
    stacked: Mapping[str, tuple[str, dict[str, Any] | None]],
    heads: Mapping[str, dict[str, Any]],
    grid: Grid,
) -> str:
    """The VRT stacking ``picks`` on ``grid``. ``stacked``: per asset href, what the VRT opens (a
    ``GTIFF_RAW:`` name, or a warped VRT's XML) and the header that places it (None: warped onto the grid)."""
    t = grid.transform
    scaled = any(p.scale is not None or p.offset is not None for p in picks)
    dtypes = {heads[p.href]["dtype"] for p in picks}
    dtype = "Float32" if scaled or len(dtypes) > 1 else _gdal_type(dtypes.pop())
    bands = [_vrt_band(i, p, *stacked[p.href], heads[p.href], grid, scaled, dtype)
             for i, p in enumerate(picks, start=1)]
    return (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
        f"<SRS>{escape(grid.crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c!r}, {t.a!r}, 0, {t.f!r}, 0, {t.e!r}</GeoTransform>"
        + "".join(bands)
        + "</VRTDataset>"
    )


def _vrt_band(n: int, p: Pick, name: str, placed: dict[str, Any] | None, head: dict[str, Any], grid: Grid,
              scaled: bool, dtype: str) -> str:
    gt = grid.transform
    if placed is None:  # warped: already on the grid
        src_size, dst = (grid.width, grid.height), (0.0, 0.0, float(grid.width), float(grid.height))
    else:
        st = placed["transform"]
        # The asset's pixel rectangle in the stack's pixels: whole numbers (``stac_grid.placeable``).
        src_size = (placed["width"], placed["height"])
        dst = ((st.c - gt.c) / gt.a, (st.f - gt.f) / gt.e,
               placed["width"] * st.a / gt.a, placed["height"] * st.e / gt.e)
    nodata = p.nodata if p.nodata is not None else head["nodata"]
    rects = (f'<SrcRect xOff="0" yOff="0" xSize="{src_size[0]}" ySize="{src_size[1]}"/>'
             f'<DstRect xOff="{dst[0]!r}" yOff="{dst[1]!r}" xSize="{dst[2]!r}" ySize="{dst[3]!r}"/>')
    src = (f"<SourceFilename relativeToVRT=\"0\">{escape(name)}</SourceFilename>"
           f"<SourceBand>{p.index}</SourceBand>{rects}")
    # A warped source writes only where its alpha says the asset has data: elsewhere the band keeps its
    # nodata (NaN when scaled), as it does outside a placed asset's rectangle.
    masked = "<UseMaskBand>true</UseMaskBand>" if placed is None else ""
    if scaled:
        body = src + (f"<NODATA>{nodata!r}</NODATA>" if nodata is not None else "") + masked
        ratio = 1.0 if p.scale is None else p.scale
        body += f"<ScaleOffset>{p.offset or 0.0!r}</ScaleOffset><ScaleRatio>{ratio!r}</ScaleRatio>"
        source_xml = f'<ComplexSource resampling="nearest">{body}</ComplexSource>'
        nodata_xml = "<NoDataValue>nan</NoDataValue>"
    else:
        kind = "ComplexSource" if masked else "SimpleSource"  # only a ComplexSource honours a mask band
        source_xml = f'<{kind} resampling="nearest">{src}{masked}</{kind}>'
        nodata_xml = f"<NoDataValue>{nodata!r}</NoDataValue>" if nodata is not None else ""
    return (f'<VRTRasterBand dataType="{dtype}" band="{n}"><Description>{escape(p.band)}</Description>'
            f"{nodata_xml}{source_xml}</VRTRasterBand>")


def _gdal_type(numpy_dtype: str) -> str:
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
            "int32": "Int32", "float32": "Float32", "float64": "Float64"}.get(numpy_dtype, "Float32")

