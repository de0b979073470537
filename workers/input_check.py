"""Honest inputs: is the scene what the model was trained on, and does it hide an undeclared fill value?

The rules (the same in-process and in the service):

* **The model's input range**, per band, is its first and last thermometer thresholds — the 1/2K and
  1 − 1/2K quantiles of its training pixels — widened by their spread on either side
  (``workers.scene.model_ranges``; for landcover-landsat's blue band 68–106 becomes 30–144). Outside it the
  encoding is all off or all on whatever the value, and training never saw such pixels. On the data the
  shipped models were made for, under 1 % of pixels fall outside.
* A scene is **out of range** when, in some band, at least ``WARN_SHARE`` (10 %) of its valid pixels lie
  outside: a warning. At ``REFUSE_SHARE`` (90 %) or more — a 16-bit scene into an 8-bit model, say — it is
  **refused** at open (CLI exit 2, HTTP 422) naming the file, the share and a ``--scale`` that would bring
  the scene's median to the model's; an explicit ``--scale`` (``--scale 1`` to scan it as it is) turns the
  refusal back into a warning. Pixels are judged as the encoding sees them: after band mapping,
  resampling, fill masking, ``--scale`` and the card's normalisation.
* **Undeclared fill**: a pixel whose used bands all hold −9999, −99999 or float32's lowest value (where the
  pixel type can hold it) is masked as nodata wherever it occurs; so is 0 on every band once a sample shows
  such pixels along the scene's border (at least ``ZERO_BORDER_SHARE`` of the sampled border pixels, and
  ``ZERO_BORDER_MIN`` of them: the corner fill of a Landsat L1 scene with no nodata tag). Each masked value
  is warned about, with ``--nodata V`` as the way to declare it (a declared value is masked, never warned
  about; it adds to any nodata the file declares). On a resampled scene the fill value is also given to the
  warp, so it is not averaged into the data at its edge.

When: ``inspect`` decides at open from a sample — up to ``SAMPLE_GRID``² windows of ``SAMPLE_WINDOW``² model
pixels spread over the scene, corners and edges included (the whole scene when it is small): bounded memory
and time whatever the scene's size. Then every chip row the pipeline (or the service's chipper) reads is
counted exactly, each pixel once (``Scene.tally``), and report.json's ``warnings`` come from those exact
counts. The service records the decision in the job (``input_check``: fill values, warp value, scale, and
the normalisation statistics, so every worker reads identical pixels) and the chipper's exact counts
(``input_counts``, written once with the end of chipping, so a redelivered chipper cannot count twice).

Normalisation (``models.normalisation``): when the card asks for scene statistics they come from the same
sample's valid pixels, as the model sees them, once per job, and are applied by ``Scene.read`` to every
chip; report.json records them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from models import normalisation
from models.card import ModelCard
from spikescan.errors import InputOutOfRange, InvalidInput, InvalidScene, option
from workers.aoi import Aoi, from_text
from workers.scene import SENTINELS, PixelCounts, Scene, open_scene, representable

WARN_SHARE = 0.10
REFUSE_SHARE = 0.90
MIN_JUDGED = 100  # valid pixels needed before a share means anything
ZERO_BORDER_SHARE = 0.01
ZERO_BORDER_MIN = 4
SAMPLE_GRID = 8
SAMPLE_WINDOW = 128
SAMPLE_MIN = 3  # windows per axis on a scene larger than SAMPLE_GRID windows
SAMPLE_SPACING = 4 * SAMPLE_WINDOW  # one window per this many model pixels, up to SAMPLE_GRID per axis
BLOCK_MARGIN = 2  # model pixels kept from a block's edge: a resampling kernel reads a little around a window
MEDIAN_PIXELS = 1 << 16  # pixels kept for the medians behind the --scale hint (all of them for statistics)


@dataclass(frozen=True)
class InputOptions:
    """The user's explicit ways out: ``scale`` multiplies every pixel before the encoding (e.g. 1/257 for a
    16-bit export of 8-bit imagery), ``nodata`` declares a fill value."""

    scale: float | None = None
    nodata: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise InvalidInput(f"{option('scale')} must be a positive number, got {self.scale:g}")
        if self.nodata is not None and not math.isfinite(self.nodata):
            raise InvalidInput(
                f"{option('nodata')} must be a finite number (NaN is always nodata), got {self.nodata}"
            )


@dataclass
class InputCheck:
    """What ``inspect`` decided for a scene; JSON in the service's job record."""

    scale: float | None
    nodata: float | None
    fill_values: list[float]
    warp_nodata: float | None
    zero_fill: bool
    stats: normalisation.SceneStats | None
    sample: PixelCounts
    sampled_pixels: int
    medians: list[float | None] = field(default_factory=list)  # as the model sees them, before normalisation
    suggested_scale: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "scale": self.scale,
                "nodata": self.nodata,
                "fill_values": self.fill_values,
                "warp_nodata": self.warp_nodata,
                "zero_fill": self.zero_fill,
                "stats": self.stats.to_dict() if self.stats else None,
                "sample": self.sample.to_dict(),
                "sampled_pixels": self.sampled_pixels,
                "medians": self.medians,
                "suggested_scale": self.suggested_scale,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> InputCheck:
        d = json.loads(raw)
        return cls(
            scale=d["scale"],
            nodata=d["nodata"],
            fill_values=[float(v) for v in d["fill_values"]],
            warp_nodata=d["warp_nodata"],
            zero_fill=bool(d["zero_fill"]),
            stats=normalisation.SceneStats.from_dict(d["stats"]) if d["stats"] else None,
            sample=PixelCounts.from_dict(d["sample"]),
            sampled_pixels=int(d["sampled_pixels"]),
            medians=d["medians"],
            suggested_scale=d["suggested_scale"],
        )


