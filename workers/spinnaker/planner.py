"""How many tiled copies of a model fit on SpiNNaker boards, how fast they would scan, at what energy.

Copies. The plan counts cores the way sPyNNaker 7.4.1 splits our network (``workers/backends/pynn_build.py``):
every copy has its own populations; a neuron population takes ``ceil(n / atoms_per_core)`` cores (256 neurons
per core unless a synaptic row would exceed the board's 256-synapse limit); a copy's spike-source input takes
one core per 4096 sources; one clock source is shared by all copies. Copies that fit = (application cores −
shared) // cores per copy, where a 48-chip SpiNN-5 board offers 759 application cores (``cores.py``, the
rule the training-side architecture search uses too). Chips' SDRAM is the other limit (``sdram.py``: each
core's reservation as sPyNNaker computes it, placed chip by chip); ``copies`` is what places with both
counted and ``limited_by`` says which bound. ``--map`` asks sPyNNaker itself to place
N and N + 1 copies on a virtual board and reports whether it agrees; results are cached per (model id,
copies, boards).

Speed: the least of three bounds, all ESTIMATES measured on >= 512 real sample patches (``load.py``):
- step: one patch per copy per 1 ms timestep (every layer forgets between steps);
- compute: a core must process one patch's synaptic events within its step. SpiNNaker cores manage about
  5,000-10,000 synaptic events per ms (Rhodes et al., "sPyNNaker: a software package for running PyNN
  simulations on SpiNNaker", Frontiers in Neuroscience 12:816, 2018); the plan takes the low end, 5,000, for
  the busiest core's 99th-percentile patch, and slows the step (sPyNNaker's ``time_scale_factor``) to fit;
- host link: input spikes and recorded output over 100 Mb/s with packet framing (``link.py``).
Energy: ``energy.py`` (an estimate from sPyNNaker's own SpiNN-5 power model).
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
from models.pynn_net import NetworkDescription, atoms_per_core, describe, input_spikes
from spikescan.config import Settings, get_settings
from spikescan.errors import InvalidInput
from workers.backends.pynn_build import INPUT_ATOMS_PER_CORE, NEURONS_PER_CORE
from workers.samples import block_patches, default_scene, real_patches, strip_patches
from workers.spinnaker import energy, link, sdram, shared_input, strip_input
from workers.spinnaker.cores import APP_CORES_PER_BOARD, copies_that_fit
from workers.spinnaker.load import Load, measure
from workers.spinnaker.workspace import Workspace

TIMESTEP_S = 1e-3
EVENTS_PER_MS_PER_CORE = 5000.0
EVENTS_SOURCE = (
    "5,000 synaptic events per ms per core, the low end of the 5-10k measured for sPyNNaker (Rhodes et al., "
    "Front. Neurosci. 12:816, 2018); needs hardware to confirm for these networks"
)
FRAMING = link.KEYS_32_TIMESTAMP
SAMPLE_PATCHES = 512
MAP_TIMEOUT_S = 1800.0
SHARED_SIDE = 2  # copies per block side sharing one input population (2 x 2 neighbouring chips)


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
    copies_by_cores: int
    copies_by_sdram: int
    limited_by: str
    sdram_bytes_per_copy: int
    sdram_bytes_by_core: dict[str, int]
    sdram_chip_bytes: int
    input_code: str
    sampled_patches: int
    input_spikes_per_patch: float
    thermometer_input_spikes_per_patch: float
    spikes_per_patch: float
    output_spikes_per_patch: float
    synaptic_events_per_patch: float
    busiest_core: dict[str, Any]
    events_per_ms_per_core: float
    events_source: str
    link_framing: str
    link_bytes_per_spike: float
    input_bytes_per_patch: float
    output_bytes_per_patch: float
    host_link_bytes_per_km2: float
    step_patches_per_s: float
    compute_patches_per_s: float
    host_link_patches_per_s: float
    projected_patches_per_s: float
    bottleneck: str
    energy_per_patch_j: float
    energy_per_km2_j: float
    estimates: str = "throughput and energy are estimates from the sampled patches, not board measurements"
    energy_note: str = energy.NOTE
    shared_input: dict[str, Any] | None = field(default=None)
    # Which input layout the figures above are for (the best projection), and every layout's own figures
    layout: str = "per-copy input"
    layouts: dict[str, Any] | None = field(default=None)
    strip_input: dict[str, Any] | None = field(default=None)
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


def fit_copies(net: NetworkDescription, boards: int) -> tuple[int, int, dict[str, int]]:
    """(copies, cores per copy, cores per population) on ``boards`` boards, cores and chips' SDRAM both
    counted (``sdram_fit``); refuses when none fits."""
    if boards < 1:
        raise InvalidInput("--boards must be at least 1")
    per_pop = cores_by_population(net)
    per_copy = sum(per_pop.values())
    by_cores = copies_that_fit(per_copy, boards)
    copies = sdram.most_copies(sdram.Layout.of(net), by_cores, boards) if by_cores else 0
    if copies == 0:
        raise InvalidInput(
            f"{net.name}: one copy needs {per_copy} cores and its chips' SDRAM; {boards} board(s) hold none"
        )
    return copies, per_copy, per_pop


def fit_shared_copies(net: NetworkDescription, patch_size: int, boards: int, side: int = SHARED_SIDE) -> int:
    """Copies of the shared input layout (blocks of ``side``² copies) that place, cores and SDRAM counted."""
    per_pop = cores_by_population(net)
    block = shared_input.block_for(net, patch_size, side)
    without_input = sum(per_pop.values()) - per_pop["input"]
    by_cores = shared_input.fit(APP_CORES_PER_BOARD * boards, without_input, block, INPUT_ATOMS_PER_CORE)
    copies = sdram.most_copies(sdram.Layout.of(net, block.copies, block.size), by_cores, boards)
    if copies == 0:
        raise InvalidInput(f"{net.name}: no copy of the shared input layout fits on {boards} board(s)")
    return copies


@dataclass(frozen=True)
class BuildLayout:
    """What the spinnaker backend builds: copies and how they share input (0: not that way)."""

    name: str
    copies: int
    shared_side: int = 0
    strip_copies: int = 0


def build_layout(result: Plan) -> BuildLayout:
    """The plan's headline layout as the backend builds it, so the figures ``plan`` reports are for the
    network the board runs."""
    if result.strip_input is not None and result.layout == f"strips of {result.strip_input['strip_copies']}":
        return BuildLayout(result.layout, result.copies, strip_copies=int(result.strip_input["strip_copies"]))
    if result.layout == "2x2 blocks":
        return BuildLayout(result.layout, result.copies, shared_side=SHARED_SIDE)
    return BuildLayout(result.layout, result.copies)


def fit_strip_copies(net: NetworkDescription, patch_size: int, boards: int, strip_copies: int) -> int:
    """Copies of the strip layout (strips of ``strip_copies``) that place, cores and SDRAM counted."""
    strip = strip_input.strip_for(net, patch_size, strip_copies)
    per_pop = cores_by_population(net)
    copies = int(strip_fit(net, strip, boards, sum(per_pop.values()) - per_pop["input"])["copies"])
    if copies == 0:
        raise InvalidInput(f"{net.name}: no copy of the strip layout fits on {boards} board(s)")
    return copies


def sdram_fit(layout: sdram.Layout, by_cores: int, boards: int) -> dict[str, Any]:
    """Copies by cores, by SDRAM alone, by both (what places), and which binds: the plan's SDRAM fields."""
    by_both = sdram.most_copies(layout, by_cores, boards)
    # SDRAM alone, searched up to 4x the core bound (a reported figure only; it never raises ``copies``)
    by_sdram = sdram.most_copies(layout, 4 * by_cores + 4, boards, count_cores=False)
    return {
        "copies": by_both,
        "copies_by_cores": by_cores,
        "copies_by_sdram": by_sdram,
        "limited_by": _limit(by_both, by_cores, by_sdram),
        "sdram_bytes_per_copy": layout.bytes_per_copy,
        "sdram_bytes_by_core": layout.bytes_by_core,
        "sdram_chip_bytes": sdram.CHIP_BYTES,
    }


