"""A fully convolutional model as ONE large tile on sPyNNaker's local-only convolution (issue 14 item 5).

sPyNNaker 7.4.1's ``ConvolutionConnector`` with ``sim.Convolution()`` synapse dynamics keeps a kernel in a
core's DTCM and applies it to every spike it receives, so a population of it is not held to the 256
neurons per core of SDRAM synaptic rows (``AbstractLocalOnly.absolute_max_atoms_per_core`` = 2,048). Its
convolution is single-channel to single-channel, so a layer of C_in -> C_out channels is one ``Grid2D``
population per channel (T x T neurons) and one projection per (input channel, output channel) with a
non-zero kernel; a population that takes local-only projections takes nothing else, so a layer's bias
becomes its channel's threshold (0.5 - b) instead of the clock's synapses. The input is one spike-source
``Grid2D`` population per input channel (one-hot levels: band b at level q on channel b*K + q - 1).

Kernel orientation. sPyNNaker's C kernel (``local_only_conv_impl.c``, both versions read) loops over the
post neurons a spike reaches with kernel index ``kr = K - 1 - i`` for the post neuron ``i`` rows above the
pre neuron's (padded) position, i.e. a true convolution; Keras' conv is a cross-correlation. So the kernel
handed to sPyNNaker is the Keras kernel flipped in both axes (``spynnaker_kernel``). A virtual board runs
nothing, so this orientation is read from the source, not observed.

Used by ``mapping.py --local-only --tile T`` (a child run through ``Workspace.run_child``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.encoding import cumulative_levels
from models.network import layer_shapes
from models.package import ModelPackage
from models.pynn_net import THRESHOLD

# sPyNNaker 7.4.1: AbstractLocalOnly.absolute_max_atoms_per_core (its own "bit of an estimate")
LOCAL_ONLY_MAX_ATOMS = 2048
INPUT = "input"


@dataclass(frozen=True)
class TileLayer:
    name: str
    kernel: np.ndarray  # [k, k, c_in, c_out] float weights (Keras orientation), cumulative for one-hot input
    bias: np.ndarray  # [c_out] float
    pad: int
    onehot_levels: int = 0  # > 0: the input is one-hot levels of this many per band (first layer)


def tile_layers(pkg: ModelPackage) -> list[TileLayer]:
    """The card's layers as local-only convolutions; refuses what local-only convolution cannot run
    exactly here (pooling, dense, strides, 'valid' padding would change the plane's shape)."""
    from models.pynn_net import describe

    card = pkg.card
    net = describe(pkg)
    step = card.fixed_point.weight_step
    layers = []
    for ls in layer_shapes(card):
        layer = ls.layer
        if layer.kind != "conv2d" or layer.stride != 1 or layer.padding != "same" or layer.kernel % 2 == 0:
            raise ValueError(f"{card.name}: layer {layer.name} ({layer.kind}) is not a stride-1 'same' conv "
                             "with an odd kernel; local-only tiles need a fully convolutional network")
        w = pkg.weights[f"{layer.name}.w"].astype(np.float64) * step
        levels = 0
        if net.cumulative_param == f"{layer.name}.w":
            w = cumulative_levels(w, net.onehot_levels, axis=2)
            levels = net.onehot_levels
        b = pkg.weights[f"{layer.name}.b"].astype(np.float64) * step
        layers.append(TileLayer(layer.name, w, b, layer.kernel // 2, levels))
    return layers


def spynnaker_kernel(kernel: np.ndarray) -> np.ndarray:
    """A Keras [k, k] kernel as sPyNNaker's ConvolutionConnector applies it (module docstring)."""
    return np.ascontiguousarray(kernel[::-1, ::-1])


def summed_weight_bounds(layer: TileLayer) -> np.ndarray:
    """[c_out, 2]: the exact largest excitatory and inhibitory input one neuron of each channel can get in
    a step (every input spiking; a one-hot pixel-band adds only its largest level), floored at the
    threshold as the standard build does; sPyNNaker picks its fixed-point step from it."""
    w = layer.kernel
    pos, neg = np.clip(w, 0, None), np.clip(-w, 0, None)
    if layer.onehot_levels:
        k = layer.onehot_levels
        shape = (w.shape[0], w.shape[1], w.shape[2] // k, k, w.shape[3])
        pos, neg = pos.reshape(shape).max(axis=3), neg.reshape(shape).max(axis=3)
    bounds = np.stack([pos.sum(axis=(0, 1, 2)), neg.sum(axis=(0, 1, 2))], axis=1)
    return np.maximum(bounds, THRESHOLD)


def atoms_shape(tile: int, most: int = LOCAL_ONLY_MAX_ATOMS) -> tuple[int, int]:
    """Rows x columns of a plane per core: whole rows of the tile, as many as fit ``most`` neurons, split
    evenly (a 45 x 45 plane: one core; 48 x 48: 2 cores of 24 x 48; 90 x 90: 5 of 18 x 90)."""
    if tile <= 0:
        raise ValueError("tile must be positive")
    if tile > most:
        raise ValueError(f"a {tile}-pixel row exceeds {most} neurons per core")
    cores = -(-tile // (most // tile))
    return -(-tile // cores), tile


@dataclass
class TileBuild:
    tile: int
    copies: int
    populations: dict[str, list[list[Any]]]  # name -> per copy, per channel
    projections: int
    skipped_zero_kernels: int


def build_tiles(sim: Any, pkg: ModelPackage, tile: int, copies: int, atoms: tuple[int, int] | None = None,
                record_output: bool = True) -> TileBuild:
    """``copies`` independent T x T tiles of the network, each channel a Grid2D population of
    ``atoms`` (rows, columns) per core; labels ``<layer>.c<channel>#<copy>``."""
    from workers.backends.pynn_build import neuron_params

    layers = tile_layers(pkg)
    shape = atoms or atoms_shape(tile)
    grid = sim.Grid2D(aspect_ratio=1.0)
    pops: dict[str, list[list[Any]]] = {INPUT: [], **{layer.name: [] for layer in layers}}
    n_proj = skipped = 0
    for k in range(copies):
        inputs = []
        for c in range(layers[0].kernel.shape[2]):
            pop = sim.Population(tile * tile, sim.SpikeSourceArray(spike_times=[]), structure=grid,
                                 label=f"{INPUT}.c{c}#{k}")
            pop.set_max_atoms_per_core(shape)
            inputs.append(pop)
        pops[INPUT].append(inputs)
        pre = inputs
        for layer in layers:
            bounds = summed_weight_bounds(layer)
            post = []
            for co in range(layer.kernel.shape[3]):
                params = {**neuron_params(), "v_thresh": float(THRESHOLD - layer.bias[co])}
                pop = sim.Population(
                    tile * tile, sim.IF_curr_delta(**params), structure=grid, label=f"{layer.name}.c{co}#{k}",
                    additional_parameters={"max_expected_summed_weight": [float(x) for x in bounds[co]]},
                )
                if record_output and layer is layers[-1]:
                    pop.record("spikes")
                post.append(pop)
            for ci, source in enumerate(pre):
                for co, target in enumerate(post):
                    kernel = layer.kernel[:, :, ci, co]
                    if not kernel.any():
                        skipped += 1
                        continue
                    conn = sim.ConvolutionConnector(spynnaker_kernel(kernel), padding=layer.pad)
                    sim.Projection(source, target, conn, sim.Convolution())
                    n_proj += 1
            for pop in post:  # only now: sPyNNaker allows > 256 per core once its synapses are local-only
                pop.set_max_atoms_per_core(shape)
            pops[layer.name].append(post)
            pre = post
    return TileBuild(tile, copies, pops, n_proj, skipped)


def placed_cores() -> dict[str, Any]:
    """From the mapped graph: cores per population kind (input, conv1, ...), neurons per core placed, and
    the neuron-parameter bytes of the largest core of each kind."""
    import collections

    from spinn_front_end_common.data import FecDataView

    cores: collections.Counter[str] = collections.Counter()
    atoms: dict[str, list[int]] = collections.defaultdict(list)
    shapes: dict[str, set[tuple[int, ...]]] = collections.defaultdict(set)
    params: dict[str, int] = {}
    system = 0
    for placement in FecDataView.iterate_placemements():
        app = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app, "label", None)
        if label is None or type(app).__module__.startswith("spinn_front_end_common"):
            system += 1
            continue
        kind = str(label).split("#")[0].split(".")[0]
        cores[kind] += 1
        vertex_slice = placement.vertex.vertex_slice
        n = int(vertex_slice.n_atoms)
        atoms[kind].append(n)
        shapes[kind].add(tuple(int(s) for s in vertex_slice.shape))
        if hasattr(app, "get_sdram_usage_for_neuron_params"):  # a neuron core: what it copies into DTCM
            need = app.get_sdram_usage_for_neuron_params(n) + app.get_sdram_usage_for_core_neuron_params(n)
            params[kind] = max(params.get(kind, 0), int(need))
    return {
        "cores_by_kind": dict(cores),
        "application_cores": sum(cores.values()),
        "system_cores": system,
        "max_neurons_per_core": {k: max(v) for k, v in atoms.items()},
        "min_neurons_per_core": {k: min(v) for k, v in atoms.items()},
        "core_shapes": {k: sorted(v) for k, v in shapes.items()},
        # sPyNNaker's own size of a core's neuron-parameter regions (per-neuron structs, keys), which the
        # core holds in its 64 KB DTCM next to ring buffers, kernels and the stack: a floor, not a check
        "neuron_param_bytes_by_kind": params,
    }