# --- opening ------------------------------------------------------------------------------------------------
def open_checked(
    path: str | Path,
    card: ModelCard,
    bands: str | Sequence[int] | None = None,
    options: InputOptions | None = None,
    aoi: Aoi | None = None,
    **kwargs: Any,
) -> Scene:
    """``open_scene`` then ``inspect``: the scene configured as the job will read it, or an error. An ``aoi``
    is applied after the decision: fill values and statistics describe the scene, not a corner of it."""
    scene = open_scene(path, card, bands, **kwargs)
    try:
        inspect(scene, card, options or InputOptions())
        if aoi is not None:
            scene.clip_to(aoi)
    except BaseException:
        scene.close()
        raise
    return scene


def open_for_job(
    scene_path: str | Path,
    card: ModelCard,
    bands: str | None,
    extra: dict[str, str],
    *,
    with_counts: bool = False,
) -> Scene:
    """A service worker's scene: configured from the decision recorded in the job (``extra``) — never decided
    again, so every worker reads the very same pixels — and, ``with_counts`` (the mosaicker), the chipper's
    exact counts. The chipper itself starts from zero: a redelivered chipper counts every row again."""
    scene = open_scene(scene_path, card, bands or None)
    try:
        if extra.get("input_check"):
            apply(scene, card, InputCheck.from_json(extra["input_check"]))
        if extra.get("aoi"):
            scene.clip_to(from_text(extra["aoi"], "the job's aoi"))
        if with_counts and extra.get("input_counts"):
            scene.tally = PixelCounts.from_dict(json.loads(extra["input_counts"]))
    except BaseException:
        scene.close()
        raise
    return scene


def apply(scene: Scene, card: ModelCard, check: InputCheck) -> None:
    norm = (card.normalisation, check.stats) if check.stats is not None else None
    scene.configure(
        fill_values=check.fill_values, warp_nodata=check.warp_nodata, scale=check.scale, norm=norm
    )
    scene.check = check


def job_fields(scene: Scene) -> dict[str, str]:
    """What the service records in the job at submission: the decision and the early warnings."""
    return {"input_check": scene.check.to_json(), "warnings": json.dumps(warnings(scene))}


