"""A model package as a PyNN network description: plain populations and connection lists, no simulator.

Builders for sPyNNaker and NEST (``workers/backends/pynn_build.py``) turn this one description into either
simulator's objects, so both run literally the same network.

Neuron semantics. Each layer is a population of current-based delta-synapse integrate-and-fire neurons
(``IF_curr_delta``) with threshold 0.5, rest and reset at 0 and a membrane time constant far below one
timestep: a neuron fires in the step its inputs arrive iff W·x + b >= 0.5, then forgets everything before the
next step, so one copy takes a new patch every timestep and L layers add L steps of latency.
The bias b arrives as a synapse from a *clock* source that spikes every timestep: keeping thresholds uniform
means a neuron whose bias alone reaches threshold fires once per step (as the Keras model says), not at the
simulator's resolution, and the bias is quantised on the board like every other weight.
Indices are NHWC-flattened ((y * W + x) * C + c), the order Keras' Flatten uses, so flatten needs no neurons.

Input code. Where the card's thresholds ascend and the first weighted layer reads the input directly, the
input is *one-hot levels* (``models.encoding.encode_onehot``: one spike per pixel-band, on its level's neuron)
and that layer's weights are cumulative along the level axis, so its input sums equal the thermometer
code's exactly: no retraining, 1/4-1/5 of the input spikes and of the first layer's synaptic events.
Otherwise (a max-pool first, non-ascending thresholds) the description keeps the thermometer code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.card import Encoding
from models.encoding import cumulative_levels, encode, encode_onehot, is_ascending
from models.network import LayerShape, layer_shapes
from models.package import ModelPackage

THRESHOLD = 0.5
CLOCK = "clock"
INPUT = "input"


@dataclass(frozen=True)
class PopulationSpec:
    name: str
    size: int
    shape: tuple[int, ...]
    is_source: bool = False
    offset: int = 0  # input chunks: index of the chunk's first neuron in the whole input vector


@dataclass(frozen=True)
class ProjectionSpec:
    pre: str
    post: str
    excitatory: bool
    # [n, 3] rows of (pre index, post index, |weight|) in float weight units; delay is always one timestep.
    rows: np.ndarray
    # Where each row's weight comes from: the package array ("<layer>.w" / "<layer>.b", "" for max-pool)
    # and the flat index into it, so weights read back from a simulator map onto the package's arrays.
    param: str = ""
    param_index: np.ndarray | None = None

    @property
    def synapses(self) -> int:
        return int(self.rows.shape[0])


@dataclass
class NetworkDescription:
    name: str
    populations: list[PopulationSpec] = field(default_factory=list)
    projections: list[ProjectionSpec] = field(default_factory=list)
    output: str = ""
    # One-hot level input: K input neurons per pixel-band of which at most one fires per patch; 0 means the
    # thermometer code. ``cumulative_param`` names the package array whose synapses carry prefix sums.
    onehot_levels: int = 0
    cumulative_param: str = ""

    @property
    def latency_steps(self) -> int:
        """Timesteps from a patch's input spikes to its output spikes."""
        return sum(1 for p in self.populations if not p.is_source)

    @property
    def neurons(self) -> int:
        return sum(p.size for p in self.populations if not p.is_source)

    @property
    def synapses(self) -> int:
        return sum(p.synapses for p in self.projections)


