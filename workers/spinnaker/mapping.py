"""Child program: map N tiled copies of a model onto a virtual SpiNNaker board with sPyNNaker.

Run through ``Workspace.run_child`` (never in the service's own process). ``--mode map`` stops after
sPyNNaker's mapping stage — partitioning, placement, routing, routing tables — which is what decides how many
copies fit, and takes seconds. ``--mode weights`` also runs the data-generation stage on one copy, which
builds
the synaptic matrices exactly as they would be loaded, and reads the fixed-point weights back.

Prints one JSON line. Placement and routing limits come back as ``{"ok": false, "limit": ..., "error": ...}``
in words a user understands, not as the toolchain's exceptions.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import time
import warnings
from typing import Any

import numpy as np


def _simulator() -> Any:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyNN.spiNNaker as sim
    return sim


def map_only(sim: Any, run_ms: float) -> None:
    """sPyNNaker's run() up to the end of its mapping stage (the rest loads a board we do not have).

    Uses the mapping entry point of sPyNNaker 1!7.4.1 (pinned in pyproject.toml); a version change that
    moves it fails here loudly rather than silently planning something else.
    """
    import spynnaker.pyNN as front_end

    simulator = getattr(front_end, "__simulator")  # the object sim.setup() made; sPyNNaker keeps no getter
    simulator._data_writer.start_run()
    steps, total = simulator._calc_run_time(run_ms)
    simulator._do_mapping(total, steps)


def placements_by_population() -> tuple[dict[str, int], int]:
    from spinn_front_end_common.data import FecDataView

    per_pop: collections.Counter[str] = collections.Counter()
    system = 0
    for placement in FecDataView.iterate_placemements():
        app = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app, "label", None)
        if label is None or app is None or type(app).__module__.startswith("spinn_front_end_common"):
            system += 1
        else:
            name = str(label).split("#")[0]
            per_pop["input" if name.startswith("input.") else name] += 1
    return dict(per_pop), system


def sdram_use() -> dict[str, Any]:
    """SDRAM as sPyNNaker's placer counts it: each placed core's ``sdram_required`` at the planned number of
    timesteps, the largest core per population, and per chip the bytes used against what a chip offers
    after its monitors (``max_sdram_per_chip`` minus the monitors' SDRAM, the placer's own figure)."""
    from spinn_front_end_common.data import FecDataView

    steps = FecDataView.get_plan_n_timestep()
    version = FecDataView.get_machine_version()
    chip_bytes = version.max_sdram_per_chip - FecDataView.get_all_monitor_sdram().get_total_sdram(steps)
    per_pop: dict[str, int] = {}
    synapses: dict[str, int] = {}  # the synaptic-matrix part of the largest core
    per_chip: collections.Counter[tuple[int, int]] = collections.Counter()
    cores_on_chip: collections.Counter[tuple[int, int]] = collections.Counter()
    for placement in FecDataView.iterate_placemements():
        need = int(placement.vertex.sdram_required.get_total_sdram(steps))
        per_chip[placement.x, placement.y] += need
        cores_on_chip[placement.x, placement.y] += 1
        app = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app, "label", None)
        if label is not None and not type(app).__module__.startswith("spinn_front_end_common"):
            name = str(label).split("#")[0]
            name = "input" if name.startswith("input.") else name
            if need > per_pop.get(name, -1):
                per_pop[name] = need
                if hasattr(app, "get_synapses_size"):
                    synapses[name] = int(app.get_synapses_size(placement.vertex.vertex_slice.n_atoms))
    return {
        "chip_bytes": int(chip_bytes),
        "max_core_bytes_by_population": per_pop,
        "max_core_synapse_bytes_by_population": synapses,
        "max_chip_bytes_used": max(per_chip.values(), default=0),
        "total_bytes_used": sum(per_chip.values()),
        "chips_used": len(per_chip),
        "max_cores_on_a_chip": max(cores_on_chip.values(), default=0),
    }


def placement_by_vertex() -> dict[str, Any]:
    """What the placer was given and did, for replaying it (``sdram.place``): per application vertex in
    graph order (the order it places them), its label and per core (x, y, SDRAM bytes) in the order of its
    chip groups; and per chip the SDRAM the system cores placed before it reserve."""
    from spinn_front_end_common.data import FecDataView

    steps = FecDataView.get_plan_n_timestep()
    vertices = []
    for app in FecDataView.iterate_vertices():
        cores = []
        for group, _ in app.splitter.get_same_chip_groups():
            for vertex in group:
                where = FecDataView.get_placement_of_vertex(vertex)
                cores.append([where.x, where.y, int(vertex.sdram_required.get_total_sdram(steps))])
        vertices.append([str(app.label), cores])
    system: collections.Counter[str] = collections.Counter()
    for placement in FecDataView.iterate_placemements():
        app = getattr(placement.vertex, "app_vertex", None)
        if app is None or type(app).__module__.startswith("spinn_front_end_common"):
            need = placement.vertex.sdram_required.get_total_sdram(steps)
            system[f"{placement.x},{placement.y}"] += int(need)
    return {"vertices": vertices, "system_bytes_by_chip": dict(system)}


def routing_entries() -> dict[str, int]:
    from spinn_front_end_common.data import FecDataView

    tables = FecDataView.get_uncompressed()
    counts = [t.number_of_entries for t in tables.routing_tables]
    return {"max_per_chip": max(counts, default=0), "chips_with_routes": len(counts)}


def classify(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    if "Place" in name or "No more chips" in text:
        return "placement"
    if "Minimisation" in name or "routing table" in text.lower() or isinstance(exc, IndexError):
        return "routing"
    return "toolchain"


def failure(exc: BaseException, started: float, **fields: Any) -> dict[str, Any]:
    """A mapping that failed, as the one-line answer the planner reads: ``fields``, the limit it hit, the
    toolchain's first line and the seconds it took."""
    return {
        "ok": False,
        **fields,
        "limit": classify(exc),
        "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def run(model: str, copies: int, boards: int, mode: str, weights_out: str | None = None,
        shared_side: int = 0, strip_copies: int = 0, live: bool = False) -> dict[str, Any]:
    from models import package
    from models.pynn_net import describe
    from workers.backends.pynn_build import build
    from workers.spinnaker.shared_input import block_for
    from workers.spinnaker.strip_input import strip_for

    pkg = package.load(model)
    net = describe(pkg)
    block = block_for(net, pkg.card.patch_size, shared_side) if shared_side > 1 else None
    strip = strip_for(net, pkg.card.patch_size, strip_copies) if strip_copies > 0 else None
    sim = _simulator()
    started = time.perf_counter()
    sim.setup(timestep=1.0, n_boards_required=boards)
    try:
        tiled = build(
            sim,
            net,
            copies,
            negative_inhibitory=False,
            record_all=mode == "inject",
            exact_weight_bounds=True,
            shared_block=block,
            strip=strip,
            live_input=live,
        )
        injected: dict[str, Any] = {}
        if mode == "map":
            map_only(sim, 10.0)
        elif mode == "inject":
            injected = inject(pkg, tiled, patches=2 * copies + 1)
            if block is not None:
                injected["connectivity"] = shared_connectivity(tiled)
            if strip is not None:
                injected["connectivity"] = strip_connectivity(tiled)
        else:
            sim.run(10.0)
        per_pop, system = placements_by_population()
        result: dict[str, Any] = {
            "ok": True,
            "copies": copies,
            "boards": boards,
            "shared_block_side": shared_side,
            "strip_copies": strip_copies,
            "cores_by_population": per_pop,
            "application_cores": sum(per_pop.values()),
            "system_cores": system,
            "routing": routing_entries(),
            "sdram": sdram_use(),
            "placement": placement_by_vertex(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        result.update(injected)
        if live:
            result["live_input"] = live_keys()
        if mode == "weights" and weights_out:
            save_weights(tiled, weights_out)
            result["weights_file"] = weights_out
        return result
    except Exception as exc:  # the toolchain raises many types; all become one plain answer
        return failure(exc, started, copies=copies, boards=boards)
    finally:
        with contextlib.suppress(Exception):
            sim.end()


def run_local_only(model: str, tiles: int, tile: int, boards: int, rows: int = 0) -> dict[str, Any]:
    """``tiles`` copies of ``model`` as T x T tiles on local-only convolution (``local_only.py``), mapped:
    cores per population kind, neurons per core as placed, routing entries, mapping seconds."""
    from models import package
    from workers.spinnaker.local_only import atoms_shape, build_tiles, placed_cores

    pkg = package.load(model)
    shape = (rows, tile) if rows else atoms_shape(tile)
    sim = _simulator()
    started = time.perf_counter()
    sim.setup(timestep=1.0, n_boards_required=boards)
    try:
        built = build_tiles(sim, pkg, tile, tiles, shape)
        built_s = time.perf_counter() - started
        map_only(sim, 10.0)
        return {
            "ok": True, "local_only": True, "tile": tile, "copies": tiles, "boards": boards,
            "atoms_per_core_shape": list(shape), "projections": built.projections,
            "zero_kernels_skipped": built.skipped_zero_kernels,
            **placed_cores(), "routing": routing_entries(),
            "build_seconds": round(built_s, 2), "seconds": round(time.perf_counter() - started, 2),
        }
    except Exception as exc:  # the toolchain raises many types; all become one plain answer
        return failure(exc, started, local_only=True, tile=tile, copies=tiles, boards=boards)
    finally:
        with contextlib.suppress(Exception):
            sim.end()


def inject(pkg: Any, tiled: Any, patches: int) -> dict[str, Any]:
    """Feed real patches through the backend's own batch path (spike-source arrays for every copy or block,
    the clock, a run, recorded spikes read back and decoded per patch). A virtual board builds and 'loads'
    the spike data but runs nothing, so every layer comes back silent; what this checks is that the path
    works end to end and what the spike-source arrays hold. With shared blocks the patches are squares of
    neighbouring chips in block order (``samples.block_patches``), as the chip grid hands them."""
    from models.pynn_net import INPUT, input_spikes
    from workers.backends.pynn_build import run_patches
    from workers.samples import block_patches, default_scene, real_patches, strip_patches

    block = tiled.shared_block
    if tiled.strip is not None:
        pixels, valid = strip_patches(pkg, default_scene(pkg), tiled.strip.copies, patches)
    elif block is None:
        pixels, valid = real_patches(pkg, default_scene(pkg), patches)
    else:
        pixels, valid = block_patches(pkg, default_scene(pkg), -(-patches // block.copies), block.side)
    spikes = input_spikes(tiled.net, pixels, pkg.card.encoding, valid)
    layers = [p.name for p in tiled.net.populations if not p.is_source]
    out = run_patches(tiled, spikes, layers)
    loaded = 0  # spike times the input populations' vertices hold, i.e. what the host would send
    for name, pops in tiled.populations.items():
        if name.startswith(INPUT):  # each copy's own input, or the blocks' shared ones
            for pop in pops:
                loaded += sum(len(t) for t in getattr(pop._vertex, "send_buffer_times", []))
    return {
        "patches": len(pixels),
        "input_spikes_scheduled": int(spikes.sum()),
        "input_spikes_loaded": int(loaded),
        "time_slots": int(tiled.placement.shape[1]),
        "output_shapes": {k: list(v.shape) for k, v in out.items()},
        "spikes_returned": int(sum(v.sum() for v in out.values())),
        "output_record_bytes_per_step": _record_bytes(tiled.populations[tiled.net.output][0]),
    }


def _record_bytes(pop: Any) -> dict[str, int]:
    """What sPyNNaker records per timestep of one copy's output population, summed over its cores (its own
    ``NeuronRecorder`` figures): the neurons it records and the bytes of their spike bitfields with times."""
    vertex = pop._vertex
    recorder = vertex.neuron_recorder
    slices = [m.vertex_slice for m in vertex.machine_vertices]
    recording = [recorder.neurons_recording("spikes", s) for s in slices]
    return {
        "neurons": sum(len(ids) for ids in recording if ids is not None),
        "bytes": sum(recorder.get_buffered_sdram_per_record("spikes", s) for s in slices),
    }


def live_keys() -> dict[str, Any]:
    """How sPyNNaker would take live input into the strip's ``SpikeInjector`` populations, read from the
    mapped graph: cores per population (its ``LiveEventConnection.send_events`` sends every event of a label
    to the label's first placement, so more than one would lose spikes), and per core the routing key and
    mask and the key prefix the core is configured with (``update_virtual_key``, what it writes to its
    configuration region). 16-bit atom ids work when the prefix is the upper half-word (the key itself) and
    the atom ids fit both 16 bits and the bits the key's mask leaves free."""
    from spinn_front_end_common.data import FecDataView
    from spinnman.messages.eieio import EIEIOPrefix

    per_pop: collections.Counter[str] = collections.Counter()
    cores, sixteen, unread = [], True, 0
    for placement in FecDataView.iterate_placemements():
        vertex = placement.vertex
        app = getattr(vertex, "app_vertex", None)
        if type(app).__name__ != "SpikeInjectorVertex":
            continue
        per_pop[str(app.label)] += 1
        vertex.update_virtual_key()
        key, mask, prefix = vertex._virtual_key, vertex._mask, vertex._prefix  # what the core is given
        n = vertex.vertex_slice.n_atoms
        if key is None:  # no copy reads this piece (a short strip's last): no key, nothing to send it
            unread += 1
            continue
        # The core ORs a 16-bit atom id into an upper-half-word prefix (SpiNNFrontEndCommon's
        # reverse_iptag_multicast_source.c): exact when the ids fit 16 bits and the key's free bits.
        free = ~mask & 0xFFFFFFFF if mask is not None else 0
        fits = (vertex._prefix_type == EIEIOPrefix.UPPER_HALF_WORD and prefix == key
                and n <= 1 << 16 and key & free == 0 and n <= free + 1)
        sixteen &= bool(fits)
        cores.append({"label": str(app.label), "atoms": int(n), "key": key, "mask": mask, "prefix": prefix,
                      "prefix_type": getattr(vertex._prefix_type, "name", None),
                      "sdram_bytes": int(vertex.sdram_required.get_total_sdram(
                          FecDataView.get_plan_n_timestep()))})
    return {
        "populations": len(per_pop),
        "max_cores_per_population": max(per_pop.values(), default=0),
        "one_core_each": all(v == 1 for v in per_pop.values()),
        "unread_populations": unread,
        "keys_16_bit_with_prefix": bool(sixteen and cores),
        "cores": cores[:3],  # a sample; every core was checked above
        "max_atoms_per_core": max((c["atoms"] for c in cores), default=0),
    }


def shared_connectivity(tiled: Any) -> dict[str, Any]:
    """Every copy's input synapses as sPyNNaker built them for the board (read back after the virtual run),
    mapped back through the copy's window of its block: are they the description's rows of the copy's own
    patch, synapse for synapse and weight for weight?"""
    from models.pynn_net import input_populations

    block, net = tiled.shared_block, tiled.net
    chunks = {p.name: p.offset for p in input_populations(net)}
    checked, equal = 0, True
    for k in range(tiled.copies):
        seen: set[int] = set()
        for i, spec in enumerate(net.projections):
            proj = tiled.projections[i][k]
            if spec.pre not in chunks or id(proj) in seen:
                continue
            seen.add(id(proj))
            got = np.array(proj.get(["weight"], format="list", with_address=True), dtype=np.float64)
            want = np.concatenate([
                np.column_stack([block.remap(s.rows[:, 0].astype(np.int64) + chunks[s.pre], k % block.copies),
                                 s.rows[:, 1:3]])
                for s in net.projections if s.pre in chunks and s.post == spec.post
                and s.excitatory == spec.excitatory
            ])
            order_got = np.lexsort((got[:, 1], got[:, 0]))
            order_want = np.lexsort((want[:, 1], want[:, 0]))
            equal &= got.shape == want.shape and bool(np.array_equal(got[order_got], want[order_want]))
            checked += len(got)
    return {"synapses_checked": checked, "equal": bool(equal)}


def strip_connectivity(tiled: Any) -> dict[str, Any]:
    """Every copy's input synapses as sPyNNaker built them (read back after the virtual run, delays
    included): are they the strip's re-indexing of the copy's own rows, synapse, weight and delay?"""
    from models.pynn_net import input_populations
    from workers.spinnaker.strip_input import input_rows, strip_rows

    strip, net = tiled.strip, tiled.net
    chunks = {p.name for p in input_populations(net)}
    checked, equal = 0, True
    for k in range(tiled.copies):
        seen: set[int] = set()
        for i, spec in enumerate(net.projections):
            parts = tiled.projections[i][k]
            if spec.pre not in chunks or id(parts) in seen:
                continue
            seen.add(id(parts))
            got = np.concatenate([  # back from each piece's indices to the strip's
                np.array(proj.get(["weight", "delay"], format="list", with_address=True), dtype=np.float64)
                + [p * strip.piece_size, 0, 0, 0]
                for p, proj in parts
            ])
            want = strip_rows(strip, input_rows(net, spec.post, spec.excitatory), k % strip.copies)
            order_got = np.lexsort((got[:, 3], got[:, 1], got[:, 0]))
            order_want = np.lexsort((want[:, 3], want[:, 1], want[:, 0]))
            equal &= got.shape == want.shape and bool(np.array_equal(got[order_got], want[order_want]))
            checked += len(got)
    return {"synapses_checked": checked, "equal": bool(equal)}


def save_weights(tiled: Any, path: str) -> None:
    """Copy 0's weights as sPyNNaker built them for the board: ``p<i>`` = [n, 3] (pre, post, weight) for the
    description's projection i."""
    arrays = {}
    for i, per_copy in enumerate(tiled.projections):
        got = per_copy[0].get(["weight"], format="list", with_address=True)
        arrays[f"p{i}"] = np.array([(a, b, w) for a, b, w in got], dtype=np.float64).reshape(-1, 3)
    np.savez(path, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--copies", type=int, required=True)
    parser.add_argument("--boards", type=int, default=1)
    parser.add_argument("--mode", choices=["map", "weights", "inject"], default="map")
    parser.add_argument("--weights-out", default=None, help="npz for the board's weights (--mode weights)")
    parser.add_argument("--shared-block", type=int, default=0, help="copies per side sharing one input")
    parser.add_argument("--strip", type=int, default=0, help="copies per strip sweeping one input band")
    parser.add_argument("--live", action="store_true", help="strip input as SpikeInjector populations")
    parser.add_argument("--local-only", action="store_true",
                        help="--copies tiles of --tile pixels square on local-only convolution (map only)")
    parser.add_argument("--tile", type=int, default=32, help="tile side in pixels (--local-only)")
    parser.add_argument("--rows", type=int, default=0, help="plane rows per core (--local-only; 0: auto)")
    args = parser.parse_args()
    if args.local_only:
        with contextlib.redirect_stdout(io.StringIO()):
            result = run_local_only(args.model, args.copies, args.tile, args.boards, args.rows)
        print(json.dumps(result))
        return
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(args.model, args.copies, args.boards, args.mode, args.weights_out, args.shared_block,
                     args.strip, args.live)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
