"""The ``--images`` of ``spikescan train --task``: what each one is, and which of its bands the model reads.

An image is a GeoTIFF (a path, or a URL: ``https://``, ``s3://``, ``/vsicurl/``, ``/vsis3/``, opened through
the scene-source seam ``workers.sources``) or a STAC Item (a ``.json`` path or URL) whose band assets
``workers.stac_input`` stacks into one in-memory VRT, exactly as ``spikescan predict`` stacks them.

``--bands`` lists the model's bands in order, either as 1-based numbers (GeoTIFFs only: a STAC Item's bands
are separate assets, with no numbers) or as names: a STAC Item's common names, names or asset keys (picked as
``predict`` picks them), a GeoTIFF's band descriptions or colour interpretations. The card records the
names, and for an Item the assets' common names, so ``predict`` on the same Item picks the same assets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import rasterio

from models.card import Band
from spikescan.errors import InvalidInput, option
from workers import sources, stac_input
from workers.scene import bands_by_name
from workers.sources import SceneSource

# A local file, or a URL (https://, s3://, /vsicurl/, /vsis3/) kept as the user wrote it.
ImageRef = Path | str
BandChoice = list[int] | list[str]
_NUMBER = re.compile(r"[+-]?\d+")


def image_ref(text: str | Path) -> ImageRef:
    """A ``--images`` argument: a local path, or a URL left as a string (``Path`` would fold its ``//``)."""
    if isinstance(text, Path):
        return text
    if text.lstrip().startswith("{"):
        raise InvalidInput("--images takes a STAC Item by its path or URL, not inline JSON")
    scheme = urlsplit(text).scheme.lower()
    return text if scheme in ("http", "https", "s3") or text.startswith("/vsi") else Path(text)


def image_name(ref: ImageRef) -> str:
    """The image's file name (a URL's last path segment)."""
    return ref.name if isinstance(ref, Path) else sources.url_file_name(ref)


def scene_gsd(src: rasterio.DatasetReader, shown: str) -> float:
    """The pixel size in metres of a projected scene; ``shown`` names it (a STAC Item's dataset name is its
    VRT's XML)."""
    if src.crs is None:
        raise InvalidInput(f"{shown}: the scene has no coordinate reference system")
    if src.crs.is_geographic:
        raise InvalidInput(f"{shown}: training needs a projected scene (metres); this one is in degrees")
    factor = src.crs.linear_units_factor[1]
    return float(abs(src.transform.a) * factor)


@dataclass(frozen=True)
class TrainingImage:
    """One ``--images`` argument resolved: what GDAL opens and which of its bands, in the model's order."""

    ref: ImageRef  # as the user gave it: what the card records
    source: SceneSource
    bands: list[int]  # 1-based bands of ``source``
    item: stac_input.Item | None = None
    picks: tuple[stac_input.Pick, ...] = ()  # a STAC Item's asset band for each model band

    @property
    def name(self) -> str:
        """The scene's name: the Item's id, else the file name without its suffix."""
        return self.item.id if self.item is not None else image_name(self.ref).rsplit(".", 1)[0]

    @contextmanager
    def opened(self) -> Iterator[rasterio.DatasetReader]:
        """The raster opened with its GDAL settings in force for every read inside the block (a VRT opens
        its asset files lazily, on the first read)."""
        with self.source.env(), sources.opened(self.source) as src:
            yield src


def parse_bands(text: str | Sequence[int] | None) -> BandChoice | None:
    """``--bands`` as 1-based numbers or as names; None when not given."""
    if text is None:
        return None
    if not isinstance(text, str):
        return [int(b) for b in text]
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise InvalidInput(f"--bands {text!r}: an empty entry (give comma-separated numbers or names)")
    numbers = [bool(_NUMBER.fullmatch(p)) for p in parts]
    if all(numbers):
        bands = [int(p) for p in parts]
        if min(bands) < 1:
            raise InvalidInput(f"--bands must be 1-based band numbers, got {text!r}")
        return bands
    if any(numbers):
        raise InvalidInput(f"--bands {text!r} mixes band numbers and names: give one or the other")
    return parts


def resolve(refs: Sequence[str | Path], bands: str | Sequence[int] | None) -> list[TrainingImage]:
    """Every image with the bands to read; without ``--bands``, all of the first image's bands (the same
    numbers for the others). Any problem is an ``InvalidInput`` naming the image."""
    choice = parse_bands(bands)
    images: list[TrainingImage] = []
    for text in refs:
        image = _resolve(image_ref(text), choice)
        choice = choice or image.bands
        images.append(image)
    return images


def _resolve(ref: ImageRef, choice: BandChoice | None) -> TrainingImage:
    if sources.is_stac(ref):
        return _stac_image(ref, choice)
    source = sources.resolve(ref)
    with source.env(), sources.opened(source) as src:
        if choice is None:
            return TrainingImage(ref, source, list(range(1, src.count + 1)))
        if isinstance(choice[0], int):
            if max(choice) > src.count:  # type: ignore[type-var]
                raise InvalidInput(f"{ref}: has {src.count} bands, --bands asks for band {max(choice)}")  # type: ignore[type-var]
            return TrainingImage(ref, source, [int(b) for b in choice])
        by_name = bands_by_name(src)
        missing = [str(n) for n in choice if str(n).lower() not in by_name]
        if missing:
            have = ", ".join(sorted(by_name)) or "none"
            raise InvalidInput(f"{ref}: no band named {missing[0]!r} (by description or colour "
                               f"interpretation; it has {have}): give {option('bands')} as 1-based numbers")
        return TrainingImage(ref, source, [by_name[str(n).lower()] for n in choice])


def _stac_image(ref: ImageRef, choice: BandChoice | None) -> TrainingImage:
    item = stac_input.load(str(ref))
    if choice is None or isinstance(choice[0], int):
        raise InvalidInput(f"{item.shown}: a STAC Item's bands are separate assets: name them in the model's "
                           f"order, e.g. --bands red,green,blue (the Item offers "
                           f"{', '.join(stac_input.offered(item)) or 'none'})")
    picks = stac_input.pick_bands(item, [Band(name=str(n)) for n in choice], whose="the requested")
    return TrainingImage(ref, stac_input.stack(item, picks), list(range(1, len(picks) + 1)), item,
                         tuple(picks))


def card_bands(image: TrainingImage) -> list[dict[str, str | None]]:
    """The card's bands as the scanner matches them: a STAC Item's by the names asked for and the assets'
    common names (what ``stac_input.pick`` looks for); a GeoTIFF's by description, else colour name."""
    if image.item is not None:
        return [{"name": p.band, "common_name": p.common_name,
                 "description": f"asset {p.key} (band {p.index}) of STAC Item {image.item.id}"}
                for p in image.picks]
    with image.opened() as src:
        out: list[dict[str, str | None]] = []
        for b in image.bands:
            desc = (src.descriptions[b - 1] or "").strip()
            ci = src.colorinterp[b - 1].name
            name = desc or (ci if ci not in ("undefined", "gray", "alpha") else f"band{b}")
            what = f"band {b} of the training scenes ({src.dtypes[b - 1]})"
            out.append({"name": name, "description": what})
    return out


def stac_provenance(image: TrainingImage) -> dict[str, object]:
    """A STAC Item's id, where it was read and every band's asset: what the card records of it."""
    assert image.item is not None
    href = str(image.ref.absolute()) if isinstance(image.ref, Path) else image.ref
    return {"id": image.item.id, "href": href,
            "assets": [{"band": p.band, "key": p.key, "href": p.href, "asset_band": p.index,
                        "scale": p.scale, "offset": p.offset} for p in image.picks]}