def _limit(placed: int, by_cores: int, by_sdram: int) -> str:
    if placed == by_cores == by_sdram:
        return "cores and SDRAM"
    if placed == by_cores:
        return "cores"
    if placed == by_sdram:
        return "SDRAM"
    # Fewer than either alone: heavy cores fill some chips' SDRAM while their cores stay free.
    return "SDRAM and cores together (chips fill their SDRAM before their cores)"


def sample_load(pkg: ModelPackage, net: NetworkDescription, patches: int = SAMPLE_PATCHES) -> Load:
    pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    return measure(pkg, net, pixels, valid)


def plan(pkg: ModelPackage, boards: int = 1, load: Load | None = None) -> Plan:
    net = describe(pkg)
    _, per_copy, per_pop = fit_copies(net, boards)
    fitted = sdram_fit(sdram.Layout.of(net), copies_that_fit(per_copy, boards), boards)
    copies = fitted["copies"]
    load = load or sample_load(pkg, net)
    steps_per_patch = max(1.0, load.busiest_core_events_p99 / EVENTS_PER_MS_PER_CORE)
    step_rate = copies / TIMESTEP_S
    compute = step_rate / steps_per_patch
    in_bytes = load.input_spikes_per_patch * FRAMING.bytes_per_spike
    out_bytes = load.recorded_output_bytes_per_patch  # one patch per (possibly slowed) step
    link_rate = link.LINK_BYTES_PER_S / max(in_bytes, out_bytes, 1.0)  # full duplex: the busier direction
    rate, bottleneck = _bound(step_rate, compute, link_rate)
    km2 = energy.km2_per_patch(pkg.card.patch_size, pkg.card.gsd_m)
    per_patch = energy.joules_per_patch(boards, copies * per_copy + 1, rate, load.spikes_per_patch)
    shared = shared_plan(pkg, net, boards, per_copy, per_pop, load, in_bytes, out_bytes, km2)
    strip = strip_plan(pkg, net, boards, per_copy, per_pop, load, in_bytes, out_bytes, km2)
    result = Plan(
        model=pkg.name,
        model_id=pkg.id,
        boards=boards,
        neurons_per_copy=net.neurons,
        synapses_per_copy=net.synapses,
        cores_per_copy=per_copy,
        cores_by_population=per_pop,
        shared_cores=1,
        application_cores=APP_CORES_PER_BOARD * boards,
        copies_per_board=copies // boards,
        copies=copies,
        copies_by_cores=fitted["copies_by_cores"],
        copies_by_sdram=fitted["copies_by_sdram"],
        limited_by=fitted["limited_by"],
        sdram_bytes_per_copy=fitted["sdram_bytes_per_copy"],
        sdram_bytes_by_core=fitted["sdram_bytes_by_core"],
        sdram_chip_bytes=fitted["sdram_chip_bytes"],
        input_code="one-hot levels" if net.onehot_levels else "thermometer",
        sampled_patches=load.patches,
        input_spikes_per_patch=round(load.input_spikes_per_patch, 1),
        thermometer_input_spikes_per_patch=round(load.thermometer_input_spikes_per_patch, 1),
        spikes_per_patch=round(load.spikes_per_patch, 1),
        output_spikes_per_patch=round(load.output_spikes_per_patch, 1),
        synaptic_events_per_patch=round(load.events_per_patch, 1),
        busiest_core={
            "population": load.busiest_core,
            "events_per_patch_p99": round(load.busiest_core_events_p99, 1),
            "events_per_patch_mean": round(load.busiest_core_events_mean, 1),
            "steps_per_patch": round(steps_per_patch, 3),
        },
        events_per_ms_per_core=EVENTS_PER_MS_PER_CORE,
        events_source=EVENTS_SOURCE,
        link_framing=FRAMING.name,
        link_bytes_per_spike=round(FRAMING.bytes_per_spike, 3),
        input_bytes_per_patch=round(in_bytes, 1),
        output_bytes_per_patch=round(out_bytes, 1),
        host_link_bytes_per_km2=round((in_bytes + out_bytes) / km2, 1),
        step_patches_per_s=round(step_rate, 1),
        compute_patches_per_s=round(compute, 1),
        host_link_patches_per_s=round(link_rate, 1),
        projected_patches_per_s=round(rate, 1),
        bottleneck=bottleneck,
        energy_per_patch_j=per_patch,
        energy_per_km2_j=per_patch / km2,
        shared_input=shared,
        strip_input=strip,
    )
    return select_layout(result)


