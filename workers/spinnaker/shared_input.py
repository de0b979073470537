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


def _take(index: dict[bytes, list[int]], key: bytes, used: np.ndarray) -> int | None:
    """An unused patch whose part is ``key``, marked used."""
    for j in index.get(key, []):
        if not used[j]:
            used[j] = True
            return j
    return None


def squares(block: Block, spikes: np.ndarray) -> tuple[list[list[int]], list[int]]:
    """Find squares of neighbouring chips in a batch by their content, in any order: patch j is patch i's
    right (lower) neighbour when j's left (top) part equals i's part one stride to the right (down), spike for
    spike. Returns the squares (row-major slots) and the patches left over. Patches that merely look alike
    are as good as neighbours: a square only ever shares pixels its patches agree on."""
    h, w, c = block.patch
    s = block.stride
    grids = spikes.reshape(len(spikes), h, w, c)
    lefts: dict[bytes, list[int]] = {}
    tops: dict[bytes, list[int]] = {}
    for j, g in enumerate(grids):
        lefts.setdefault(g[:, : w - s].tobytes(), []).append(j)
        tops.setdefault(g[: h - s].tobytes(), []).append(j)
    used = np.zeros(len(spikes), bool)
    found: list[list[int]] = []
    for i in range(len(spikes)):
        if used[i]:
            continue
        used[i] = True
        square, corner = [], i
        for row in range(block.side):
            below = corner if row == 0 else _take(tops, grids[corner][s:].tobytes(), used)
            if below is None:
                break
            corner, line = below, [below]
            while len(line) < block.side:
                right = _take(lefts, grids[line[-1]][:, s:].tobytes(), used)
                if right is None:
                    break
                line.append(right)
            square.extend(line)
        if len(square) == block.copies:
            found.append(square)
        else:
            used[square] = False  # no square starts at i; i and these may still be part of a later one
    taken = {j for sq in found for j in sq}
    return found, [i for i in range(len(spikes)) if i not in taken]


def pack(block: Block, copies: int, spikes: np.ndarray) -> Packing:
    """Lay out ``spikes`` [N, patch input size] (one row per patch, in the copies' own input order) on the
    blocks of ``copies`` copies. Squares of neighbouring chips (``squares``, found by content in any order)
    cost one time slot of one block each; the patches left over go in consecutive groups where their
    overlaps agree, else one slot per patch (in the block's first window). Frames go to the least-busy block
    that has the copies."""
    n_blocks = blocks_for(copies, block)
    capacity = [min(block.copies, copies - b * block.copies) for b in range(n_blocks)]
    found, left = squares(block, spikes) if max(capacity) == block.copies else ([], list(range(len(spikes))))
    groups: list[tuple[np.ndarray, list[int]]] = []
    for square in found:
        canvas = _paste(block, spikes, square)
        if canvas is not None:
            groups.append((canvas, square))
        else:
            left.extend(square)
    for start in range(0, len(left), block.copies):
        group = left[start : start + block.copies]
        canvas = _paste(block, spikes, group) if len(group) <= max(capacity) else None
        if canvas is not None:
            groups.append((canvas, group))
        else:
            groups.extend((_paste(block, spikes, [i]), [i]) for i in group)  # type: ignore[misc]
    busy = [0] * n_blocks
    packing = Packing()
    assigned: list[tuple[int, int, list[int]]] = []
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
