"""How many tiled copies of a model fit on SpiNNaker boards, how fast they would scan, at what energy.

The plan counts cores the way sPyNNaker 7.4.1 splits our network (``workers/backends/pynn_build.py``): every
copy has its own populations; a neuron population takes ``ceil(n / atoms_per_core)`` cores (256 neurons per
core unless a synaptic row would exceed the board's 256-synapse limit); a copy's spike-source input takes
one core per 4096 sources; one clock source is shared by all copies. Copies that fit =
(application cores − shared) // cores per
copy, where a 48-chip SpiNN-5 board offers 759 application cores (measured on sPyNNaker's virtual board: 856
cores, 48 monitors, 49 system cores). ``--map`` asks sPyNNaker itself to place N and N + 1 copies on a virtual
board and reports whether it agrees; results are cached per (model id, copies, boards).

Energy is an ESTIMATE from the SpiNN-5 power model sPyNNaker itself uses (spinn_machine/version/
version_5.py and version_spin1.py, citing Stromatias et al., "Power analysis of large-scale, real-time neural
networks on SpiNNaker", IJCNN 2013, and Painkras et al., "SpiNNaker: a 1-W 18-core system-on-chip",
JSSC 2013):
26.84 W per idle 48-chip board, +0.034 W per active core, 1 nJ per multicast packet (25 pJ/bit x 40 bits).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import package as model_package
from models.emulator import Emulator
from models.package import ModelPackage
from models.pynn_net import NetworkDescription, atoms_per_core, describe
from spikescan.config import Settings, get_settings
from spikescan.errors import InvalidInput
from workers.backends.pynn_build import INPUT_ATOMS_PER_CORE, NEURONS_PER_CORE
from workers.spinnaker.workspace import Workspace

APP_CORES_PER_BOARD = 759
TIMESTEP_S = 1e-3
HOST_LINK_BYTES_PER_S = 100e6 / 8
BYTES_PER_SPIKE = 4  # one 32-bit multicast key per spike in the host's packets (headers ignored: estimate)
BOARD_IDLE_W = 26.84
CORE_ACTIVE_W = 0.034
JOULES_PER_PACKET = 25e-12 * 40
MAP_TIMEOUT_S = 1800.0


@dataclass
class Plan:
    model: str
    model_id: str
    boards: int
    neurons_per_copy: int
    synapses_per_copy: int
    cores_per_copy: int
    cores_by_population: dict[str, int]
    shared_cores: int
    application_cores: int
    copies_per_board: int
    copies: int
    input_spikes_per_patch: float
    spikes_per_patch: float
    host_link_patches_per_s: float
    board_patches_per_s: float
    projected_patches_per_s: float
    bottleneck: str
    energy_per_patch_j: float
    energy_per_km2_j: float
    energy_note: str = "estimate: SpiNN-5 power model (see workers/spinnaker/planner.py for sources)"
    mapping: dict[str, Any] | None = field(default=None)
    board_weights: dict[str, Any] | None = field(default=None)


def cores_by_population(net: NetworkDescription) -> dict[str, int]:
    cores = {}
    for pop in net.populations:
        if pop.name == "clock":
            continue
        if pop.is_source:
            cores["input"] = cores.get("input", 0) + math.ceil(pop.size / INPUT_ATOMS_PER_CORE)
        else:
            cores[pop.name] = math.ceil(pop.size / atoms_per_core(net, pop.name, NEURONS_PER_CORE))
    return cores


def spikes_per_patch(pkg: ModelPackage) -> tuple[float, float]:
    """(input spikes, all spikes) per patch, measured by the emulator on real held-out patches."""
    from workers.crosscheck import default_scene, real_patches

    pixels, valid = real_patches(pkg, default_scene(pkg), 64)
    counts = Emulator(pkg).run(pixels, valid).spikes_per_layer
    return float(counts[:, 0].mean()), float(counts.sum(axis=1).mean())


def plan(pkg: ModelPackage, boards: int = 1, spikes: tuple[float, float] | None = None) -> Plan:
    if boards < 1:
        raise InvalidInput("--boards must be at least 1")
    net = describe(pkg)
    per_pop = cores_by_population(net)
    per_copy, shared = sum(per_pop.values()), 1
    app_cores = APP_CORES_PER_BOARD * boards
    copies = max((app_cores - shared) // per_copy, 0)
    if copies == 0:
        raise InvalidInput(
            f"{pkg.name}: one copy needs {per_copy} cores, more than {app_cores} on {boards} board(s)"
        )
    in_spikes, all_spikes = spikes if spikes is not None else spikes_per_patch(pkg)
    out_spikes = float(len(pkg.card.population_code.owner))  # upper bound on what streams back per cell map
    link, board_rate, per_patch = throughput_and_energy(
        boards, copies, copies * per_copy + shared, in_spikes + out_spikes, all_spikes
    )
    rate = min(link, board_rate)
    stride_m = pkg.card.patch_size // 2 * pkg.card.gsd_m
    return Plan(
        model=pkg.name,
        model_id=pkg.id,
        boards=boards,
        neurons_per_copy=net.neurons,
        synapses_per_copy=net.synapses,
        cores_per_copy=per_copy,
        cores_by_population=per_pop,
        shared_cores=shared,
        application_cores=app_cores,
        copies_per_board=copies // boards,
        copies=copies,
        input_spikes_per_patch=round(in_spikes, 1),
        spikes_per_patch=round(all_spikes, 1),
        host_link_patches_per_s=round(link, 1),
        board_patches_per_s=round(board_rate, 1),
        projected_patches_per_s=round(rate, 1),
        bottleneck="host link (100 Mb/s)"
        if link < board_rate
        else "board (one patch per copy per 1 ms step)",
        energy_per_patch_j=per_patch,
        energy_per_km2_j=per_patch * 1e6 / stride_m**2,
    )


def throughput_and_energy(
    boards: int, copies: int, active_cores: int, link_spikes: float, all_spikes: float
) -> tuple[float, float, float]:
    """(host-link patches/s, board patches/s, joules per patch) — the energy an ESTIMATE (module docstring).

    Power is drawn whether or not the copies are fed: per patch it is spread over the patches actually scanned
    per second, so a link-bound plan pays for idle copies.
    """
    link = HOST_LINK_BYTES_PER_S / (BYTES_PER_SPIKE * max(link_spikes, 1.0))
    board_rate = copies / TIMESTEP_S
    watts = BOARD_IDLE_W * boards + CORE_ACTIVE_W * active_cores
    return link, board_rate, watts / min(link, board_rate) + JOULES_PER_PACKET * all_spikes


def card_estimate(pkg: ModelPackage) -> float | None:
    """Energy per patch on one board from what the card records (``spinnaker_plan`` and the spikes per
    patch measured in training), without rebuilding the network: None when the card lacks either."""
    planned, spikes = pkg.card.metrics.get("spinnaker_plan"), pkg.card.metrics.get("spikes_per_patch")
    if not isinstance(planned, dict) or not isinstance(spikes, dict) or "input" not in spikes:
        return None
    boards = int(planned.get("boards", 1))
    copies, per_copy = int(planned["copies_per_board"]) * boards, int(planned["cores_per_copy"])
    total = float(sum(float(v) for v in spikes.values()))
    link_spikes = float(spikes["input"]) + len(pkg.card.population_code.owner)
    return throughput_and_energy(boards, copies, copies * per_copy + 1, link_spikes, total)[2]


def confirm(pkg: ModelPackage, result: Plan, settings: Settings) -> dict[str, Any]:
    """Map ``copies`` and ``copies + 1`` with sPyNNaker; if the first fails, search down for what does map."""
    n = result.copies
    fits = map_copies(pkg, n, result.boards, settings)
    over = map_copies(pkg, n + 1, result.boards, settings)
    placed, seconds = (n if fits["ok"] else 0), fits["seconds"] + over["seconds"]
    low = n
    while not fits["ok"] and low > 1:
        low = low // 2
        fits = map_copies(pkg, low, result.boards, settings)
        seconds += fits["seconds"]
        placed = low if fits["ok"] else 0
    return {
        "copies_placed": placed,
        "agrees": bool(fits["ok"] and placed == n and not over["ok"]),
        "next_fails": not over["ok"],
        "next_failure": over.get("limit"),
        "next_error": over.get("error"),
        "application_cores": fits.get("application_cores"),
        "cores_by_population": fits.get("cores_by_population"),
        "routing": fits.get("routing"),
        "seconds": round(seconds, 2),
    }


def board_weight_agreement(pkg: ModelPackage, settings: Settings, patches: int = 200) -> dict[str, Any]:
    """Class agreement of the emulator on the board's own weights (read back from sPyNNaker) with the
    package's weights, on real held-out patches."""
    from workers.crosscheck import default_scene, real_patches
    from workers.spinnaker.board_weights import on_grid, read_back

    values = read_back(pkg, settings)
    weights, step = on_grid(values)
    package_step = pkg.card.fixed_point.weight_step
    diff = max(float(np.abs(values[k] - pkg.weights[k] * package_step).max()) for k in values)
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    exact = Emulator(pkg).run(pixels, valid).classes
    board = Emulator(pkg, weights, step).run(pixels, valid).classes
    return {
        "patches": patches,
        "board_step": step,
        "max_abs_weight_difference": diff,
        "class_agreement": float((exact == board).mean()),
    }


