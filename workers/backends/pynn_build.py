"""Build a ``NetworkDescription`` on any PyNN simulator as N tiled copies, feed patches, read spikes back.

Each copy gets its own population per layer. Concatenating copies into one population looks cheaper but is
not on SpiNNaker: sPyNNaker sizes a core's synaptic matrix from every row of the whole pre-population, so each
core's SDRAM grows with the number of copies (seen: 80 MB per core at 11 copies, unplaceable). The clock that
carries the biases is one source shared by all copies. Patches are spread round-robin over the copies: patch i
goes to copy i % N in time slot i // N, one slot per timestep, because every layer forgets between steps.
With shared input blocks (``workers/spinnaker/shared_input.py``) blocks of neighbouring copies share one
input population and a batch is packed onto them (``shared_input.pack``): each pixel's spike is sent once
per block and the board's routing delivers it to every copy of the block whose window covers it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from models.pynn_net import (
    CLOCK,
    THRESHOLD,
    NetworkDescription,
    atoms_per_core,
    input_populations,
    max_summed_weights,
)
from workers.spinnaker import strip_input
from workers.spinnaker.shared_input import Block, pack
from workers.spinnaker.strip_input import OutputShare, Strip

# Far below one timestep: the membrane forgets sub-threshold input before the next step.
TAU_M_MS = 0.01
# sPyNNaker's usual neurons per core (its population-table row limit); the planner counts cores with it.
NEURONS_PER_CORE = 256
# Input spike sources per core on sPyNNaker (see build()); the planner counts cores with it.
INPUT_ATOMS_PER_CORE = 4096


def neuron_params() -> dict[str, float]:
    return {
        "tau_m": TAU_M_MS,
        "cm": 1.0,
        "v_rest": 0.0,
        "v_reset": 0.0,
        "v_thresh": THRESHOLD,
        "tau_refrac": 0.0,
        "i_offset": 0.0,
    }


@dataclass
class TiledNetwork:
    sim: ModuleType
    net: NetworkDescription
    copies: int
    # populations[name][k] is copy k's population (the clock has one, shared).
    populations: dict[str, list[Any]]
    # projections[i][k]: copy k's projection for net.projections[i].
    projections: list[list[Any]]
    t0: float = 0.0  # first input timestep of the current batch
    shared_block: Block | None = None  # when blocks of neighbouring copies share one input population
    strip: Strip | None = None  # when strips of copies sweep the scene sharing one input band each
    # With a strip: output cells recorded once per column, the rest taken from the neighbouring slots
    output_share: OutputShare | None = None
    # [copies, slots]: the batch's patch that copy k computes in time slot s (-1: none)
    placement: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))


Connect = Callable[[ModuleType, Any, Any, np.ndarray, str], Any]


def pynn_connect(sim: ModuleType, pre: Any, post: Any, table: np.ndarray, receptor: str) -> Any:
    """A PyNN ``Projection`` from an array of (pre, post, weight, delay) rows."""
    conn = sim.FromListConnector(table, column_names=["weight", "delay"])
    return sim.Projection(pre, post, conn, receptor_type=receptor)


def build(
    sim: ModuleType,
    net: NetworkDescription,
    copies: int,
    *,
    negative_inhibitory: bool,
    record_all: bool = True,
    connect: Connect = pynn_connect,
    exact_weight_bounds: bool = False,
    shared_block: Block | None = None,
    strip: Strip | None = None,
    live_input: bool = False,
    share_output: bool = True,
) -> TiledNetwork:
    """Create populations and projections for ``copies`` copies on an already set-up simulator.

    ``negative_inhibitory``: NEST wants inhibitory current weights negative (a positive one silently
    excites); sPyNNaker wants their magnitudes. ``connect`` makes one projection from a row table.
    ``exact_weight_bounds`` (sPyNNaker): give each population the exact largest input sum, from which
    sPyNNaker picks its fixed-point weight step; its own estimate from assumed firing rates came out too
    coarse for first layers with many sources (half of one layer's weights off by a step).
    ``shared_block``: one input population per block of neighbouring copies instead of one per copy; each
    copy's first layer reads its window of it (``run_patches`` packs batches onto the blocks).
    ``strip``: one input population per strip of copies, one column band of the scene per slot, each copy's
    first layer reading its patch's bands through synaptic delays (``workers/spinnaker/strip_input.py``).
    ``live_input``: the strips' input as sPyNNaker ``SpikeInjector`` populations (mapping only; the batch
    path cannot feed them). ``share_output`` (strips): record each output cell once per column of cells
    (``strip_input.OutputShare``) where the network allows it; the batch path fills in the rest.
    """
    if shared_block is not None and strip is not None:
        raise ValueError("a build shares input by blocks or by strips, not both")
    pops: dict[str, list[Any]] = {}
    output_share = strip_input.output_share(net, strip) if strip is not None and share_output else None
    per_core = {
        p.name: atoms_per_core(net, p.name, NEURONS_PER_CORE) for p in net.populations if not p.is_source
    }
    if shared_block is not None:
        _shared_sources(sim, net, copies, shared_block, pops)
    if strip is not None:
        _strip_sources(sim, copies, strip, pops, live_input)
        per_core.update({
            name: strip_input.atoms_per_core(net, strip, name, per_core[name]) for name in _input_posts(net)
        })
    for spec in net.populations:
        if (shared_block is not None or strip is not None) and spec.is_source and spec.name != CLOCK:
            continue  # the blocks' shared populations stand in for every copy's own input
        if spec.name == CLOCK:
            pops[CLOCK] = [sim.Population(1, sim.SpikeSourceArray(spike_times=[]), label=CLOCK)]
            continue
        pops[spec.name] = []
        for k in range(copies):
            model = (
                sim.SpikeSourceArray(spike_times=[])
                if spec.is_source
                else sim.IF_curr_delta(**neuron_params())
            )
            extra = {}
            if exact_weight_bounds and not spec.is_source:
                bounds = [max(b, THRESHOLD) for b in max_summed_weights(net, spec.name)]
                extra = {"additional_parameters": {"max_expected_summed_weight": bounds}}
            pop = sim.Population(spec.size, model, label=f"{spec.name}#{k}", **extra)
            if spec.is_source and hasattr(pop, "set_max_atoms_per_core"):  # sPyNNaker only
                # sPyNNaker sizes a core's synaptic matrix by every atom of each pre-slice it hears from;
                # one big input slice makes first-layer cores need ~15 MB each and fills chips' SDRAM.
                pop.set_max_atoms_per_core(INPUT_ATOMS_PER_CORE)
            if not spec.is_source and hasattr(pop, "set_max_atoms_per_core"):  # sPyNNaker only
                # A pre-neuron's synapses into one core (a row) are limited to 256 on the board; cores
                # small enough for that keep sPyNNaker from refusing the network.
                pop.set_max_atoms_per_core(per_core[spec.name])
            if not spec.is_source:
                _record(pop, spec.name == net.output, record_all, output_share)
            pops[spec.name].append(pop)
    shared = (
        _project_shared(sim, net, copies, pops, negative_inhibitory, connect, shared_block)
        if shared_block is not None
        else _project_strip(sim, net, copies, pops, negative_inhibitory, connect, strip)
        if strip is not None
        else {}
    )
    projections = [
        shared[i] if i in shared else _project(sim, net, proj, copies, pops, negative_inhibitory, connect)
        for i, proj in enumerate(net.projections)
    ]
    return TiledNetwork(sim, net, copies, pops, projections, shared_block=shared_block, strip=strip,
                        output_share=output_share)


def _record(pop: Any, is_output: bool, record_all: bool, output_share: OutputShare | None) -> None:
    if is_output and output_share is not None:
        pop[output_share.recorded()].record("spikes")  # a view: only its neurons' bits come back
    elif is_output or record_all:
        pop.record("spikes")


SHARED_INPUT = "input.shared"
STRIP_INPUT = "input.strip"


def _input_posts(net: NetworkDescription) -> list[str]:
    chunks = {p.name for p in input_populations(net)}
    return sorted({p.post for p in net.projections if p.pre in chunks})


def _strip_sources(sim: ModuleType, copies: int, strip: Strip, pops: dict[str, list[Any]],
                   live: bool = False) -> None:
    """Per strip of copies, one spike-source population per piece (``Strip.pieces``), each split into
    input-sized cores like a copy's own; ``pops[STRIP_INPUT][b * strip.pieces + p]``. ``live``
    (sPyNNaker only, mapping studies): sPyNNaker's ``SpikeInjector`` instead, left whole, because its live
    connection sends every event of a population to the population's first core."""
    pops[STRIP_INPUT] = []
    for b in range(strip_input.strips_for(copies, strip)):
        for p in range(strip.pieces):
            label = f"{STRIP_INPUT}#{b}.{p}"
            if live:
                pop = sim.Population(strip.piece_size, sim.external_devices.SpikeInjector(), label=label)
            else:
                pop = sim.Population(strip.piece_size, sim.SpikeSourceArray(spike_times=[]), label=label)
                if hasattr(pop, "set_max_atoms_per_core"):  # sPyNNaker only
                    pop.set_max_atoms_per_core(INPUT_ATOMS_PER_CORE)
            pops[STRIP_INPUT].append(pop)


