"""Shared overlapping input (issue 14 item 2): one input population per block of neighbouring copies.

At the default chip stride (half a patch) neighbouring patches overlap, so copies that scan neighbouring
chips need mostly the same pixels. Here ``g x g`` copies form a block that scans a ``g x g`` square of chips;
the block has one spike-source population covering the union of its patches, ``(patch + (g - 1) * stride)``
pixels square, and each copy's first layer reads its own window of it (the synapse rows are the copy's own,
re-indexed). The board's multicast routing then delivers each pixel's spike to every copy whose patch
covers it, so a pixel crosses the host link once per block instead of once per copy that sees it.

This module is the geometry, the core count and the packing of a batch into blocks (``pack``);
``workers/backends/pynn_build.py`` builds the layout and injects packed batches into it, and
``workers/spinnaker/mapping.py`` has sPyNNaker map it. Packing is exact for any batch: a group of
``g x g`` consecutive patches shares one block input only where their overlapping pixels carry the same
spikes (neighbouring chips in block order do); otherwise each of its patches takes a time slot of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.pynn_net import NetworkDescription, input_populations


@dataclass(frozen=True)
class Block:
    side: int  # copies per block side (g)
    patch: tuple[int, int, int]  # one copy's input (H, W, C); C = bands x levels
    stride: int  # pixels between neighbouring copies' patches

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w, c = self.patch
        extra = (self.side - 1) * self.stride
        return h + extra, w + extra, c

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def copies(self) -> int:
        return self.side * self.side

    def origin(self, slot: int) -> tuple[int, int]:
        """Pixel offset (dy, dx) of the copy in ``slot`` (row-major) inside its block."""
        return (slot // self.side) * self.stride, (slot % self.side) * self.stride

    def remap(self, pre: np.ndarray, slot: int) -> np.ndarray:
        """Indices into one copy's flattened (H, W, C) input -> indices into the block's (Hb, Wb, C)."""
        h, w, c = self.patch
        _, wb, _ = self.shape
        dy, dx = self.origin(slot)
        y, rest = np.divmod(pre.astype(np.int64), w * c)
        x, ch = np.divmod(rest, c)
        return ((y + dy) * wb + (x + dx)) * c + ch  # type: ignore[no-any-return]


def block_for(net: NetworkDescription, patch_size: int, side: int) -> Block:
    """The block of ``side x side`` copies at the default half-patch chip stride."""
    total = sum(p.size for p in input_populations(net))
    channels = total // (patch_size * patch_size)
    if channels * patch_size * patch_size != total:
        raise ValueError(f"{net.name}: input of {total} is not a {patch_size}x{patch_size} patch")
    return Block(side, (patch_size, patch_size, channels), patch_size // 2)


def blocks_for(copies: int, block: Block) -> int:
    return math.ceil(copies / block.copies)


def cores(copies: int, per_copy_without_input: int, block: Block, atoms_per_input_core: int) -> int:
    """Application cores: every copy's neuron cores, each block's input cores, one shared clock core. A
    last, partial block still covers its whole square (its copies' windows keep their offsets)."""
    per_block = math.ceil(block.size / atoms_per_input_core)
    return copies * per_copy_without_input + blocks_for(copies, block) * per_block + 1


def fit(app_cores: int, per_copy_without_input: int, block: Block, atoms_per_input_core: int) -> int:
    """Most copies whose cores fit in ``app_cores``."""
    n = 0
    while cores(n + 1, per_copy_without_input, block, atoms_per_input_core) <= app_cores:
        n += 1
    return n


def pixels_sent_per_copy(block: Block) -> float:
    """Input neurons (pixel-bands x levels) the link carries per copy: the block's, shared by its copies."""
    return block.size / block.copies


@dataclass
class Packing:
    """A batch laid out on blocks: what each block's input population sends when, and which patch each copy
    computes in each time slot."""

    # (block, time slot, indices of the block's input neurons that spike)
    frames: list[tuple[int, int, np.ndarray]] = field(default_factory=list)
    placement: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # [copies, slots], -1

    @property
    def slots(self) -> int:
        return int(self.placement.shape[1])

    @property
    def spikes_sent(self) -> int:
        return sum(len(neurons) for _, _, neurons in self.frames)


def _paste(block: Block, spikes: np.ndarray, group: list[int]) -> np.ndarray | None:
    """The block input carrying patches ``group`` in slots 0, 1, ...; None where two disagree on a pixel."""
    h, w, c = block.patch
    canvas = np.zeros(block.shape, np.uint8)
    seen = np.zeros(block.shape[:2], bool)
    for slot, i in enumerate(group):
        dy, dx = block.origin(slot)
        patch = spikes[i].reshape(h, w, c)
        window, known = canvas[dy : dy + h, dx : dx + w], seen[dy : dy + h, dx : dx + w]
        if not np.array_equal(window[known], patch[known]):
            return None
        window[...] = patch
        known[...] = True
    return canvas.reshape(-1)


def pack(block: Block, copies: int, spikes: np.ndarray) -> Packing:
    """Lay out ``spikes`` [N, patch input size] (one row per patch, in the copies' own input order) on the
    blocks of ``copies`` copies. Consecutive groups of ``block.copies`` patches are taken as a block square
    in row-major order; a group that fits together costs one time slot of one block, anything else one slot
    per patch (in the block's first window). Frames go to the least-busy block that has the copies."""
    n_blocks = blocks_for(copies, block)
    capacity = [min(block.copies, copies - b * block.copies) for b in range(n_blocks)]
    groups: list[tuple[np.ndarray, list[int]]] = []
    for start in range(0, len(spikes), block.copies):
        group = list(range(start, min(start + block.copies, len(spikes))))
        canvas = _paste(block, spikes, group) if len(group) <= max(capacity) else None
        if canvas is not None:
            groups.append((canvas, group))
        else:
            groups.extend((_paste(block, spikes, [i]), [i]) for i in group)  # type: ignore[misc]
    busy = [0] * n_blocks
    assigned: list[tuple[int, int, list[int]]] = []
    packing = Packing()
    for canvas, group in groups:
        b = min((b for b in range(n_blocks) if capacity[b] >= len(group)), key=lambda b: (busy[b], b))
        packing.frames.append((b, busy[b], np.flatnonzero(canvas)))
        assigned.append((b, busy[b], group))
        busy[b] += 1
    packing.placement = np.full((copies, max(busy, default=0)), -1, np.int64)
    for b, slot, group in assigned:
        for k, i in enumerate(group):
            packing.placement[b * block.copies + k, slot] = i
    return packing