# The plan's headline fields a layout replaces when it is the one selected
LAYOUT_FIELDS = (
    "copies", "copies_per_board", "copies_by_cores", "copies_by_sdram", "limited_by", "sdram_bytes_per_copy",
    "sdram_bytes_by_core", "input_spikes_per_patch", "input_bytes_per_patch", "output_bytes_per_patch",
    "host_link_bytes_per_km2",
    "step_patches_per_s", "compute_patches_per_s", "host_link_patches_per_s", "projected_patches_per_s",
    "bottleneck", "energy_per_patch_j", "energy_per_km2_j",
)


def select_layout(result: Plan) -> Plan:
    """The headline figures become those of the input layout that projects the most patches per second
    (fewer host-link bytes per km² on a tie): per-copy input, 2 x 2 blocks or strips. Every layout's own
    figures stay under ``layouts``; the per-copy ones are what a build without sharing gets."""
    own = {f: getattr(result, f) for f in LAYOUT_FIELDS}
    options = {"per-copy input": own}
    if result.shared_input:
        options["2x2 blocks"] = result.shared_input
    if result.strip_input:
        options[f"strips of {result.strip_input['strip_copies']}"] = result.strip_input
    name = max(options, key=lambda k: (options[k]["projected_patches_per_s"],
                                        -options[k]["host_link_bytes_per_km2"]))
    result.layout = name
    result.layouts = {k: {f: v.get(f) for f in LAYOUT_FIELDS} for k, v in options.items()}
    for f in LAYOUT_FIELDS:
        setattr(result, f, options[name][f])
    return result