def _project_strip(sim: ModuleType, net: NetworkDescription, copies: int, pops: dict[str, list[Any]],
                   negative_inhibitory: bool, connect: Connect, strip: Strip) -> dict[int, list[Any]]:
    """The input projections when strips share input: per copy, post layer and receptor ONE projection from
    each piece of the strip its patch covers (as with blocks, one per input chunk would multiply first-layer
    cores' matrices), the copy's own rows re-indexed into the strip's band with the delay that brings each
    band to the patch's step. Returns, per description projection index, per copy the list of
    (piece, projection) it went into."""
    chunks = {p.name for p in input_populations(net)}
    out: dict[int, list[Any]] = {}
    for post in _input_posts(net):
        for excitatory in (True, False):
            members = [
                i for i, p in enumerate(net.projections)
                if p.pre in chunks and p.post == post and p.excitatory == excitatory
            ]
            if not members:
                continue
            rows = strip_input.input_rows(net, post, excitatory)
            if not excitatory and negative_inhibitory:
                rows[:, 2] = -rows[:, 2]
            receptor = "excitatory" if excitatory else "inhibitory"
            per_copy = []
            for k in range(copies):
                parts = strip_input.by_piece(strip, strip_input.strip_rows(strip, rows, k % strip.copies))
                first = (k // strip.copies) * strip.pieces
                per_copy.append([
                    (p, connect(sim, pops[STRIP_INPUT][first + p], pops[post][k], table, receptor))
                    for p, table in parts.items()
                ])
            for i in members:
                out[i] = per_copy
    return out


def _project(sim: ModuleType, net: NetworkDescription, proj: Any, copies: int, pops: dict[str, list[Any]],
             negative_inhibitory: bool, connect: Connect) -> list[Any]:
    """One description projection for every copy."""
    table = _table(proj, negative_inhibitory)
    receptor = "excitatory" if proj.excitatory else "inhibitory"
    return [
        connect(sim, pops[proj.pre][0 if proj.pre == CLOCK else k], pops[proj.post][k], table, receptor)
        for k in range(copies)
    ]


def _table(proj: Any, negative_inhibitory: bool) -> np.ndarray:
    """(pre, post, weight, delay) rows: an array goes to the simulator without a Python tuple per synapse."""
    rows = proj.rows.copy()
    if not proj.excitatory and negative_inhibitory:
        rows[:, 2] = -rows[:, 2]
    return np.column_stack([rows, np.ones(len(rows))])


def _project_shared(sim: ModuleType, net: NetworkDescription, copies: int, pops: dict[str, list[Any]],
                    negative_inhibitory: bool, connect: Connect, block: Block) -> dict[int, list[Any]]:
    """The input projections when blocks share input: per copy, post layer and receptor ONE projection from
    the block's population, all input chunks' rows re-indexed into the copy's window and merged. (One per
    chunk, as the description has them, made sPyNNaker size each first-layer core's synaptic matrix once per
    projection: 21 MB per trees conv1 core, unplaceable.) Returns, per description projection index, the
    merged per-copy projections it went into."""
    chunks = {p.name: p for p in input_populations(net)}
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, proj in enumerate(net.projections):
        if proj.pre in chunks:
            groups.setdefault((proj.post, proj.excitatory), []).append(i)
    out: dict[int, list[Any]] = {}
    for (post, excitatory), members in groups.items():
        receptor = "excitatory" if excitatory else "inhibitory"
        per_copy = []
        for k in range(copies):
            parts = []
            for i in members:
                table = _table(net.projections[i], negative_inhibitory)
                offset = chunks[net.projections[i].pre].offset
                table[:, 0] = block.remap(table[:, 0].astype(np.int64) + offset, k % block.copies)
                parts.append(table)
            merged = np.concatenate(parts)
            merged = merged[np.lexsort((merged[:, 1], merged[:, 0]))]  # sPyNNaker wants (pre, post) order
            source = pops[SHARED_INPUT][k // block.copies]
            per_copy.append(connect(sim, source, pops[post][k], merged, receptor))
        for i in members:
            out[i] = per_copy
    return out


def _shared_sources(sim: ModuleType, net: NetworkDescription, copies: int, block: Block,
                    pops: dict[str, list[Any]]) -> None:
    """One spike-source population per block of copies, split into input-sized cores like a copy's own."""
    pops[SHARED_INPUT] = []
    for b in range(-(-copies // block.copies)):
        pop = sim.Population(block.size, sim.SpikeSourceArray(spike_times=[]), label=f"{SHARED_INPUT}#{b}")
        if hasattr(pop, "set_max_atoms_per_core"):  # sPyNNaker only
            pop.set_max_atoms_per_core(INPUT_ATOMS_PER_CORE)
        pops[SHARED_INPUT].append(pop)


def input_schedule(
    tiled: TiledNetwork, spikes: np.ndarray
) -> tuple[list[list[list[float]]], list[float], int]:
    """Per copy, spike times per input neuron; the clock's times; the number of slots used.

    ``spikes``: [N, input size] 0/1, one row per patch.
    """
    n, size = spikes.shape
    slots = -(-n // tiled.copies)
    times: list[list[list[float]]] = [[[] for _ in range(size)] for _ in range(tiled.copies)]
    for i, j in zip(*np.nonzero(spikes), strict=True):
        times[i % tiled.copies][j].append(tiled.t0 + i // tiled.copies)
    # Layer d computes slot s at t0 + s + d from clock spikes sent one step earlier.
    clock = [tiled.t0 + s for s in range(slots + tiled.net.latency_steps - 1)]
    return times, clock, slots


def shared_schedule(
    tiled: TiledNetwork, spikes: np.ndarray
) -> tuple[list[list[list[float]]], list[float], int]:
    """Per block, spike times per block input neuron (each pixel-band once per frame); the clock's times; the
    number of slots. Sets ``tiled.placement`` for reading the outputs back."""
    assert tiled.shared_block is not None
    packing = pack(tiled.shared_block, tiled.copies, spikes)
    size = tiled.shared_block.size
    times: list[list[list[float]]] = [[[] for _ in range(size)] for _ in tiled.populations[SHARED_INPUT]]
    for b, slot, neurons in packing.frames:
        for j in neurons:
            times[b][j].append(tiled.t0 + slot)
    tiled.placement = packing.placement
    clock = [tiled.t0 + s for s in range(packing.slots + tiled.net.latency_steps - 1)]
    return times, clock, packing.slots


def strip_schedule(
    tiled: TiledNetwork, spikes: np.ndarray
) -> tuple[list[list[list[float]]], list[float], int]:
    """Per strip, spike times per strip input neuron (its pieces' neurons in order; one column band per
    slot, ``strip_input.sweep``); the clock's times; the number of slots. The batch's chips are put into
    columns by content (``strip_input.find_columns``: any order, a chip grid's row order included), and the
    columns are split into consecutive runs, one per strip in proportion to its copies, so each strip sweeps
    neighbouring columns. Sets ``tiled.placement``."""
    strip = tiled.strip
    assert strip is not None
    n_strips = len(tiled.populations[STRIP_INPUT]) // strip.pieces
    heights = [min(strip.copies, tiled.copies - b * strip.copies) for b in range(n_strips)]
    columns = strip_input.find_columns(strip, spikes)
    sweeps, start = [], 0
    for height in heights:  # consecutive columns per strip, in proportion to its copies
        take = -(-len(columns) * height // tiled.copies)
        run = strip_input.split_columns(columns[start : start + take], height)
        sweeps.append(strip_input.sweep(strip, spikes, height, run))
        start += take
    # With a shared output, one silent slot more: the last patch's right neighbour (``OutputShare``).
    slots = max(s.slots for s in sweeps) + (tiled.output_share is not None)
    times: list[list[list[float]]] = [[[] for _ in range(strip.size)] for _ in range(n_strips)]
    tiled.placement = np.full((tiled.copies, slots), -1, np.int64)
    for b, swept in enumerate(sweeps):
        for slot, neurons in enumerate(swept.frames):
            for j in neurons:
                times[b][j].append(tiled.t0 + slot)
        first = b * strip.copies
        tiled.placement[first : first + heights[b], : swept.slots] = swept.placement[: heights[b]]
    clock = [tiled.t0 + s for s in range(slots + tiled.net.latency_steps - 1)]
    return times, clock, slots


def run_patches(tiled: TiledNetwork, spikes: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
    """Run ``spikes`` [N, input size] through the copies; each listed layer's spikes as [N, layer size]."""
    sim = tiled.sim
    # Batches follow each other in simulated time (NEST cannot reset). NEST drops spike-generator times less
    # than about two steps after the current time (seen: now + 2 lost its first slot), so start 3 steps on.
    tiled.t0 = float(np.ceil(sim.get_current_time())) + 3.0
    if tiled.strip is not None:
        strip_times, clock, slots = strip_schedule(tiled, spikes)
        size = tiled.strip.piece_size
        for i, pop in enumerate(tiled.populations[STRIP_INPUT]):
            b, p = divmod(i, tiled.strip.pieces)
            _set_spike_times(sim, pop, strip_times[b][p * size : (p + 1) * size])
    elif tiled.shared_block is None:
        times, clock, slots = input_schedule(tiled, spikes)
        for chunk in input_populations(tiled.net):
            for k, pop in enumerate(tiled.populations[chunk.name]):
                _set_spike_times(sim, pop, times[k][chunk.offset : chunk.offset + chunk.size])
        index = np.arange(slots)[None, :] * tiled.copies + np.arange(tiled.copies)[:, None]
        tiled.placement = np.where(index < spikes.shape[0], index, -1)
    else:
        block_times, clock, slots = shared_schedule(tiled, spikes)
        for b, pop in enumerate(tiled.populations[SHARED_INPUT]):
            _set_spike_times(sim, pop, block_times[b])
    _set_spike_times(sim, tiled.populations[CLOCK][0], [clock])
    sim.run_until(tiled.t0 + slots + tiled.net.latency_steps + 1)
    return {name: _collect(tiled, name, spikes.shape[0]) for name in layers}


def _set_spike_times(sim: ModuleType, pop: Any, times: list[list[float]]) -> None:
    """Give a spike-source array new per-neuron spike times.

    PyNN's own backends want a ``Sequence`` per neuron. sPyNNaker (no ``Sequence``) takes plain lists, but
    7.4.1's ``set`` path stores them as a Python list that it later indexes with a numpy array (TypeError at
    the next run; its constructor path converts them). Handing its vertex an object array of per-neuron
    arrays, which is what that indexing expects, works around it.
    """
    if hasattr(sim, "Sequence"):
        pop.set(spike_times=[sim.Sequence(t) for t in times])
        return
    vertex = getattr(pop, "_vertex", None)  # works for a source the toolchain splits into several cores too
    if not any(len(t) for t in times):
        # A source with no spike in the whole batch (a strip piece under a short column, a copy without a
        # patch): 7.4.1's density check takes the most common time of a per-neuron list and raises
        # IndexError when there is none. The empty flat list is its own "no spikes" form, as at build time.
        pop.set(spike_times=[])
        if vertex is not None:
            vertex.send_buffer_times = np.zeros(0, np.int64)
        return
    pop.set(spike_times=times)
    buffered = getattr(vertex, "send_buffer_times", None)
    if isinstance(buffered, list):
        fixed = np.empty(len(buffered), dtype=object)
        for i, ticks in enumerate(buffered):
            fixed[i] = ticks
        vertex.send_buffer_times = fixed  # type: ignore[union-attr]


def _collect(tiled: TiledNetwork, name: str, n_patches: int) -> np.ndarray:
    """Spikes of layer ``name`` per patch: a spike of copy k at t came from the patch it computed in slot
    t - t0 - depth (``tiled.placement``)."""
    size = next(p.size for p in tiled.net.populations if p.name == name)
    share = tiled.output_share if name == tiled.net.output else None
    copies, slots = tiled.placement.shape
    # Shared output: every slot's recorded bits, then each patch assembled from its slot and its neighbours.
    raw = np.zeros((copies, slots, size), np.uint8) if share is not None else None
    result = np.zeros((n_patches, size), dtype=np.uint8)
    for copy, at, j in _spikes(tiled, name):
        if raw is not None:
            raw[copy, at, j] = 1
            continue
        patches = tiled.placement[copy, at]
        result[patches[patches >= 0], j] = 1
    if share is not None and raw is not None:
        for copy, slot in zip(*np.nonzero(tiled.placement >= 0), strict=True):
            # A sweep's warm-up slot precedes its first patch and a silent slot follows the batch's last.
            if not 0 < slot < slots - 1:
                raise RuntimeError(f"copy {copy}'s patch in slot {slot} has no neighbouring slot to share")
            before, own, after = raw[copy, slot - 1], raw[copy, slot], raw[copy, slot + 1]
            result[tiled.placement[copy, slot]] = share.assemble(own, before, after)
    return result


def _spikes(tiled: TiledNetwork, name: str) -> Iterator[tuple[int, np.ndarray, int]]:
    """(copy, slots, neuron) per recorded neuron of layer ``name``: the current batch's slots it fired in."""
    depth = 1 + [p.name for p in tiled.net.populations if not p.is_source].index(name)
    for copy, pop in enumerate(tiled.populations[name]):
        with warnings.catch_warnings():
            # neo complains about spikes past the segment's t_stop after a run that continued an earlier one;
            # every spike is placed by its own time below, so nothing depends on t_stop.
            warnings.filterwarnings("ignore", "Recorded at least one spike after t_stop", UserWarning)
            block = pop.get_data("spikes", clear=True).segments[-1]
        for train in block.spiketrains:
            j = int(train.annotations["source_index"])
            slots = np.rint(np.asarray(train.magnitude, dtype=np.float64) - tiled.t0 - depth).astype(int)
            yield copy, slots[(slots >= 0) & (slots < tiled.placement.shape[1])], j
