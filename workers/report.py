"""``report.json`` and the one-screen summary the CLI prints: what a job cost and what it produced."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Stopwatch:
    """Wall time per stage; a stage entered several times (once per chip row) accumulates."""

    seconds: dict[str, float] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(v, 4) for k, v in self.seconds.items()}, "total": round(self.total, 4)}


@dataclass
class Counters:
    chips_total: int = 0
    chips_skipped: int = 0
    chips_processed: int = 0
    spikes: int = 0
    detections: int = 0  # features in detections.geojson (boxes or regions)


def build_report(
    *,
    scene: str | Path,
    scene_name: str | None = None,
    source_shape: tuple[int, int],
    model: dict[str, str],
    backend: str,
    copies: int,
    energy_per_chip_j: float | None,
    grid: dict[str, int],
    counters: Counters,
    watch: Stopwatch,
    resampling: str | None,
    detections: int,
    outputs: dict[str, str],
    inputs: dict[str, Any] | None = None,
    warnings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """report.json. ``warnings`` (a list of ``{code, message, ...}``: pixels outside the model's input range,
    undeclared fill values masked) and ``inputs`` (scale, fill values, model range, exact pixel counts,
    normalisation statistics) come from ``workers.input_check``."""
    wall = max(watch.total, 1e-9)
    processed = counters.chips_processed
    energy = None if energy_per_chip_j is None else energy_per_chip_j * processed
    return {
        "scene": str(scene),
        "scene_name": scene_name or Path(str(scene)).name,
        "scene_shape": list(source_shape),
        "model": model,
        "backend": backend,
        "copies_used": copies,
        "grid": grid,
        "chips": {"total": counters.chips_total, "skipped": counters.chips_skipped, "processed": processed},
        "chips_per_s": round(counters.chips_total / wall, 3),
        # Scene pixels as stored (before any resampling) per second of the whole job.
        "megapixels_per_s": round(source_shape[0] * source_shape[1] / 1e6 / wall, 4),
        "spikes_total": counters.spikes,
        "spikes_per_chip": round(counters.spikes / processed, 2) if processed else 0.0,
        "energy_per_chip_j": energy_per_chip_j,
        "energy_j": energy,
        "detections": detections,
        "resampling": resampling,
        "wall_time_s": watch.as_dict(),
        "outputs": outputs,
        "warnings": list(warnings or []),
        "inputs": inputs or {},
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    # Whole or absent: a mosaicker that finds report.json from a run cut off after writing it trusts it.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


# Backends whose chips run on SpiNNaker hardware; report.json keeps the estimate for every backend.
BOARD_BACKENDS = frozenset({"spinnaker"})


def summary(report: dict[str, Any], out_dir: Path | str) -> str:
    chips = report["chips"]
    energy = report["energy_j"]
    rates = (
        f"{report['chips_per_s']:.1f} chips/s, {report['megapixels_per_s']:.3f} MP/s, "
        f"{report['spikes_per_chip']:.0f} spikes/chip"
    )
    # Board energy only for a run on a board: on a CPU (emulator, NEST) it would read as this run's own cost.
    if report["backend"] in BOARD_BACKENDS and energy is not None:
        rates += f", board energy {energy:.3g} J (estimate, SpiNN-5 power model)"
    lines = [
        f"scanned {chips['processed']} of {chips['total']} chips ({chips['skipped']} all-nodata skipped) "
        f"with {report['model']['name']} on {report['backend']} in {report['wall_time_s']['total']:.2f} s",
        rates,
        f"{report['detections']} detections",
    ]
    if report["resampling"]:
        lines.append(report["resampling"])
    if report.get("warnings"):
        codes = ", ".join(sorted({w["code"] for w in report["warnings"]}))
        lines.append(f"{len(report['warnings'])} warning(s) about the input ({codes}): see report.json")
    lines.append(f"outputs in {out_dir}: " + ", ".join(sorted(report["outputs"])))
    return "\n".join(lines)