def chipped_fields(scene: Scene) -> dict[str, str]:
    """What the chipper records once every chip row is read: exact counts and the warnings from them."""
    return {"input_counts": json.dumps(scene.tally.to_dict()), "warnings": json.dumps(warnings(scene))}


# --- the decision -------------------------------------------------------------------------------------------
def inspect(scene: Scene, card: ModelCard, options: InputOptions) -> InputCheck:
    """Decide fill values, the warp's nodata, normalisation statistics; refuse a hopeless scene."""
    fills = [v for v in SENTINELS if representable(v, scene.dtypes)]
    if options.nodata is not None:
        if not representable(options.nodata, scene.dtypes):
            raise InvalidScene(
                f"{scene.path}: {option('nodata', _num(options.nodata))} cannot occur in its "
                f"{'/'.join(sorted(set(scene.dtypes)))} pixels"
            )
        fills.append(float(options.nodata))
    scene.configure(fill_values=fills, scale=options.scale)
    windows = sample_windows(scene.width, scene.height, scene.block_shape)
    keep_all = normalisation.needs_stats(card.normalisation)
    counts, pixels, zeros, border = _sample(scene, windows, keep_all)
    zero = 0.0 not in fills and zeros >= max(ZERO_BORDER_MIN, ZERO_BORDER_SHARE * border)
    if zero:
        fills.append(0.0)
    warp = _warp_value(scene, options, counts, zero)
    if zero or warp is not None:
        scene.configure(fill_values=fills, warp_nodata=warp, scale=options.scale)
        counts, pixels, _, _ = _sample(scene, windows, keep_all)
    stats = None
    if keep_all:  # the range is judged in the standardised units the encoding sees: count again
        stats = normalisation.SceneStats.from_sample(pixels)
        counts = PixelCounts(len(scene.band_indexes), fill=counts.fill)
        seen = normalisation.apply(pixels, card.normalisation, stats)
        counts.add_range(seen, np.ones(len(seen), bool), scene.ranges)
    medians = [float(np.median(pixels[:, b])) if len(pixels) else None for b in range(pixels.shape[1])]
    check = InputCheck(
        scale=options.scale,
        nodata=options.nodata,
        fill_values=fills,
        warp_nodata=warp,
        zero_fill=zero,
        stats=stats,
        sample=counts,
        sampled_pixels=sum(int(w.width * w.height) for w in windows),
        medians=medians,
        suggested_scale=None if stats else _suggest_scale(card, medians, options.scale),
    )
    apply(scene, card, check)
    _refuse_if_hopeless(scene, check, options)
    return check