def shared_figures(load: Load, in_bytes: float, out_bytes: float, km2: float, boards: int, copies: int,
                   cores: int, share: float) -> dict[str, Any]:
    """Bounds, projection and energy of a layout whose input sends ``share`` of the unshared spikes (2 x 2
    blocks, strips): the per-copy plan's rules on the same sample (``in_bytes``: unshared input bytes per
    patch)."""
    step_rate = copies / TIMESTEP_S
    compute = step_rate / max(1.0, load.busiest_core_events_p99 / EVENTS_PER_MS_PER_CORE)
    link_rate = link.LINK_BYTES_PER_S / max(in_bytes * share, out_bytes, 1.0)
    rate, bottleneck = _bound(step_rate, compute, link_rate)
    per_patch = energy.joules_per_patch(boards, cores, rate, load.spikes_per_patch)
    return {
        "input_spikes_per_patch": round(load.input_spikes_per_patch * share, 1),
        "input_bytes_per_patch": round(in_bytes * share, 1),
        "output_bytes_per_patch": round(out_bytes, 1),
        "host_link_bytes_per_km2": round((in_bytes * share + out_bytes) / km2, 1),
        "step_patches_per_s": round(step_rate, 1),
        "compute_patches_per_s": round(compute, 1),
        "host_link_patches_per_s": round(link_rate, 1),
        "projected_patches_per_s": round(rate, 1),
        "bottleneck": bottleneck,
        "energy_per_patch_j": per_patch,
        "energy_per_km2_j": per_patch / km2,
    }


