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

Placement (``fits``) replays sPyNNaker's application placer in simplified form: cores go onto chips in the
order the build creates populations (input, clock, then each layer for every copy), chips taken in the
placer's order (x, then y), first chip with a free core and room in its SDRAM. ``mapping.py`` reports what
sPyNNaker itself reserved per core and per chip, and the tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.pynn_net import CLOCK, NetworkDescription, atoms_per_core, input_populations, max_row
from workers.backends.pynn_build import INPUT_ATOMS_PER_CORE, NEURONS_PER_CORE
from workers.spinnaker import strip_input
from workers.spinnaker.strip_input import Strip

# A SpiNN-5 virtual board as sPyNNaker 7.4.1's placer sees it (spinn_machine's virtual_machine(8, 8) with
# version 5; checked by tests/workers/test_spinnaker_plan.py): 48 chips of 123,469,792 bytes, of which the
# monitors' reservations leave CHIP_BYTES (mapping.py's ``sdram.chip_bytes``). Application cores per chip
# after SCAMP and the system cores: 16, or 15 on the 8 chips with one core fewer and on the Ethernet chip
# (0, 0), which also runs the packet gatherer: 759 in all.
CHIP_BYTES = 122_981_316
_SHORT_CHIPS = {(1, 1), (1, 3), (3, 1), (3, 3), (3, 5), (5, 2), (5, 4), (5, 6)}
_BOARD_CHIPS = [  # the placer's chip order: x, then y
    (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3),
    (2, 4), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (4, 0), (4, 1), (4, 2), (4, 3),
    (4, 4), (4, 5), (4, 6), (4, 7), (5, 1), (5, 2), (5, 3), (5, 4), (5, 5), (5, 6), (5, 7), (6, 2), (6, 3),
    (6, 4), (6, 5), (6, 6), (6, 7), (7, 3), (7, 4), (7, 5), (7, 6), (7, 7),
]
APP_CORES_BY_CHIP = [15 if xy in _SHORT_CHIPS or xy == (0, 0) else 16 for xy in _BOARD_CHIPS]
# The placer calls a chip full once it holds more than this (ApplicationPlacer.__cap_sdram: one core's
# average share kept back; 16 usable cores per chip).
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
        return cls(pops, block_copies, block_cores)

    @property
    def bytes_per_copy(self) -> int:
        """A copy's cores (each sized like its population's largest); shared input cores not included."""
        return sum(cores * each for _, cores, each in self.populations)

    @property
    def bytes_by_core(self) -> dict[str, int]:
        return {name: each for name, _, each in self.populations}

    def cores(self, copies: int) -> Iterator[int]:
        """SDRAM of every core of ``copies`` copies (and the shared clock), in build order."""
        if self.block_copies:
            n_blocks = math.ceil(copies / self.block_copies)
            yield from [SOURCE_CORE_BYTES] * (self.block_input_cores * n_blocks)
        clock_done = False
        for name, cores, each in self.populations:
            if not clock_done and not name.startswith("input"):
                yield SOURCE_CORE_BYTES  # the clock comes after the input in the description
                clock_done = True
            yield from [each] * (cores * copies)


def fits(layout: Layout, copies: int, boards: int = 1, count_cores: bool = True) -> bool:
    """Whether ``copies`` copies place on ``boards`` boards: first fit of every core, in build order, onto
    chips in the placer's order, each chip's cores and SDRAM counted (SDRAM only with ``count_cores``
    False, for the SDRAM bound on its own)."""
    free = [c if count_cores else 10**9 for c in APP_CORES_BY_CHIP] * boards
    used = [0] * len(free)
    start = 0  # chips before this are full: first fit never goes back to them
    for need in layout.cores(copies):
        chip = start
        while chip < len(free) and (
            free[chip] == 0 or used[chip] > CHIP_CAP_BYTES or used[chip] + need > CHIP_BYTES
        ):
            chip += 1
        if chip == len(free):
            return False
        free[chip] -= 1
        used[chip] += need
        while start < len(free) and (free[start] == 0 or used[start] > CHIP_CAP_BYTES):
            start += 1
    return True


def most_copies(layout: Layout, upper: int, boards: int = 1, count_cores: bool = True) -> int:
    """The most copies, at most ``upper``, that ``fits`` places."""
    n = upper
    while n > 0 and not fits(layout, n, boards, count_cores):
        n -= 1
    return n