def sample_windows(width: int, height: int, block: tuple[int, int] | None = None) -> list[Window]:
    """Up to ``SAMPLE_GRID``² windows, the first and last of each axis on the scene's edges; the whole scene
    when it is small. On a larger scene the windows per axis grow with its size (one per
    ``SAMPLE_SPACING`` model pixels, at least ``SAMPLE_MIN``) and, given the file's compressed blocks
    (``block``: width, height in model pixels), each window sits inside one block where it fits: a window
    that straddles four blocks costs four block decodes, and a grid of 8 × 8 straddling windows decoded
    every block of a 2k × 2k scene once before its first chip (measured: a third of its I/O floor)."""

    def spans(size: int, block_size: int | None) -> list[tuple[int, int]]:
        if size <= SAMPLE_GRID * SAMPLE_WINDOW:
            step = max(SAMPLE_WINDOW, math.ceil(size / SAMPLE_GRID))
            return [(o, min(step, size - o)) for o in range(0, size, step)]
        n = min(SAMPLE_GRID, max(SAMPLE_MIN, math.ceil(size / SAMPLE_SPACING)))
        starts = np.linspace(0, size - SAMPLE_WINDOW, n).round().astype(int).tolist()
        if block_size is not None and block_size >= SAMPLE_WINDOW + 2 * BLOCK_MARGIN:
            inner = []
            for o in starts[1:-1]:
                b0 = (o // block_size) * block_size
                hi = min(b0 + block_size, size) - SAMPLE_WINDOW - BLOCK_MARGIN
                inner.append(min(max(o, b0 + BLOCK_MARGIN), max(hi, b0)))
            starts = [starts[0], *inner, starts[-1]]
        return [(o, SAMPLE_WINDOW) for o in sorted(set(starts))]

    bw, bh = block if block is not None else (None, None)
    return [Window(x, y, w, h) for y, h in spans(height, bh) for x, w in spans(width, bw)]


def _sample(scene: Scene, windows: list[Window], keep_all: bool) -> tuple[PixelCounts, np.ndarray, int, int]:
    """Counts (fill values; range before any normalisation), valid pixels [n, B] as the model sees them
    before normalisation (all, or about ``MEDIAN_PIXELS`` evenly taken), and the valid all-zero pixels on
    the scene's border with the number of border pixels sampled. Memory: one window at a time, plus what
    is kept."""
    bands = len(scene.band_indexes)
    counts = PixelCounts(bands)
    step = 1 if keep_all else max(1, math.ceil(sum(w.width * w.height for w in windows) / MEDIAN_PIXELS))
    kept: list[np.ndarray] = []
    zeros = border = 0
    for w in windows:
        px, ok = scene.read(w, counts, int(w.height))
        kept.append(px.reshape(-1, bands)[np.flatnonzero(ok)[::step]])
        edges = []
        if w.row_off == 0:
            edges.append((px[0], ok[0]))
        if w.row_off + w.height == scene.height:
            edges.append((px[-1], ok[-1]))
        if w.col_off == 0:
            edges.append((px[:, 0], ok[:, 0]))
        if w.col_off + w.width == scene.width:
            edges.append((px[:, -1], ok[:, -1]))
        for line, line_ok in edges:
            border += len(line)
            zeros += int(np.count_nonzero(line_ok & (line == 0).all(axis=-1)))
    pixels = np.concatenate(kept) if kept else np.zeros((0, bands), np.float32)
    return counts, pixels, zeros, border


def _warp_value(scene: Scene, options: InputOptions, counts: PixelCounts, zero: bool) -> float | None:
    """The fill value to hand the resampler: none when nothing is resampled or the file declares its own."""
    if not scene.resampled or scene.declares_nodata:
        return None
    if options.nodata is not None:
        return float(options.nodata)
    if zero:
        return 0.0
    found = [(n, v) for v, n in counts.fill.items() if n]
    return max(found)[1] if found else None


def _suggest_scale(card: ModelCard, medians: list[float | None], scale: float | None) -> float | None:
    """The factor that brings the scene's median to the model's (the median of the bands' ratios)."""
    ratios = []
    for row, med in zip(card.encoding.thresholds, medians, strict=True):
        mid = row[len(row) // 2]
        if med is not None and med > 0 and mid > 0:
            ratios.append(mid / med)
    if not ratios:
        return None
    factor = float(np.median(ratios)) * (scale or 1.0)
    return float(f"{factor:.2g}")


def _refuse_if_hopeless(scene: Scene, check: InputCheck, options: InputOptions) -> None:
    worst = _worst_band(check.sample)
    if worst is None or options.scale is not None:
        return
    band, share = worst
    if share < REFUSE_SHARE:
        return
    lo, hi = scene.ranges[band]  # type: ignore[misc]
    hint = option("scale", _num(check.suggested_scale) if check.suggested_scale else "F")
    raise InputOutOfRange(
        f"{scene.path}: {_pct(share)} of its valid pixels in band {scene.band_names[band]} lie outside the "
        f"model's input range ({lo:.4g} to {hi:.4g}), its answers would mean nothing; rescale the pixels "
        f"with {hint}, or set {option('scale', 1)} to scan it as it is"
    )


# --- warnings and the report --------------------------------------------------------------------------------
def warnings(scene: Scene) -> list[dict[str, Any]]:
    """report.json's ``warnings``: from the exact counts once chip rows were read, else from the sample."""
    exact = bool(scene.tally.valid or scene.tally.fill)
    check: InputCheck | None = scene.check
    if not exact and check is None:
        return []
    counts = scene.tally if exact else check.sample  # type: ignore[union-attr]
    counted = "all pixels" if exact else f"a sample of {check.sampled_pixels:,} pixels"  # type: ignore[union-attr]
    note = "" if exact else f" (in {counted} read at open)"
    out = []
    declared = check.nodata if check else None
    for value, n in sorted(counts.fill.items()):
        if n and value != declared:
            where = " along the scene's border" if value == 0 else ""
            out.append(
                {
                    "code": "undeclared_fill",
                    "message": (
                        f"{n:,} pixels{note} hold {_num(value)} on every band{where}, a fill value the file "
                        "does not declare: masked as nodata (no spikes, no detections, nodata in "
                        f"classes.tif); declare it with --nodata {_num(value)} (API: nodata)"
                    ),
                    "value": value,
                    "pixels": n,
                    "counted": counted,
                }
            )
    worst = _worst_band(counts)
    if worst is not None and worst[1] >= WARN_SHARE:
        out.append(_range_warning(scene, counts, check, worst, counted, note))
    return out


def _range_warning(
    scene: Scene,
    counts: PixelCounts,
    check: InputCheck | None,
    worst: tuple[int, float],
    counted: str,
    note: str,
) -> dict[str, Any]:
    band, share = worst
    lo, hi = scene.ranges[band]  # type: ignore[misc]
    units = " (standardised units)" if scene.norm is not None else ""
    hint = ""
    if check is not None and check.suggested_scale and scene.norm is None:
        hint = f"; rescale the pixels with --scale {_num(check.suggested_scale)} (API: scale)"
    shares = {
        name: round((counts.below[b] + counts.above[b]) / counts.valid, 4)
        for b, name in enumerate(scene.band_names)
    }
    return {
        "code": "out_of_range",
        "message": (
            f"{_pct(share)} of valid pixels{note} in band {scene.band_names[band]} lie outside the "
            f"model's input range {lo:.4g} to {hi:.4g}{units}: the network cannot tell those values apart "
            f"and never saw their like in training, its answers there are not to be trusted{hint}"
        ),
        "share": round(share, 4),
        "band_shares": shares,
        "below": dict(zip(scene.band_names, counts.below, strict=True)),
        "above": dict(zip(scene.band_names, counts.above, strict=True)),
        "valid_pixels": counts.valid,
        "counted": counted,
        "suggested_scale": check.suggested_scale if check else None,
    }


def report_inputs(scene: Scene) -> dict[str, Any]:
    """report.json's ``inputs``: what was done to the pixels and what was counted."""
    check: InputCheck | None = scene.check
    norm = scene.norm
    return {
        "scale": scene.scale,
        "nodata": check.nodata if check else None,
        "fill_values_masked": list(scene.fill_values),
        "resampling_nodata": scene.warp_nodata,
        "model_range": {
            name: list(lim) if lim else None for name, lim in zip(scene.band_names, scene.ranges, strict=True)
        },
        "counts": scene.tally.to_dict() | {"bands": scene.band_names},
        "normalisation": (
            {"kind": norm[0].kind, **norm[1].to_dict(), "from": "the sample read at open"}
            if norm
            else {"kind": "none"}
        ),
        # The processing extent's bounds in the scene's CRS (pixels outside it were read as no data).
        "aoi_bounds": list(scene.aoi.outline.bounds) if scene.aoi is not None else None,
    }


def _worst_band(counts: PixelCounts) -> tuple[int, float] | None:
    if counts.valid < MIN_JUDGED:
        return None
    shares = [(b + a) / counts.valid for b, a in zip(counts.below, counts.above, strict=True)]
    band = int(np.argmax(shares))
    return band, shares[band]


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))
