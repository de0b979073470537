"""Table 4: energy per km² of the SpiNNaker plan against the CPU emulator measured here, and the floor.

Every energy figure is an ESTIMATE:
- board: the planner's projection (``workers/spinnaker/planner.py``; power model in ``energy.py``), one board;
- CPU: the emulator's patches/s measured on this machine's cores, priced under the two power bases of
  ``cpu_power.py`` (a core's share of package TDP; a whole server's wall power per core);
- floor: what no change to the network can beat. Each km²'s raw pixel bytes must cross the 100 Mb/s host
  link at least once (sample size of the model's own scene, bands of the model, at the model's GSD), and
  the board draws at least its idle power meanwhile. ``level_code`` is the same for a host that sent the
  model's input levels packed in bits instead of pixels: lower, but still a floor for the board.
Area per patch follows the planner: one patch per (patch/2 x GSD)², the default chip stride. Ratios above 1
mean the board needs that many times the CPU's energy per km²; nothing here is tuned for either side.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import rasterio

from models import package as model_package
from models.emulator import Emulator
from models.package import ModelPackage
from workers.bench import cpu_power
from workers.bench.child import best_rate, run_child
from workers.samples import default_scene, real_patches
from workers.spinnaker import energy, link, planner


def floor(pkg: ModelPackage) -> dict[str, Any]:
    card = pkg.card
    with rasterio.open(default_scene(pkg)) as scene:
        sample_bytes = int(np.dtype(scene.dtypes[0]).itemsize)
    raw = link.raw_pixel_bytes_per_km2(card.gsd_m, len(card.bands), sample_bytes)
    levels = link.level_code_bytes_per_km2(card.gsd_m, len(card.bands), card.encoding.levels)
    return {
        "gsd_m": card.gsd_m,
        "bands": len(card.bands),
        "bytes_per_sample": sample_bytes,
        "raw_bytes_per_km2": raw,
        "link_seconds_per_km2": raw / link.LINK_BYTES_PER_S,
        "j_per_km2_estimate": energy.floor_joules_per_km2(raw, link.LINK_BYTES_PER_S),
        "level_code_bytes_per_km2": levels,
        "level_code_j_per_km2_estimate": energy.floor_joules_per_km2(levels, link.LINK_BYTES_PER_S),
    }


def one_model(name: str, patches: int, threads: int) -> dict[str, Any]:
    pkg = model_package.load(name)
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    plan = planner.plan(pkg, 1)  # samples its own >= 512 patches
    emulator = Emulator(pkg)
    rate = best_rate(lambda: emulator.run(pixels, valid), len(pixels), 3)
    km2 = energy.km2_per_patch(pkg.card.patch_size, pkg.card.gsd_m)
    cpu = {b.name: b.watts_per_core * threads / rate / km2 for b in cpu_power.BASES}
    board_j = plan.energy_per_km2_j
    bottom = floor(pkg)
    return {
        "model": name,
        "board": {
            "copies_per_board": plan.copies_per_board,
            "patches_per_s": plan.projected_patches_per_s,
            "compute_patches_per_s": plan.compute_patches_per_s,
            "host_link_patches_per_s": plan.host_link_patches_per_s,
            "bottleneck": plan.bottleneck,
            "host_link_bytes_per_km2": plan.host_link_bytes_per_km2,
            "j_per_km2_estimate": board_j,
            "shared_input_j_per_km2_estimate": (plan.shared_input or {}).get("energy_per_km2_j"),
            "shared_input_status": (plan.shared_input or {}).get("status"),
        },
        "cpu": {
            "emulator_patches_per_s": round(rate, 1),
            "threads": threads,
            "path": emulator.path,
            "j_per_km2_estimate": cpu,
        },
        "floor": bottom,
        "km2_per_patch": km2,
        "board_over_cpu": {k: board_j / v for k, v in cpu.items()},
        "floor_over_cpu": {k: bottom["j_per_km2_estimate"] / v for k, v in cpu.items()},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    patches = 128 if args.quick else 512
    rows = [one_model(p.name, patches, args.threads) for p in sorted(model_package.available())]
    return {
        "cpu_power_bases": {
            b.name: {"watts_per_core": round(b.watts_per_core, 3), "source": b.source}
            for b in cpu_power.BASES
        },
        "board_power": energy.NOTE,
        "link_bytes_per_s": link.LINK_BYTES_PER_S,
        "estimates": "all energy figures are estimates; the CPU figures price this machine's measured "
        "emulator rate at another CPU's power",
        "models": rows,
    }


if __name__ == "__main__":
    run_child(measure)
