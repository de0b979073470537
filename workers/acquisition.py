"""When the scene was acquired, from the metadata producers put in GeoTIFFs — for STAC's ``datetime``.

Looked for, most specific first: vendor acquisition tags (``ACQUISITIONDATETIME`` of GDAL's IMAGERY
domain, filled from DigitalGlobe/Pleiades/... sidecars; ``ACQUISITION_DATETIME``, ``DATE_ACQUIRED`` +
``SCENE_CENTER_TIME`` as Landsat MTL copies write them), then the TIFF ``DateTime`` tag
(``TIFFTAG_DATETIME``, which cameras and orthophoto tools set to the capture time). A date without a time
of day is a whole-day range. Nothing found: ``None`` — the STAC Item then says the acquisition time is
unknown rather than passing the processing time off as it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import rasterio

# (namespace, key) in the order they are trusted.
_DATETIME_TAGS = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    ("", "ACQUISITIONDATETIME"),
    ("", "ACQUISITION_DATETIME"),
    ("", "ACQUISITION_DATE"),
    ("", "DATE_ACQUIRED"),
    ("", "TIFFTAG_DATETIME"),
)
_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y%m%d%H%M%S", "%Y%m%d")


@dataclass(frozen=True)
class Acquired:
    """An instant (``start == end``) or a range (a date without a time: that whole day, UTC)."""

    start: dt.datetime
    end: dt.datetime
    source: str  # the tag it came from

    @property
    def instant(self) -> bool:
        return self.start == self.end


def from_dataset(src: rasterio.DatasetReader) -> Acquired | None:
    """The acquisition time in ``src``'s metadata, or None."""
    domains: dict[str, dict[str, str]] = {}
    for ns, key in _DATETIME_TAGS:
        if ns not in domains:
            domains[ns] = _tags(src, ns)
        raw = domains[ns].get(key)
        if raw and (found := parse(raw, key)) is not None:
            if key == "DATE_ACQUIRED" and not found.instant and domains[""].get("SCENE_CENTER_TIME"):
                found = _with_time(found, domains[""]["SCENE_CENTER_TIME"]) or found
            return found
    return None


def parse(raw: str, source: str = "") -> Acquired | None:
    text = raw.strip().strip('"')
    if not text:
        return None
    # A bare date: the acquisition was some time that day.
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        return Acquired(start, start + dt.timedelta(days=1) - dt.timedelta(seconds=1), source)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
        for fmt in _FORMATS:
            try:
                when = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if when is None or when.year < 1850:  # "0000:00:00 00:00:00" and other placeholders
        return None
    # No zone given: UTC, as TIFF's DateTime and most producers' tags are written.
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    return Acquired(when, when, source)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_time(day: Acquired, clock: str) -> Acquired | None:
    return parse(f"{day.start.date().isoformat()}T{clock.strip().strip(chr(34))[:8]}", day.source)


def _tags(src: rasterio.DatasetReader, ns: str) -> dict[str, str]:
    try:
        return {k.upper(): v for k, v in (src.tags(ns=ns) if ns else src.tags()).items()}
    except rasterio.errors.RasterioError:
        return {}