def card_metrics(pkg: ModelPackage, result: Plan) -> dict[str, Any]:
    return {
        "spinnaker_plan": {
            "boards": result.boards,
            "copies_per_board": result.copies_per_board,
            "cores_per_copy": result.cores_per_copy,
            "command": f"spikescan plan --model {pkg.name} --boards {result.boards}",
        },
        "spinnaker_board_weights": {
            **(result.board_weights or {}),
            "command": f"spikescan plan --model {pkg.name} --board-weights",
            "source": "weights read back from sPyNNaker 1!7.4.1 after a virtual-board build",
        },
    }


def map_copies(pkg: ModelPackage, copies: int, boards: int, settings: Settings) -> dict[str, Any]:
    if pkg.path is None:
        raise InvalidInput("mapping needs a model package on disk")
    workspace = Workspace.for_settings(settings)
    cache = workspace.root / "cache" / f"{pkg.id.split(':')[-1][:20]}-{copies}x-{boards}b.json"
    if cache.is_file():
        return json.loads(cache.read_text())  # type: ignore[no-any-return]
    result = workspace.run_child(
        "workers.spinnaker.mapping",
        ["--model", str(pkg.path), "--copies", str(copies), "--boards", str(boards)],
        MAP_TIMEOUT_S,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    pkg = model_package.load(args.model, settings.models_dir)
    result = plan(pkg, args.boards)
    if args.map:
        result.mapping = confirm(pkg, result, settings)
    if args.board_weights:
        result.board_weights = board_weight_agreement(pkg, settings)
        if args.write_card:
            model_package.record_metrics(pkg, card_metrics(pkg, result))
    out = asdict(result)
    print(json.dumps(out, indent=1, default=_jsonable))
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)
