"""What one patch costs a copy on the board, measured on real sample patches: spikes, synaptic events per
core, recorded output.

The emulator gives every layer's spikes for each sampled patch; the network description gives every synapse
and the core each post-neuron lands on (``atoms_per_core``, as the sPyNNaker build splits it). A core's
synaptic events for a patch are the synapses from every pre-neuron that fired (the clock fires every step, so
bias synapses always count). Within a 1 ms real-time step a core must process one patch's events, so the
busiest core's high percentile over the sample, not its mean, is what the step has to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.emulator import Emulator
from models.encoding import encode
from models.network import layer_shapes
from models.package import ModelPackage
from models.pynn_net import CLOCK, NetworkDescription, atoms_per_core, input_populations, input_spikes
from workers.backends.pynn_build import NEURONS_PER_CORE
from workers.spinnaker.link import recorded_bytes_per_step

PERCENTILE = 99.0


@dataclass(frozen=True)
class Load:
    patches: int
    input_spikes_per_patch: float
    thermometer_input_spikes_per_patch: float  # what the thermometer code would send, for comparison
    spikes_per_patch: float  # input + every layer's + the clock's
    output_spikes_per_patch: float
    events_per_patch: float  # whole copy
    busiest_core: str  # population of the core with the highest percentile
    busiest_core_events_p99: float
    busiest_core_events_mean: float
    recorded_output_bytes_per_patch: float  # wire bytes, one timestep of the output layer's bitfields


def measure(pkg: ModelPackage, net: NetworkDescription, pixels: np.ndarray, valid: np.ndarray) -> Load:
    emulated = Emulator(pkg).run(pixels, valid, keep_layers=True)
    n = len(pixels)
    spikes: dict[str, np.ndarray] = {CLOCK: np.ones((n, 1), np.float32)}
    inputs = input_spikes(net, pixels, pkg.card.encoding, valid).astype(np.float32)
    for chunk in input_populations(net):
        spikes[chunk.name] = inputs[:, chunk.offset : chunk.offset + chunk.size]
    for ls, layer in zip(layer_shapes(pkg.card), emulated.layer_spikes or [], strict=True):
        spikes[ls.layer.name] = layer.reshape(n, -1).astype(np.float32)
    best = ("", 0.0, 0.0)
    total_events = np.zeros(n)
    for pop in net.populations:
        if pop.is_source:
            continue
        per_core = core_events(net, pop.name, spikes)  # [n, cores]
        total_events += per_core.sum(axis=1)
        p99 = np.percentile(per_core, PERCENTILE, axis=0)
        core = int(p99.argmax())
        if p99[core] > best[1]:
            best = (pop.name, float(p99[core]), float(per_core[:, core].mean()))
    out = net.output
    out_size = next(p.size for p in net.populations if p.name == out)
    layer_total = sum(float(spikes[p.name].sum(axis=1).mean()) for p in net.populations if not p.is_source)
    return Load(
        patches=n,
        input_spikes_per_patch=float(inputs.sum(axis=1).mean()),
        thermometer_input_spikes_per_patch=float(encode(pixels, pkg.card.encoding, valid).sum() / n),
        spikes_per_patch=float(inputs.sum(axis=1).mean()) + layer_total + 1.0,
        output_spikes_per_patch=float(spikes[out].sum(axis=1).mean()),
        events_per_patch=float(total_events.mean()),
        busiest_core=best[0],
        busiest_core_events_p99=best[1],
        busiest_core_events_mean=best[2],
        recorded_output_bytes_per_patch=recorded_bytes_per_step(
            out_size, atoms_per_core(net, out, NEURONS_PER_CORE)
        ),
    )


def core_events(net: NetworkDescription, post: str, spikes: dict[str, np.ndarray]) -> np.ndarray:
    """[patches, cores of ``post``]: synaptic events each core of ``post`` processes per patch."""
    atoms = atoms_per_core(net, post, NEURONS_PER_CORE)
    size = next(p.size for p in net.populations if p.name == post)
    cores = -(-size // atoms)
    events = np.zeros((next(iter(spikes.values())).shape[0], cores))
    for proj in net.projections:
        if proj.post != post:
            continue
        pre = spikes[proj.pre]
        synapses = np.zeros((pre.shape[1], cores), np.float32)  # synapses from each pre-neuron per core
        np.add.at(synapses, (proj.rows[:, 0].astype(np.int64), proj.rows[:, 1].astype(np.int64) // atoms), 1)
        events += pre @ synapses
    return events
