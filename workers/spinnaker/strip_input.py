"""Input shared across blocks: a strip of copies sweeps the scene and every pixel crosses the host link once.

The 2 x 2 blocks of ``shared_input.py`` still send each block's halo again for the next block (0.56 of a
patch's pixels per patch at the half-patch stride, against the 0.25 of sending each pixel once). Here
``n`` copies are stacked down a strip of ``n`` neighbouring chip rows, and in time slot ``t`` the host sends
ONE stride-wide column band of the strip: pixel columns ``[t * stride, (t + 1) * stride)`` for all its
``(n + 1) * stride`` rows (the patch's height plus ``n - 1`` strides). Copy ``k`` computes, in slot ``t``, the
chip whose right-most band is band ``t``: its earlier bands were sent in earlier slots, and the board holds
them back with synaptic delays (band ``j`` of ``w / stride`` bands arrives with delay
``1 + (w / stride - 1 - j)`` steps), so all of the patch reaches the first layer in the same step, as in the
unshared build (delay 1). Every synapse of a copy is its unshared synapse, re-indexed into the strip's band
and delayed; nothing else changes. A strip of ``n`` rows sends ``(n + 1) / (4 n)`` of its patches' pixels
per patch, plus ``w / stride - 1`` warm-up bands each time a sweep starts.

Delays of 1-2 steps are within what a sPyNNaker 7.4.1 neuron core handles itself (no delay-extension cores).
A pre-neuron's synaptic row into a first-layer core now holds the synapses of every patch position it stands
for (two at the half-patch stride), so rows are longer; ``atoms_per_core`` keeps them within the board's
256-synapse row limit and ``sdram.py`` sizes the matrices from the re-indexed rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.pynn_net import CLOCK, NetworkDescription, input_populations, max_row

ROW_LIMIT = 256  # synapses per row into one core (sPyNNaker's POP_TABLE_MAX_ROW_LENGTH)


@dataclass(frozen=True)
class Strip:
    copies: int  # copies stacked down the strip, one per chip row
    patch: tuple[int, int, int]  # one copy's input (H, W, C); C = bands x levels
    stride: int  # pixels between neighbouring chips, across and down

    @property
    def bands(self) -> int:
        """Column bands a patch spans (slots its pixels are spread over)."""
        return self.patch[1] // self.stride

    @property
    def shape(self) -> tuple[int, int, int]:
        h, _, c = self.patch
        return h + (self.copies - 1) * self.stride, self.stride, c

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def pieces(self) -> int:
        """The strip's input is built as this many populations, one per stride of rows: sPyNNaker reserves
        a core's rows for every atom of each pre-population it hears from, so one strip-high population made
        first-layer cores grow with the strip (15 MB at 9 landcover copies); a copy hears from only
        ``patch height / stride`` pieces, whatever the strip's height."""
        return self.shape[0] // self.stride

    @property
    def piece_size(self) -> int:
        """Atoms of one piece: a contiguous range of the strip's flattened (H, stride, C) band."""
        return self.size // self.pieces

    def remap(self, pre: np.ndarray, copy: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into a copy's flattened (H, W, C) input -> (index into the strip's band, delay, steps)."""
        _, w, c = self.patch
        y, rest = np.divmod(pre.astype(np.int64), w * c)
        x, ch = np.divmod(rest, c)
        band, bx = np.divmod(x, self.stride)
        index = ((y + copy * self.stride) * self.stride + bx) * c + ch
        return index, 1 + (self.bands - 1 - band)

    def window(self, frames: list[np.ndarray], copy: int) -> np.ndarray:
        """A copy's patch (flattened) from the last ``bands`` frames (each the strip's band, flattened)."""
        h, w, c = self.patch
        parts = [f.reshape(self.shape)[copy * self.stride : copy * self.stride + h] for f in frames]
        return np.concatenate(parts, axis=1).reshape(-1)


def strip_for(net: NetworkDescription, patch_size: int, copies: int) -> Strip:
    """A strip of ``copies`` copies at the default half-patch chip stride."""
    total = sum(p.size for p in input_populations(net))
    channels = total // (patch_size * patch_size)
    if channels * patch_size * patch_size != total:
        raise ValueError(f"{net.name}: input of {total} is not a {patch_size}x{patch_size} patch")
    stride = patch_size // 2
    if patch_size % stride:
        raise ValueError(f"{net.name}: patch {patch_size} is not a whole number of {stride}-pixel bands")
    return Strip(copies, (patch_size, patch_size, channels), stride)


def input_rows(net: NetworkDescription, post: str, excitatory: bool) -> np.ndarray:
    """One copy's input rows into ``post`` for one receptor, every input chunk merged, pre as indices into
    the copy's whole input: [n, 3] (pre, post, |weight|)."""
    chunks = {p.name: p.offset for p in input_populations(net)}
    parts = [
        np.column_stack([p.rows[:, 0] + chunks[p.pre], p.rows[:, 1:3]])
        for p in net.projections
        if p.pre in chunks and p.post == post and p.excitatory == excitatory
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def strip_rows(strip: Strip, rows: np.ndarray, copy: int = 0) -> np.ndarray:
    """``input_rows`` re-indexed into the strip: [n, 4] (pre, post, |weight|, delay), in (pre, post) order."""
    pre, delay = strip.remap(rows[:, 0].astype(np.int64), copy)
    table = np.column_stack([pre, rows[:, 1], rows[:, 2], delay]).astype(np.float64)
    return table[np.lexsort((table[:, 1], table[:, 0]))]


def by_piece(strip: Strip, table: np.ndarray) -> dict[int, np.ndarray]:
    """``strip_rows`` split by the piece of their pre-neuron, pre re-indexed within the piece."""
    piece = table[:, 0].astype(np.int64) // strip.piece_size
    out = {}
    for p in np.unique(piece).tolist():
        part = table[piece == p].copy()
        part[:, 0] -= p * strip.piece_size
        out[int(p)] = part
    return out


def atoms_per_core(net: NetworkDescription, strip: Strip, post: str, most: int) -> int:
    """Neurons per core of a first layer fed by a strip: its rows (two patch positions per pre-neuron) must
    stay within the row limit; ``most`` is the unshared build's figure."""
    rows = [strip_rows(strip, input_rows(net, post, e)) for e in (True, False)]
    atoms = most
    while atoms > 1 and max(max_row(r, atoms) for r in rows) > ROW_LIMIT:
        atoms -= max(1, atoms // 8)
    return atoms


def strips_for(copies: int, strip: Strip) -> int:
    return math.ceil(copies / strip.copies)


def input_cores(strip: Strip, atoms_per_input_core: int) -> int:
    """Cores of one strip's input: each piece split into input-sized cores."""
    return strip.pieces * math.ceil(strip.piece_size / atoms_per_input_core)


def cores(copies: int, per_copy_without_input: int, strip: Strip, atoms_per_input_core: int) -> int:
    """Application cores: every copy's neuron cores, each strip's input cores, one shared clock core."""
    return copies * per_copy_without_input + strips_for(copies, strip) * input_cores(
        strip, atoms_per_input_core
    ) + 1


def fit(app_cores: int, per_copy_without_input: int, strip: Strip, atoms_per_input_core: int) -> int:
    """Most copies whose cores fit in ``app_cores`` (strips of ``strip.copies``, the last may be short)."""
    n = 0
    while cores(n + 1, per_copy_without_input, strip, atoms_per_input_core) <= app_cores:
        n += 1
    return n


def share_of_patch(strip: Strip) -> float:
    """Pixels sent per patch over a patch's pixels on an endless sweep: (n + 1) / (4 n) at half stride."""
    h, w, _ = strip.patch
    return strip.shape[0] * strip.stride / (strip.copies * h * w)


@dataclass
class Sweep:
    """A batch laid out on one strip: the band the input sends in each slot, and the patch each copy computes
    in each slot (-1: none; a copy's first ``bands - 1`` slots of a sweep compute nothing usable)."""

    frames: list[np.ndarray] = field(default_factory=list)  # indices of the strip's spiking neurons, per slot
    placement: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # [copies, slots]

    @property
    def slots(self) -> int:
        return len(self.frames)

    @property
    def spikes_sent(self) -> int:
        return sum(len(f) for f in self.frames)


def sweep(strip: Strip, spikes: np.ndarray, copies: int | None = None,
          columns: list[list[int]] | None = None) -> Sweep:
    """Lay out ``spikes`` [N, patch input size] on one strip, one column of chips per slot. ``columns``:
    groups of patches, each a chip and the chips below it, top to bottom (``columns``; found here when not
    given). A column continues the sweep when its earlier bands equal the bands already sent (the column to
    the right of the last one does, spike for spike); otherwise a new sweep starts with its warm-up bands. A
    short column leaves the lower copies idle. ``copies``: the strip's copies when it is a short last strip
    (columns are then at most that many patches). Exact for any batch: a copy's window is always exactly its
    patch."""
    height = strip.copies if copies is None else copies
    n, size = spikes.shape
    h, w, c = strip.patch
    if size != h * w * c:
        raise ValueError(f"patch input of {size}, strip expects {h * w * c}")
    b = strip.bands
    grids = spikes.reshape(n, h, w, c)
    found = find_columns(strip, spikes, height) if columns is None else columns
    frames: list[np.ndarray] = []  # dense bands, [strip H, stride, C]
    computes: list[list[int]] = []  # per slot, the patch each copy computes (-1)
    for column in found:
        if len(column) > height or not _continues(strip, grids, column):
            raise ValueError(f"not a column of at most {height} chips, each below the last: {column}")
        bands = [_band(strip, grids, column, j) for j in range(b)]
        known = _band_known(strip, len(column))
        fresh = len(frames) < b - 1 or not all(
            np.array_equal(frames[len(frames) - (b - 1) + j][known], bands[j][known]) for j in range(b - 1)
        )
        if fresh:
            for j in range(b - 1):  # warm-up: the column's earlier bands, nothing computed yet
                frames.append(bands[j])
                computes.append([-1] * strip.copies)
        frames.append(bands[b - 1])
        computes.append(column + [-1] * (strip.copies - len(column)))
    if not frames:
        return Sweep([], np.zeros((strip.copies, 0), np.int64))
    sent = Sweep([np.flatnonzero(f) for f in frames])
    sent.placement = np.array(computes, np.int64).T.reshape(strip.copies, len(frames))
    return sent


def find_columns(strip: Strip, spikes: np.ndarray, height: int | None = None) -> list[list[int]]:
    """The batch's chips as columns of at most ``height`` (default the strip's copies), found by content in
    any order: chip j is below chip i when j's top rows equal i's rows one stride down, spike for spike (as
    ``shared_input.squares`` finds squares). Columns start at the batch's earliest unused chip, so a chip
    grid's row order (the pipeline's) or strip order gives columns left to right; chips that merely look
    alike are as good as neighbours, since a column only shares rows its chips agree on."""
    height = strip.copies if height is None else height
    h, w, c = strip.patch
    s = strip.stride
    grids = spikes.reshape(len(spikes), h, w, c)
    tops: dict[bytes, list[int]] = {}
    for j, g in enumerate(grids):
        tops.setdefault(g[: h - s].tobytes(), []).append(j)
    used = np.zeros(len(spikes), bool)
    out: list[list[int]] = []
    for i in range(len(spikes)):
        if used[i]:
            continue
        used[i] = True
        column = [i]
        while len(column) < height:
            below = next((j for j in tops.get(grids[column[-1]][s:].tobytes(), []) if not used[j]), None)
            if below is None:
                break
            used[below] = True
            column.append(below)
        out.append(column)
    return out


def split_columns(columns: list[list[int]], height: int) -> list[list[int]]:
    """Columns cut into pieces of at most ``height`` chips, top first (for a short last strip)."""
    return [col[k : k + height] for col in columns for k in range(0, len(col), height)]


def _continues(strip: Strip, grids: np.ndarray, column: list[int]) -> bool:
    """Whether each chip of ``column`` is the one below the chip before it (their overlap agrees)."""
    h, s = strip.patch[0], strip.stride
    pairs = zip(column, column[1:], strict=False)
    return all(np.array_equal(grids[j][: h - s], grids[i][s:]) for i, j in pairs)


def _band(strip: Strip, grids: np.ndarray, column: list[int], j: int) -> np.ndarray:
    """Band ``j`` of a column of patches (``find_columns``) as the strip's input; rows no patch covers are
    silent."""
    h, s = strip.patch[0], strip.stride
    band = np.zeros(strip.shape, np.uint8)
    for k, i in enumerate(column):
        band[k * s : k * s + h] = grids[i][:, j * s : (j + 1) * s]
    return band


def _band_known(strip: Strip, filled: int) -> np.ndarray:
    """Rows of the strip's band that a column of ``filled`` patches covers."""
    h, _, _ = strip.patch
    known = np.zeros(strip.shape, bool)
    known[: (filled - 1) * strip.stride + h] = True
    return known


@dataclass(frozen=True)
class OutputShare:
    """Output recorded once per column of cells, not once per patch (recorded bytes are a third of a strip's
    host-link traffic for landcover).

    Neighbouring chips of a sweep overlap by half a patch, and in a network of stride-1 convolutions an output
    cell whose receptive field lies inside both patches is the same in both: the same pixels through the same
    weights, no padding on the way (``margin``: cells from the patch's side within which padding reaches
    the output). So each copy records, of its patch's ``width`` columns of cells, the ``margin`` columns at
    either side that only it computes, and the ``stride`` columns in the middle; the columns between those it
    takes from the patch its own copy computed one slot earlier (the left neighbour, or in a sweep's first
    slot the warm-up slot, whose right band is this patch's left band) and one slot later (the right
    neighbour, or a silent slot after the batch). Those patches' windows hold every pixel the borrowed cells
    see, so the result is exact for any batch the strip sweeps.
    """

    height: int  # rows of output cells
    width: int  # columns of output cells of a patch
    channels: int  # output neurons per cell
    stride: int  # columns of cells between neighbouring chips
    margin: int

    @property
    def centre(self) -> int:
        """First of the ``stride`` middle columns a copy records."""
        return (self.width - self.stride) // 2

    def own_columns(self) -> np.ndarray:
        w, m, c0 = self.width, self.margin, self.centre
        return np.concatenate([np.arange(m), np.arange(c0, c0 + self.stride), np.arange(w - m, w)])

    def neurons(self, columns: np.ndarray) -> np.ndarray:
        """Population indices (cells channels-last, as the description numbers them) of ``columns``."""
        y, x, f = np.meshgrid(np.arange(self.height), columns, np.arange(self.channels), indexing="ij")
        return np.sort(((y * self.width + x) * self.channels + f).ravel())

    def recorded(self) -> np.ndarray:
        """The output neurons each copy records."""
        return self.neurons(self.own_columns())

    def assemble(self, own: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """A patch's whole output [size] from what its copy recorded in its slot (``own``), the slot before
        and the slot after (each [size], unrecorded neurons 0)."""
        grid = own.reshape(self.height, self.width, self.channels).copy()
        prev = before.reshape(grid.shape)
        nxt = after.reshape(grid.shape)
        m, c0, s = self.margin, self.centre, self.stride
        grid[:, m:c0] = prev[:, m + s : c0 + s]  # the left neighbour's middle columns
        grid[:, c0 + s : self.width - m] = nxt[:, c0 : self.width - m - s]  # the right neighbour's
        return grid.reshape(-1)


def output_share(net: NetworkDescription, strip: Strip) -> OutputShare | None:
    """The strip's ``OutputShare``, or None when the network is not stride-1 convolutions keeping the
    patch's size up to its output (pooling, dense layers, strided convolutions: every cell is recorded) or
    the margin leaves nothing to share. Margins are measured on the description's own synapses: per layer,
    the farthest column a neuron hears from."""
    h, w, c = strip.patch
    if strip.bands != 2:
        return None
    widths = {p.name: p.shape for p in net.populations}
    chunks = {p.name: p.offset for p in input_populations(net)}
    margin = 0
    for pop in net.populations:
        if pop.is_source:
            continue
        if len(pop.shape) != 3 or pop.shape[:2] != (h, w):
            return None
        reach = 0
        for proj in net.projections:
            if proj.post != pop.name or proj.pre not in widths or proj.pre == CLOCK or not len(proj.rows):
                continue
            pre_channels = c if proj.pre in chunks else widths[proj.pre][2]
            pre = proj.rows[:, 0].astype(np.int64) + chunks.get(proj.pre, 0)
            post = proj.rows[:, 1].astype(np.int64)
            x_pre, x_post = (pre // pre_channels) % w, (post // pop.shape[2]) % w
            reach = max(reach, int(np.abs(x_pre - x_post).max()))
        margin += reach
    share = OutputShare(h, w, int(widths[net.output][2]), strip.stride, margin)
    if margin > share.centre or (w - strip.stride) % 2:
        return None
    return share
