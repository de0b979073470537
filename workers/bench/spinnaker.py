"""Table 4: the SpiNNaker planner's projection per model next to the emulator measured on this CPU.

CPU energy is an ESTIMATE: one typical server core's share of a package TDP, ``CPU_WATTS_PER_CORE`` per thread
(AMD EPYC 7763, 64 cores, 280 W TDP — AMD's product page), whatever CPU the bench runs on (cloud machines
rarely name their SKU). It ignores memory, uncore and idle power, so it flatters the CPU. Area per patch
follows the planner: one patch per (patch/2 x GSD)^2, the default chip stride.
"""

from __future__ import annotations

import argparse
from typing import Any

from models import package as model_package
from models.emulator import Emulator
from workers.bench.child import best_rate, run_child
from workers.samples import default_scene, real_patches
from workers.spinnaker import planner

CPU_WATTS_PER_CORE = 280.0 / 64
CPU_POWER_SOURCE = (
    "one server core's share of a package TDP, AMD EPYC 7763: 280 W / 64 cores (amd.com product page); "
    "not this machine's measured power (whatever its CPU); estimate"
)


def one_model(name: str, patches: int, threads: int) -> dict[str, Any]:
    pkg = model_package.load(name)
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    plan = planner.plan(pkg, 1)  # samples its own >= 512 patches
    emulator = Emulator(pkg)
    rate = best_rate(lambda: emulator.run(pixels, valid), len(pixels), 3)
    km2_per_patch = (pkg.card.patch_size // 2 * pkg.card.gsd_m) ** 2 / 1e6
    cpu_j_per_patch = CPU_WATTS_PER_CORE * threads / rate
    return {
        "model": name,
        "copies_per_board": plan.copies_per_board,
        "spinnaker_patches_per_s": plan.projected_patches_per_s,
        "spinnaker_bottleneck": plan.bottleneck,
        "spinnaker_j_per_km2_estimate": round(plan.energy_per_km2_j, 3),
        "emulator_patches_per_s": round(rate, 1),
        "cpu_j_per_km2_estimate": round(cpu_j_per_patch / km2_per_patch, 3),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    patches = 128 if args.quick else 512
    rows = [one_model(p.name, patches, args.threads) for p in sorted(model_package.available())]
    return {
        "cpu_watts_assumed": CPU_WATTS_PER_CORE * args.threads,
        "cpu_power_source": CPU_POWER_SOURCE,
        "models": rows,
    }


if __name__ == "__main__":
    run_child(measure)