def shared_sample(pkg: ModelPackage, net: NetworkDescription, block: shared_input.Block,
                  patches: int = SAMPLE_PATCHES) -> dict[str, float]:
    """Input spikes per patch with and without the shared blocks, MEASURED on the same real patches: squares
    of neighbouring chips of the held-out scene in block order (``samples.block_patches``; a small scene
    gives fewer than ``patches``), packed as the batch path packs them (``shared_input.pack``)."""
    pixels, valid = block_patches(pkg, default_scene(pkg), -(-patches // block.copies), block.side)
    squares = len(pixels) // block.copies
    spikes = input_spikes(net, pixels, pkg.card.encoding, valid)
    packing = shared_input.pack(block, block.copies, spikes)
    return {
        "patches": len(pixels),
        "time_slots_per_square": packing.slots / squares,
        "unshared": float(spikes.sum()) / len(pixels),
        "shared": packing.spikes_sent / len(pixels),
    }


def shared_plan(pkg: ModelPackage, net: NetworkDescription, boards: int, per_copy: int,
                per_pop: dict[str, int], load: Load, in_bytes: float, out_bytes: float, km2: float
                ) -> dict[str, Any]:
    """Shared overlapping input (issue 14 item 2; ``shared_input.py``): blocks of SHARED_SIDE x SHARED_SIDE
    copies share one input population, so fewer input cores (more copies fit, unless SDRAM binds) and a
    patch costs the link only its share of its block's spikes. The share is MEASURED (``shared_sample``: the
    shared spikes over the unshared ones on the same squares of neighbouring chips) and applied to the
    plan's own sample; ``input_share_per_copy`` is the pixel geometry's share and ``input_share_limit``
    every pixel sent exactly once (sharing across blocks too)."""
    block = shared_input.block_for(net, pkg.card.patch_size, SHARED_SIDE)
    without_input = per_copy - per_pop["input"]
    app = APP_CORES_PER_BOARD * boards
    layout = sdram.Layout.of(net, block.copies, block.size)
    fitted = sdram_fit(layout, shared_input.fit(app, without_input, block, INPUT_ATOMS_PER_CORE), boards)
    copies = fitted.pop("copies")
    cores = shared_input.cores(copies, without_input, block, INPUT_ATOMS_PER_CORE)
    measured = shared_sample(pkg, net, block)
    share = measured["shared"] / max(measured["unshared"], 1e-9)
    return {
        "status": "built, mapped by sPyNNaker on the virtual board (plan --map) and injected by the batch "
        "path (PyNN backends' shared_side; the pipeline does not yet hand chips in block order)",
        "block_side": SHARED_SIDE,
        "block_input_shape": list(block.shape),
        "copies_per_board": copies // boards,
        "copies": copies,
        **fitted,
        "application_cores": cores,
        "input_share_per_copy": round(shared_input.pixels_sent_per_copy(block) / math.prod(block.patch), 4),
        "input_share_limit": round((pkg.card.patch_size // 2) ** 2 / pkg.card.patch_size**2, 4),
        "measured_on_block_squares": _measured_share(measured, "time_slots_per_square", share),
        **shared_figures(load, in_bytes, out_bytes, km2, boards, copies, cores, share),
    }


def strip_fit(net: NetworkDescription, strip: strip_input.Strip, boards: int, without_input: int
              ) -> dict[str, Any]:
    """``sdram_fit`` for strips of ``strip.copies`` copies (first-layer cores split as the build does)."""
    layout = sdram.Layout.of(net, strip=strip)
    neuron_cores = sum(cores for _, cores, _ in layout.populations)
    app = APP_CORES_PER_BOARD * boards
    return sdram_fit(layout, strip_input.fit(app, neuron_cores, strip, INPUT_ATOMS_PER_CORE), boards)


def strip_height(net: NetworkDescription, patch_size: int, boards: int, without_input: int,
                 per_copy_rate: float, input_bytes: float, output_bytes: float) -> int:
    """Copies per strip: the height that projects the most patches per second. Taller strips share more
    ((n + 1) / (4 n) of a patch's pixels per patch, the geometry's share; the measured one is close), but a
    bigger strip population makes every first-layer core's matrices bigger, so fewer copies may place.
    ``per_copy_rate``: a copy's patches/s under the step and compute bounds. Ties go to the taller strip."""
    best, best_rate = 1, -1.0
    for n in range(1, APP_CORES_PER_BOARD * boards // max(without_input, 1) + 1):
        strip = strip_input.strip_for(net, patch_size, n)
        placed = strip_fit(net, strip, boards, without_input)["copies"]
        if placed < n:
            break  # not even one full strip places; taller ones will not either
        share = strip_input.share_of_patch(strip)
        link_rate = link.LINK_BYTES_PER_S / max(input_bytes * share, output_bytes, 1.0)
        rate = min(placed * per_copy_rate, link_rate)
        if rate >= best_rate:
            best, best_rate = n, rate
    return best


def strip_sample(pkg: ModelPackage, net: NetworkDescription, strip: strip_input.Strip,
                 patches: int = SAMPLE_PATCHES) -> dict[str, float]:
    """Input spikes per patch with and without the strip, MEASURED on the same real patches: the held-out
    scene's chips in strip order (``samples.strip_patches``, whole strips, so a small scene gives fewer
    than ``patches``), swept as the batch path sweeps them (``strip_input.sweep``), warm-up bands included."""
    pixels, valid = strip_patches(pkg, default_scene(pkg), strip.copies, patches)
    spikes = input_spikes(net, pixels, pkg.card.encoding, valid)
    swept = strip_input.sweep(strip, spikes)
    return {
        "patches": len(pixels),
        "time_slots": swept.slots,
        "unshared": float(spikes.sum()) / len(pixels),
        "shared": swept.spikes_sent / len(pixels),
    }


def strip_plan(pkg: ModelPackage, net: NetworkDescription, boards: int, per_copy: int,
               per_pop: dict[str, int], load: Load, in_bytes: float, out_bytes: float, km2: float
               ) -> dict[str, Any]:
    """Input shared across blocks (``strip_input.py``): strips of copies sweep the scene one column band per
    step, so each pixel crosses the host link once (plus a warm-up band per sweep). The share is MEASURED
    (``strip_sample``) and applied to the plan's own sample like the blocks'; ``input_share_per_copy`` is the
    geometry's on an endless sweep and ``input_share_limit`` every pixel exactly once."""
    without_input = per_copy - per_pop["input"]
    per_copy_rate = 1 / TIMESTEP_S / max(1.0, load.busiest_core_events_p99 / EVENTS_PER_MS_PER_CORE)
    output = strip_input.output_share(net, strip_input.strip_for(net, pkg.card.patch_size, 1))
    if output is not None:  # each column of output cells recorded once (``strip_input.OutputShare``)
        out_size = next(p.size for p in net.populations if p.name == net.output)
        atoms = atoms_per_core(net, net.output, NEURONS_PER_CORE)
        out_bytes = link.recorded_bytes_per_step(out_size, atoms, output.recorded())
    n = strip_height(net, pkg.card.patch_size, boards, without_input, per_copy_rate, in_bytes, out_bytes)
    strip = strip_input.strip_for(net, pkg.card.patch_size, n)
    fitted = strip_fit(net, strip, boards, without_input)
    copies = fitted["copies"]
    layout = sdram.Layout.of(net, strip=strip)
    cores = strip_input.cores(copies, sum(c for _, c, _ in layout.populations), strip, INPUT_ATOMS_PER_CORE)
    measured = strip_sample(pkg, net, strip)
    share = measured["shared"] / max(measured["unshared"], 1e-9)
    return {
        "status": "built and run exactly on NEST (tests/workers/test_strip_input.py); mapped by sPyNNaker on "
        "the virtual board (plan --map) and injected by the batch path; the spinnaker backend builds it when "
        "it is the plan's layout and the pipeline hands it whole bands of chip rows",
        "strip_copies": n,
        "strip_input_shape": list(strip.shape),
        "delays_steps": sorted({1 + j for j in range(strip.bands)}),
        **fitted,
        "copies_per_board": copies // boards,
        "application_cores": cores,
        "first_layer_atoms_per_core": {
            name: sdram.post_atoms_per_core(net, name, strip) for name in per_pop if name != "input"
            and sdram.post_atoms_per_core(net, name, strip) != sdram.post_atoms_per_core(net, name)
        },
        "input_share_per_copy": round(strip_input.share_of_patch(strip), 4),
        "input_share_limit": round((pkg.card.patch_size // 2) ** 2 / pkg.card.patch_size**2, 4),
        "measured_on_scene_strips": _measured_share(measured, "time_slots", share),
        "output_recorded": "every output neuron" if output is None else (
            f"{len(output.own_columns())} of {output.width} columns of cells (margin {output.margin}): the "
            "rest are the same cells of the neighbouring slots' patches"
        ),
        **shared_figures(load, in_bytes, out_bytes, km2, boards, copies, cores, share),
        "live_16bit_estimate": live_estimate(load.input_spikes_per_patch * share, out_bytes, km2),
    }


def live_estimate(input_spikes: float, out_bytes: float, km2: float) -> dict[str, Any]:
    """The same input spikes as sPyNNaker 7.4.1's live injection would send them (16-bit atom ids,
    ``link.LIVE_16``): fewer bytes, but live spikes are sent as the host gets to them, not at a timestep
    the host chooses, so the strip's exactness (a band complete within its step) is not guaranteed by
    software and the plan does not adopt it; an ESTIMATE of what a board could reach."""
    in_bytes = input_spikes * link.LIVE_16.bytes_per_spike
    return {
        "framing": link.LIVE_16.name,
        "bytes_per_spike": round(link.LIVE_16.bytes_per_spike, 3),
        "input_bytes_per_patch": round(in_bytes, 1),
        "host_link_bytes_per_km2": round((in_bytes + out_bytes) / km2, 1),
        "host_link_patches_per_s": round(link.LINK_BYTES_PER_S / max(in_bytes, out_bytes, 1.0), 1),
        "adopted": False,
    }


def _bound(step: float, compute: float, host_link: float) -> tuple[float, str]:
    """The least of the three rates and its name (ties go to the earlier-listed, more physical limit)."""
    rate = min(step, compute, host_link)
    if rate == host_link:
        return rate, "host link (100 Mb/s)"
    if rate == compute and compute < step:
        return rate, "compute (synaptic events on the busiest core)"
    return rate, "step (one patch per copy per 1 ms step)"


def card_estimate(pkg: ModelPackage) -> float | None:
    """Energy per patch on one board from what the card records, without rebuilding the network: the plan's
    own figure when ``--write-card`` recorded it, else the step and link bounds from the training-time spike
    counts (their thermometer input count over-states one-hot input, so this errs high). None when the
    card has neither."""
    planned, spikes = pkg.card.metrics.get("spinnaker_plan"), pkg.card.metrics.get("spikes_per_patch")
    if isinstance(planned, dict) and "energy_per_patch_j" in planned:
        return float(planned["energy_per_patch_j"])
    if not isinstance(planned, dict) or not isinstance(spikes, dict) or "input" not in spikes:
        return None
    boards = int(planned.get("boards", 1))
    copies, per_copy = int(planned["copies_per_board"]) * boards, int(planned["cores_per_copy"])
    in_bytes = float(spikes["input"]) * FRAMING.bytes_per_spike
    rate = min(copies / TIMESTEP_S, link.LINK_BYTES_PER_S / max(in_bytes, 1.0))
    total = float(sum(float(v) for v in spikes.values()))
    return energy.joules_per_patch(boards, copies * per_copy + 1, rate, total)


def confirm(pkg: ModelPackage, n: int, boards: int, settings: Settings, shared_side: int = 0,
            strip_copies: int = 0) -> dict[str, Any]:
    """Map ``n`` and ``n + 1`` copies with sPyNNaker (blocks of ``shared_side``² copies sharing one input
    when > 1); if the first fails, step down to what does map."""
    fits = map_copies(pkg, n, boards, settings, shared_side, strip_copies)
    over = map_copies(pkg, n + 1, boards, settings, shared_side, strip_copies)
    placed, seconds = (n if fits["ok"] else 0), fits["seconds"] + over["seconds"]
    low = n
    while not fits["ok"] and low > 1:
        # One fewer at a time: sPyNNaker's answer is near the plan's, and halving once reported 3 trees
        # copies where 5 place.
        low -= 1
        fits = map_copies(pkg, low, boards, settings, shared_side, strip_copies)
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
        "sdram": fits.get("sdram"),
        "seconds": round(seconds, 2),
    }


def board_weight_agreement(pkg: ModelPackage, settings: Settings, patches: int = 200) -> dict[str, Any]:
    """Class agreement of the emulator on the board's own weights (read back from sPyNNaker) with the
    package's weights, on real held-out patches."""
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
            "energy_per_patch_j": result.energy_per_patch_j,
            "command": f"spikescan plan --model {pkg.name} --boards {result.boards}",
        },
        "spinnaker_board_weights": {
            **(result.board_weights or {}),
            "command": f"spikescan plan --model {pkg.name} --board-weights",
            "source": "weights read back from sPyNNaker 1!7.4.1 after a virtual-board build",
        },
    }


def map_copies(pkg: ModelPackage, copies: int, boards: int, settings: Settings, shared_side: int = 0,
               strip_copies: int = 0) -> dict[str, Any]:
    if pkg.path is None:
        raise InvalidInput("mapping needs a model package on disk")
    workspace = Workspace.for_settings(settings)
    layout = f"-shared{shared_side}" if shared_side > 1 else f"-strip{strip_copies}" if strip_copies else ""
    cache = workspace.root / "cache" / f"{pkg.id.split(':')[-1][:20]}-{copies}x-{boards}b{layout}.json"
    if cache.is_file():
        return json.loads(cache.read_text())  # type: ignore[no-any-return]
    result = workspace.run_child(
        "workers.spinnaker.mapping",
        ["--model", str(pkg.path), "--copies", str(copies), "--boards", str(boards),
         "--shared-block", str(shared_side), "--strip", str(strip_copies)],
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
        # Every layout's own N and N + 1; ``mapping`` is the headline layout's (the one the figures are for).
        layouts = result.layouts or {}
        own = layouts.get("per-copy input", {}).get("copies", result.copies)
        maps = {"per-copy input": confirm(pkg, own, result.boards, settings)}
        if result.shared_input is not None:
            shared = result.shared_input
            shared["mapping"] = maps["2x2 blocks"] = confirm(pkg, shared["copies"], result.boards, settings,
                                                             SHARED_SIDE)
            if shared["mapping"]["agrees"]:
                shared["mapping"]["application_cores_planned"] = shared["application_cores"]
        if result.strip_input is not None:
            strip = result.strip_input
            strip["mapping"] = maps[f"strips of {strip['strip_copies']}"] = confirm(
                pkg, strip["copies"], result.boards, settings, 0, strip["strip_copies"])
        for name, mapped in maps.items():
            if name in layouts:
                layouts[name]["mapping_agrees"] = mapped["agrees"]
        if "per-copy input" in layouts:  # the other layouts keep theirs in shared_input / strip_input
            layouts["per-copy input"]["mapping"] = maps["per-copy input"]
        result.mapping = maps.get(result.layout, maps["per-copy input"])
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


def _measured_share(measured: dict[str, Any], slots: str, share: float) -> dict[str, Any]:
    """How a shared layout's input share was measured on real patches (``slots``: the layout's time-slot
    count field), as the plan reports it."""
    return {
        "patches": measured["patches"],
        slots: measured[slots],
        "input_spikes_per_patch_unshared": round(measured["unshared"], 1),
        "input_spikes_per_patch_shared": round(measured["shared"], 1),
        "share": round(share, 4),
    }
