"""SDRAM per core and per chip as sPyNNaker 1!7.4.1 reserves it, and how many copies that lets a board hold.

Cores are not the only limit: a chip's 128 MB SDRAM is shared by its cores, and sPyNNaker reserves each
neuron core's synaptic matrices at their worst case. For every incoming projection a core reserves one row
per atom of the WHOLE pre-population (every pre-slice, connected to this core or not), each row as long as
the longest row any pre-neuron has into a core-sized slice of the post-population, 16-byte aligned per
pre-slice (``PopulationVertex.get_synapses_size`` / ``__add_matrix_size`` and ``synapse_io.get_max_row_info``
with ``FromListConnector.get_n_connections_from_pre_vertex_maximum``). That is why first-layer cores are the
heavy ones (trees conv1: ~10-21 MB each, ~5 per chip) and why a shared block's larger input population makes
them heavier still. ``matrix_bytes`` is that formula; the rest of a core (neuron parameters, recording,
provenance, population table, bitfields) is a measured allowance, ``CORE_OTHER_BYTES``.

Placement (``fits``, ``place``) replays sPyNNaker's ``ApplicationPlacer`` (``_Placer``): populations in
the order the build creates them (input, clock, then each layer for every copy), each population's cores
together on a start chip and its linked neighbours, the chip's SDRAM cap checked when a population takes a
chip up. ``mapping.py`` reports what sPyNNaker itself reserved per core and where it placed every core, and
the tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from models.pynn_net import CLOCK, NetworkDescription, atoms_per_core, input_populations, max_row
from workers.backends.pynn_build import INPUT_ATOMS_PER_CORE, NEURONS_PER_CORE
from workers.spinnaker import strip_input
from workers.spinnaker.strip_input import Strip

# A SpiNN-5 virtual board as sPyNNaker 7.4.1's placer sees it (spinn_machine's virtual_machine(8, 8) with
# version 5; checked by tests/workers/test_spinnaker_plan.py): 48 chips of CHIP_SDRAM bytes, each with one
# monitor core reserving MONITOR_BYTES (the Ethernet chip (0, 0) also runs the packet gatherer,
# GATHERER_BYTES), which leaves CHIP_BYTES (mapping.py's ``sdram.chip_bytes``). Application cores per chip
# after SCAMP and the system cores: 16, or 15 on the 8 chips with one core fewer and on (0, 0): 759 in all.
CHIP_SDRAM = 123_469_792
MONITOR_BYTES = 488_476  # ExtraMonitorSupportMachineVertex, every chip
GATHERER_BYTES = 477_250  # DataSpeedUpPacketGatherMachineVertex, the Ethernet chip
CHIP_BYTES = CHIP_SDRAM - MONITOR_BYTES
_SHORT_CHIPS = {(1, 1), (1, 3), (3, 1), (3, 3), (3, 5), (5, 2), (5, 4), (5, 6)}
_BOARD_CHIPS = [  # the placer's chip order: x, then y
    (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3),
    (2, 4), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (4, 0), (4, 1), (4, 2), (4, 3),
    (4, 4), (4, 5), (4, 6), (4, 7), (5, 1), (5, 2), (5, 3), (5, 4), (5, 5), (5, 6), (5, 7), (6, 2), (6, 3),
    (6, 4), (6, 5), (6, 6), (6, 7), (7, 3), (7, 4), (7, 5), (7, 6), (7, 7),
]
APP_CORES_BY_CHIP = [15 if xy in _SHORT_CHIPS or xy == (0, 0) else 16 for xy in _BOARD_CHIPS]
SYSTEM_BYTES_BY_CHIP = [MONITOR_BYTES + (GATHERER_BYTES if xy == (0, 0) else 0) for xy in _BOARD_CHIPS]
# A chip's links in spinn_machine's order (link ids 0-5: east, north-east, north, west, south-west, south);
# the placer takes neighbours in this order. No wrap-around on a single SpiNN-5 board.
_LINK_STEPS = ((1, 0), (1, 1), (0, 1), (-1, 0), (-1, -1), (0, -1))
# The placer treats a chip as full once ALL its reservations, system cores' included, exceed this
# (ApplicationPlacer.__cap_sdram: CHIP_BYTES less one core's average share, 16 usable cores per chip). It
# is checked only when a chip is taken up for an application vertex, not for each core of it.
CHIP_CAP_BYTES = CHIP_BYTES - CHIP_BYTES // 16

ADDRESS_ALIGN = 16  # MasterPopTableAsBinarySearch._ADDRESS_SCALE
ROW_HEADER_WORDS = 3  # synapse_io._N_HEADER_WORDS
MATRIX_BASE_BYTES = 8  # get_synapses_size starts at 2 words
# Everything of a neuron core but its synaptic matrices, an allowance taken as the largest sPyNNaker reserved
# for either shipped model's layers in a virtual-board mapping (mapping.py ``sdram``: 120-156 kB; the
# output layer, which records spikes, is the largest). Under 1 % of a first-layer core.
CORE_OTHER_BYTES = 160_000
SOURCE_CORE_BYTES = 512  # spike-source array cores with no spikes loaded yet (measured, as mapped)


@dataclass(frozen=True)
class Incoming:
    pre_atoms: int
    pre_atoms_per_core: int
    max_row: int  # longest row (synapses) of one pre-neuron into one core-sized slice of the post layer


def matrix_bytes(incoming: list[Incoming]) -> int:
    """Bytes one core reserves for its synaptic matrices (``PopulationVertex.get_synapses_size``)."""
    address = MATRIX_BASE_BYTES
    for edge in incoming:
        if edge.max_row == 0:
            continue
        per_slice = min(edge.pre_atoms_per_core, edge.pre_atoms)
        size = per_slice * (edge.max_row + ROW_HEADER_WORDS) * 4
        for _ in range(math.ceil(edge.pre_atoms / per_slice)):
            address = -(-address // ADDRESS_ALIGN) * ADDRESS_ALIGN + size
    return address


def post_atoms_per_core(net: NetworkDescription, name: str, strip: Strip | None = None) -> int:
    """Neurons per core of ``name`` as the build splits it (a strip's first layer may take fewer)."""
    atoms = atoms_per_core(net, name, NEURONS_PER_CORE)
    chunks = {p.name for p in input_populations(net)}
    if strip is not None and any(p.pre in chunks and p.post == name for p in net.projections):
        atoms = strip_input.atoms_per_core(net, strip, name, atoms)
    return atoms


def incoming(net: NetworkDescription, post: str, shared_input_atoms: int = 0, strip: Strip | None = None
             ) -> list[Incoming]:
    """The projections into ``post`` as the build makes them. With a shared block (``shared_input_atoms`` =
    the block's input size) the input projections of a (post, receptor) are one, from the block's
    population; re-indexing pre-neurons into the block leaves every row's length as it was. With a strip
    they are one from the strip's population, whose rows hold every patch position a band neuron stands for
    (``strip_input.strip_rows``)."""
    post_atoms = post_atoms_per_core(net, post, strip)
    sizes = {p.name: p.size for p in net.populations}
    chunks = {p.name for p in input_populations(net)}
    out: list[Incoming] = []
    merged: dict[bool, list[np.ndarray]] = {}
    for proj in net.projections:
        if proj.post != post:
            continue
        if (shared_input_atoms or strip is not None) and proj.pre in chunks:
            merged.setdefault(proj.excitatory, []).append(proj.rows)
            continue
        if proj.pre in chunks:
            per_core = INPUT_ATOMS_PER_CORE
        elif proj.pre == CLOCK:
            per_core = 1
        else:
            per_core = post_atoms_per_core(net, proj.pre, strip)
        out.append(Incoming(sizes[proj.pre], per_core, max_row(proj.rows, post_atoms)))
    for excitatory, parts in merged.items():  # the merged input projections come first in the build
        if strip is not None:  # one projection per piece the copy's patch covers, in piece order
            rows = strip_input.strip_rows(strip, strip_input.input_rows(net, post, excitatory))
            out[0:0] = [
                Incoming(strip.piece_size, INPUT_ATOMS_PER_CORE, max_row(part, post_atoms))
                for part in strip_input.by_piece(strip, rows).values()
            ]
        else:
            out.insert(0, Incoming(shared_input_atoms, INPUT_ATOMS_PER_CORE,
                                   max_row(np.concatenate(parts), post_atoms)))
    return out


def core_bytes(net: NetworkDescription, shared_input_atoms: int = 0, strip: Strip | None = None
               ) -> dict[str, int]:
    """Bytes of one (the largest) core of each neuron population."""
    return {
        p.name: matrix_bytes(incoming(net, p.name, shared_input_atoms, strip)) + CORE_OTHER_BYTES
        for p in net.populations
        if not p.is_source
    }


@dataclass(frozen=True)
class Layout:
    """What one copy asks of a board, cores and SDRAM, in the order the build creates its populations."""

    # (population, cores, bytes per core) per population of one copy, build order; input "" when shared
    populations: list[tuple[str, int, int]]
    block_copies: int = 0  # copies per shared input block (0: every copy has its own input)
    block_input_cores: int = 0
    block_input_vertices: int = 1  # populations the block's input is built as (a strip's pieces)

    @classmethod
    def of(cls, net: NetworkDescription, block_copies: int = 0, block_atoms: int = 0,
           strip: Strip | None = None) -> Layout:
        """``block_copies`` copies sharing ``block_atoms`` of input (a 2 x 2 block), or a ``strip``."""
        if strip is not None:
            block_copies, block_atoms = strip.copies, strip.size
        per_core = core_bytes(net, block_atoms if block_copies else 0, strip)
        block_cores = math.ceil(block_atoms / INPUT_ATOMS_PER_CORE) if block_copies else 0
        if strip is not None:
            block_cores = strip_input.input_cores(strip, INPUT_ATOMS_PER_CORE)
        pops = []
        for pop in net.populations:
            if pop.is_source:
                if not block_copies and pop.name != CLOCK:
                    pops.append((pop.name, math.ceil(pop.size / INPUT_ATOMS_PER_CORE), SOURCE_CORE_BYTES))
                continue
            cores = math.ceil(pop.size / post_atoms_per_core(net, pop.name, strip))
            pops.append((pop.name, cores, per_core[pop.name]))
        return cls(pops, block_copies, block_cores, strip.pieces if strip is not None else 1)

    @property
    def bytes_per_copy(self) -> int:
        """A copy's cores (each sized like its population's largest); shared input cores not included."""
        return sum(cores * each for _, cores, each in self.populations)

    @property
    def bytes_by_core(self) -> dict[str, int]:
        return {name: each for name, _, each in self.populations}

    def vertices(self, copies: int) -> Iterator[list[int]]:
        """SDRAM of every core of ``copies`` copies (and the shared clock), one list per application vertex
        (population), in the order the build creates them: sPyNNaker's placer places a population's cores
        together, so the replay needs them grouped."""
        if self.block_copies:
            n_blocks = math.ceil(copies / self.block_copies)
            per_vertex = self.block_input_cores // self.block_input_vertices
            for _ in range(n_blocks * self.block_input_vertices):
                yield [SOURCE_CORE_BYTES] * per_vertex
        clock_done = False
        for name, cores, each in self.populations:
            if not clock_done and not name.startswith("input"):
                yield [SOURCE_CORE_BYTES]  # the clock comes after the input in the description
                clock_done = True
            for _ in range(copies):
                yield [each] * cores


class _Unplaceable(Exception):
    """The placer has no start chip left (sPyNNaker's ``PacmanPlaceException``) or a core is larger than
    any chip (``PacmanTooBigToPlace``)."""


class _Placer:
    """sPyNNaker 7.4.1's ``ApplicationPlacer`` (pacman/operations/placer_algorithms/application_placer.py),
    replayed on the board's chips with each core's SDRAM. What matters for the copy count, and what a
    plain first fit of cores got wrong (it refused a 7th trees strip copy that sPyNNaker places):

    - a population's cores are placed together: on a start chip, then on that chip's neighbours over its
      links (breadth-first, in link order), never back on a chip already looked at; when the neighbourhood
      runs out the whole population is tried again from the next start chip;
    - start chips come from the chips the previous population tried as starts, then the chips in x, then
      y order, each taken from that order once;
    - a chip is full when all its cores are used or its reservations exceed ``CHIP_CAP_BYTES``, checked
      when the chip is taken up for a population; cores of that population then fill it up to the chip's
      whole SDRAM.

    Boards beyond the first are modelled as further boards taken in turn with no links between them, an
    approximation: sPyNNaker's multi-board machine is one chip grid with links across boards (not checked).
    """

    def __init__(self, boards: int, count_cores: bool) -> None:
        chips = [(b, x, y) for b in range(boards) for x, y in _BOARD_CHIPS]
        index = {xy: i for i, xy in enumerate(chips)}
        self.links = [
            [index[b, x + dx, y + dy] for dx, dy in _LINK_STEPS if (b, x + dx, y + dy) in index]
            for b, x, y in chips
        ]
        self.free = [c if count_cores else 10**9 for c in APP_CORES_BY_CHIP] * boards
        self.used = SYSTEM_BYTES_BY_CHIP * boards  # reservations on each chip, system cores' included
        self.order = iter(range(len(chips)))
        self.full: set[int] = set()
        self.restored: list[int] = []
        self.starts_tried: list[int] = []
        # per attempt: chips looked at, neighbours queued (dict: insertion order, no duplicates), and the
        # chip being filled with its free cores and reservations including this attempt's cores on it
        self.prepared: set[int] = set()
        self.neighbours: dict[int, None] = {}
        self.current, self.current_free, self.current_used = -1, 0, 0

    def place(self, cores: list[int]) -> None:
        """Place one population's cores (raises ``_Unplaceable``)."""
        self.restored += self.starts_tried
        self.starts_tried = []
        while True:
            made = self._attempt(cores)
            if made is not None:
                break
        for chip, need in made:
            self.free[chip] -= 1
            self.used[chip] += need

    def _attempt(self, cores: list[int]) -> list[tuple[int, int]] | None:
        self.prepared.clear()
        self.current = -1
        made = []
        for need in cores:
            if self.current < 0:
                self._start(need)
            elif self.current_free >= 1 and self.current_used + need <= CHIP_SDRAM:
                self.current_used += need
            elif not self._neighbour(need):
                return None
            self.current_free -= 1
            made.append((self.current, need))
        return made

    def _space(self, chip: int, need: int) -> bool:
        if self.free[chip] == 0 or self.used[chip] > CHIP_CAP_BYTES:
            self.full.add(chip)
            return False
        self.prepared.add(chip)
        if need > CHIP_BYTES:
            raise _Unplaceable(f"a core of {need} bytes fits no chip")
        if self.used[chip] + need > CHIP_SDRAM:
            return False
        self.current, self.current_free, self.current_used = chip, self.free[chip], self.used[chip] + need
        for target in self.links[chip]:
            if target not in self.full and target not in self.prepared:
                self.neighbours[target] = None
        return True

    def _start(self, need: int) -> None:
        self.neighbours.clear()
        while True:
            start = self._next_start()
            self.starts_tried.append(start)
            if self._space(start, need):
                return

    def _next_start(self) -> int:
        while self.restored:
            chip = self.restored.pop(0)
            if chip not in self.full:
                return chip
        for chip in self.order:
            if chip not in self.full:
                return chip
        raise _Unplaceable("no start chip left")

    def _neighbour(self, need: int) -> bool:
        while self.neighbours:
            chip = next(iter(self.neighbours))
            del self.neighbours[chip]
            if self._space(chip, need):
                return True
        return False


def place(vertices: Iterable[list[int]], boards: int = 1, count_cores: bool = True) -> bool:
    """Whether sPyNNaker's placer places these application vertices (each a list of its cores' SDRAM, in
    the order the build creates them) on ``boards`` boards; SDRAM only with ``count_cores`` False."""
    placer = _Placer(boards, count_cores)
    try:
        for cores in vertices:
            placer.place(cores)
    except _Unplaceable:
        return False
    return True


def fits(layout: Layout, copies: int, boards: int = 1, count_cores: bool = True) -> bool:
    """Whether ``copies`` copies place on ``boards`` boards (``place``, every core sized like the largest of
    its population); SDRAM only with ``count_cores`` False, for the SDRAM bound on its own."""
    return place(layout.vertices(copies), boards, count_cores)


def most_copies(layout: Layout, upper: int, boards: int = 1, count_cores: bool = True) -> int:
    """The most copies, at most ``upper``, that ``fits`` places."""
    n = upper
    while n > 0 and not fits(layout, n, boards, count_cores):
        n -= 1
    return n