def describe(
    package: ModelPackage,
    weights: dict[str, np.ndarray] | None = None,
    input_chunk: int | None = None,
    onehot: bool | None = None,
) -> NetworkDescription:
    """The network of ``package`` (or the same network with other integer weights, e.g. the board's).

    The input is one source population "input.0", or, with ``input_chunk``, several of at most that many
    neurons ("input.0", "input.1", ...). (On sPyNNaker one population split into cores by the toolchain
    packs better than many small ones: 7 trees copies place that way, 3 with 4096-neuron populations.)
    ``onehot``: one-hot level input (module docstring); None picks it wherever it is exact.
    """
    card = package.card
    step = card.fixed_point.weight_step
    source = weights if weights is not None else package.weights
    shapes = layer_shapes(card)
    net = NetworkDescription(card.name)
    first = onehot_layer(shapes, card.encoding)
    if onehot and first is None:
        raise ValueError(f"{card.name}: one-hot level input is not exact for this model")
    if onehot is not False and first is not None:
        net.onehot_levels, net.cumulative_param = card.encoding.levels, f"{first.layer.name}.w"
    total = int(np.prod(shapes[0].in_shape))
    for c, start in enumerate(range(0, total, input_chunk or total)):
        size = min(input_chunk or total, total - start)
        net.populations.append(PopulationSpec(f"{INPUT}.{c}", size, (size,), True, start))
    net.populations.append(PopulationSpec(CLOCK, 1, (1,), True))
    pre = INPUT
    for ls in shapes:
        if ls.layer.kind == "flatten":
            continue
        name = ls.layer.name
        net.populations.append(PopulationSpec(name, ls.neurons, ls.out_shape))
        if ls.layer.kind == "maxpool":
            rows = _conv_rows(
                ls, np.ones((ls.layer.kernel, ls.layer.kernel, 1, 1), np.float32), depthwise=True
            )
            for src, part in _split_sources(net, pre, rows):
                net.projections.append(ProjectionSpec(src, name, True, part[:, :3]))
        else:
            w = source[f"{name}.w"].astype(np.float64) * step
            if net.cumulative_param == f"{name}.w":  # input channels are the last-but-one weight axis
                w = cumulative_levels(w, net.onehot_levels, axis=w.ndim - 2)
            b = source[f"{name}.b"].astype(np.float64) * step
            rows = _dense_rows(w) if ls.layer.kind == "dense" else _conv_rows(ls, w)
            for src, part in _split_sources(net, pre, rows):
                _add_signed(net, src, name, part, f"{name}.w")
            bias = np.tile(b, ls.neurons // b.size)
            post = np.nonzero(bias)[0]
            bias_rows = np.stack([np.zeros(post.size), post, bias[post], post % b.size], axis=1)
            _add_signed(net, CLOCK, name, bias_rows, f"{name}.b")
        pre = name
    net.output = pre
    return net


def onehot_layer(shapes: list[LayerShape], encoding: Encoding) -> LayerShape | None:
    """The weighted layer that reads the input directly, when one-hot levels are exact for it."""
    if not is_ascending(encoding):
        return None
    kinds = [ls.layer.kind for ls in shapes]
    if kinds[0] == "conv2d":
        return shapes[0]
    if kinds[:2] == ["flatten", "dense"]:
        return shapes[1]
    return None  # a max-pool of thermometer spikes is their OR, which one-hot levels do not give


def input_spikes(
    net: NetworkDescription, pixels: np.ndarray, encoding: Encoding, valid: np.ndarray | None = None
) -> np.ndarray:
    """[N, input size] 0/1 spikes for ``net``'s input code."""
    code = encode_onehot if net.onehot_levels else encode
    return code(pixels, encoding, valid).reshape(pixels.shape[0], -1)


def max_summed_weights(net: NetworkDescription, post: str) -> tuple[float, float]:
    """The largest total excitatory and inhibitory weight one neuron of ``post`` can receive in one step:
    an exact bound, not an estimate from firing rates. Every input may spike at once, except that a one-hot
    input sends at most one level per pixel-band, so such a group adds only its largest weight."""
    size = net_size(net, post)
    totals = {True: np.zeros(size), False: np.zeros(size)}
    offsets = {p.name: p.offset for p in input_populations(net)}
    for proj in net.projections:
        if proj.post != post:
            continue
        rows = proj.rows
        if net.onehot_levels and proj.pre in offsets:
            rows = _largest_per_group(rows, offsets[proj.pre], net.onehot_levels, size)
        np.add.at(totals[proj.excitatory], rows[:, 1].astype(np.int64), rows[:, 2])
    return float(totals[True].max(initial=0.0)), float(totals[False].max(initial=0.0))


def _largest_per_group(rows: np.ndarray, offset: int, levels: int, size: int) -> np.ndarray:
    """Of the rows from one pixel-band's K level neurons into one post neuron, the one of largest weight."""
    group = (rows[:, 0].astype(np.int64) + offset) // levels
    key = group * size + rows[:, 1].astype(np.int64)
    order = np.lexsort((rows[:, 2], key))
    last = np.r_[key[order][1:] != key[order][:-1], True]  # largest weight is last within its key
    return rows[order[last]]


def input_populations(net: NetworkDescription) -> list[PopulationSpec]:
    return [p for p in net.populations if p.is_source and p.name != CLOCK]


def _split_sources(net: NetworkDescription, pre: str, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Rows from ``pre``; rows from the input go to the chunk holding their pre-neuron, re-indexed."""
    if pre != INPUT:
        return [(pre, rows)]
    out = []
    for chunk in input_populations(net):
        keep = (rows[:, 0] >= chunk.offset) & (rows[:, 0] < chunk.offset + chunk.size)
        if keep.any():
            part = rows[keep].copy()
            part[:, 0] -= chunk.offset
            out.append((chunk.name, part))
    return out


def _add_signed(net: NetworkDescription, pre: str, post: str, rows: np.ndarray, param: str) -> None:
    """``rows``: [n, 4] (pre, post, signed weight, flat index into ``param``)."""
    for excitatory in (True, False):
        keep = rows[:, 2] > 0 if excitatory else rows[:, 2] < 0
        if keep.any():
            part = rows[keep].copy()
            part[:, 2] = np.abs(part[:, 2])
            # Sorted by (pre, post): sPyNNaker 7.4's FromListConnector groups rows assuming this order when it
            # sizes synaptic rows, and overestimates them (refusing the network) otherwise.
            part = part[np.lexsort((part[:, 1], part[:, 0]))]
            net.projections.append(
                ProjectionSpec(pre, post, excitatory, part[:, :3], param, part[:, 3].astype(np.int64))
            )


def max_row(rows: np.ndarray, post_atoms_per_core: int) -> int:
    """FromListConnector's row bound: most rows sharing (pre, post // atoms per core)."""
    if rows.size == 0:
        return 0
    key = rows[:, 0].astype(np.int64) * (int(rows[:, 1].max()) // post_atoms_per_core + 1) + (
        rows[:, 1].astype(np.int64) // post_atoms_per_core
    )
    return int(np.unique(key, return_counts=True)[1].max())


def max_row_length(net: NetworkDescription, post: str, atoms_per_core: int) -> int:
    """Most synapses from one pre-neuron into one core of ``post`` (a SpiNNaker synaptic row)."""
    longest = 0
    for proj in net.projections:
        if proj.post == post and proj.rows.size:
            key = (
                proj.rows[:, 0].astype(np.int64) * (net_size(net, post) + 1)
                + proj.rows[:, 1].astype(np.int64) // atoms_per_core
            )
            longest = max(longest, int(np.unique(key, return_counts=True)[1].max()))
    return longest


def atoms_per_core(net: NetworkDescription, post: str, most: int = 256, row_limit: int = 256) -> int:
    """Neurons per core for ``post``: up to ``most``, fewer when a pre-neuron's row into one core would
    exceed the board's row limit (sPyNNaker refuses such networks)."""
    size = net_size(net, post)
    atoms = min(most, size)
    while atoms > 1 and max_row_length(net, post, atoms) > row_limit:
        atoms -= max(1, atoms // 8)
    return atoms


def net_size(net: NetworkDescription, name: str) -> int:
    return next(p.size for p in net.populations if p.name == name)


def _dense_rows(w: np.ndarray) -> np.ndarray:
    pre, post = np.nonzero(w)
    return np.stack([pre, post, w[pre, post], pre * w.shape[1] + post], axis=1).astype(np.float64)


def _conv_rows(ls: LayerShape, w: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """Every (pre, post, weight, flat kernel index) of a strided, padded convolution; taps that fall in
    padding have none."""
    h_in, w_in, c_in = ls.in_shape
    h_out, w_out, c_out = ls.out_shape
    k, s = ls.layer.kernel, ls.layer.stride
    top, left = ls.pad[0], ls.pad[2]
    parts = []
    oy, ox = np.meshgrid(np.arange(h_out), np.arange(w_out), indexing="ij")
    for ky in range(k):
        for kx in range(k):
            iy, ix = oy * s - top + ky, ox * s - left + kx
            ok = (iy >= 0) & (iy < h_in) & (ix >= 0) & (ix < w_in)
            pre_pos = (iy[ok] * w_in + ix[ok])[:, None]
            post_pos = (oy[ok] * w_out + ox[ok])[:, None]
            if depthwise:  # max-pool: channel c feeds channel c only
                chans = np.arange(c_in)[None, :]
                pre_idx, post_idx = pre_pos * c_in + chans, post_pos * c_out + chans
                weight = np.full(pre_idx.shape, float(w[ky, kx, 0, 0]))
                flat = np.zeros(pre_idx.shape)
            else:
                ci, co = np.nonzero(w[ky, kx])
                pre_idx, post_idx = pre_pos * c_in + ci[None, :], post_pos * c_out + co[None, :]
                weight = np.broadcast_to(w[ky, kx][ci, co][None, :], pre_idx.shape)
                flat = np.broadcast_to((((ky * k + kx) * c_in + ci) * c_out + co)[None, :], pre_idx.shape)
            parts.append(np.stack([pre_idx.ravel(), post_idx.ravel(), weight.ravel(), flat.ravel()], axis=1))
    return np.concatenate(parts).astype(np.float64)
