"""The PyNN description computes exactly what the emulator computes.

A tiny event-driven reference (numpy, independent of the emulator's im2col code) runs the description's
connection lists with the IF semantics the docstring of models/pynn_net.py promises, and must reproduce the
emulator's spikes on every layer, for conv (strided, padded), max-pool, flatten and dense layers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models import package
from models.card import Band, Encoding, FixedPoint, Layer, ModelCard, PopulationCode
from models.emulator import Emulator
from models.encoding import encode, encode_onehot
from models.network import layer_shapes, weight_shape
from models.pynn_net import (
    CLOCK,
    THRESHOLD,
    describe,
    input_populations,
    input_spikes,
    max_summed_weights,
)


def _package(layers: list[Layer], patch: int, stride: int, seed: int) -> package.ModelPackage:
    card = ModelCard(
        name="pynn-test",
        version="0",
        task="segmentation",
        classes=["a", "b"],
        colors=[[0, 0, 0, 255], [255, 255, 255, 255]],
        bands=[Band(name="red"), Band(name="nir")],
        gsd_m=1.0,
        patch_size=patch,
        output_stride=stride,
        encoding=Encoding(levels=3, thresholds=[[50, 100, 150], [60, 120, 180]]),
        layers=layers,
        population_code=PopulationCode(neurons_per_class=3, owner=[0, 1, 0, 1, 1, 0], beta=1.0),
        fixed_point=FixedPoint(weight_step=1 / 16),
    )
    rng = np.random.default_rng(seed)
    weights = {}
    for ls in layer_shapes(card):
        if ls.layer.has_weights:
            shape = weight_shape(ls)
            weights[f"{ls.layer.name}.w"] = rng.integers(-6, 7, shape).astype(np.int32)
            weights[f"{ls.layer.name}.b"] = rng.integers(-8, 12, shape[-1:]).astype(np.int32)
    return package.from_parts(card, weights)


CONV = [
    Layer(name="c1", kind="conv2d", filters=5, kernel=3, stride=2, padding="same"),
    Layer(name="c2", kind="conv2d", filters=4, kernel=3, stride=1, padding="same"),
    Layer(name="out", kind="conv2d", filters=6, kernel=1),
]
DENSE = [
    Layer(name="c1", kind="conv2d", filters=4, kernel=3, stride=1, padding="valid"),
    Layer(name="p1", kind="maxpool", kernel=2, stride=2, padding="valid"),
    Layer(name="f", kind="flatten"),
    Layer(name="d1", kind="dense", units=10),
    Layer(name="out", kind="dense", units=6),
]


def _reference(net, spikes: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    flat = spikes.reshape(spikes.shape[0], -1).astype(np.float64)
    state = {
        **{p.name: flat[:, p.offset : p.offset + p.size] for p in input_populations(net)},
        CLOCK: np.ones((spikes.shape[0], 1)),
    }
    for pop in net.populations:
        if pop.is_source:
            continue
        v = np.zeros((spikes.shape[0], pop.size))
        for proj in net.projections:
            if proj.post == pop.name:
                pre, post, w = proj.rows[:, 0].astype(int), proj.rows[:, 1].astype(int), proj.rows[:, 2]
                sign = 1.0 if proj.excitatory else -1.0
                np.add.at(v, (slice(None), post), sign * w * state[proj.pre][:, pre])
        state[pop.name] = (v >= THRESHOLD).astype(np.float64)
    return state


FLAT = [
    Layer(name="f", kind="flatten"),
    Layer(name="d1", kind="dense", units=9),
    Layer(name="out", kind="dense", units=6),
]


@pytest.mark.parametrize("layers,patch,stride", [(CONV, 10, 2), (DENSE, 8, 8), (FLAT, 4, 4)])
@pytest.mark.parametrize("seed,chunk", [(0, 4096), (1, 37)])
@pytest.mark.parametrize("onehot", [True, False])
def test_description_matches_emulator_on_every_layer(layers, patch, stride, seed, chunk, onehot) -> None:  # type: ignore[no-untyped-def]
    pkg = _package(layers, patch, stride, seed)
    rng = np.random.default_rng(100 + seed)
    pixels = rng.uniform(0, 220, (64, patch, patch, 2)).astype(np.float32)
    emulated = Emulator(pkg).run(pixels, keep_layers=True)
    net = describe(pkg, input_chunk=chunk, onehot=onehot)
    assert net.onehot_levels == (3 if onehot else 0)
    assert len(input_populations(net)) == -(-patch * patch * 6 // chunk)
    ref = _reference(net, input_spikes(net, pixels, pkg.card.encoding))
    names = [ls.layer.name for ls in layer_shapes(pkg.card)]
    for name, spikes in zip(names, emulated.layer_spikes or [], strict=True):
        if name in ref:
            np.testing.assert_array_equal(ref[name], spikes.reshape(64, -1), err_msg=name)
    assert net.output == names[-1]
    assert 0 < ref[net.output].mean() < 1, "degenerate test network: outputs all equal"


def test_description_counts_only_real_synapses() -> None:
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    assert all(p.rows[:, 2].min() > 0 for p in net.projections)  # magnitudes; sign is the receptor
    assert net.latency_steps == 3
    assert net.neurons == 5 * 5 * 5 + 5 * 5 * 4 + 5 * 5 * 6


def test_onehot_input_sends_one_spike_per_pixel_band_on_its_level() -> None:
    pkg = _package(CONV, 10, 2, 0)
    pixels = np.array([[[[0, 60], [100, 119], [149, 500]]]], np.float32)  # levels: (0,1) (2,1) (2,3)
    thermo = encode(pixels, pkg.card.encoding)[0, 0]
    onehot = encode_onehot(pixels, pkg.card.encoding)[0, 0]
    assert thermo.reshape(3, 2, 3).sum(-1).tolist() == [[0, 1], [2, 1], [2, 3]]
    assert onehot.reshape(3, 2, 3).tolist() == [
        [[0, 0, 0], [1, 0, 0]],
        [[0, 1, 0], [1, 0, 0]],
        [[0, 1, 0], [0, 0, 1]],
    ]


def test_a_first_maxpool_keeps_the_thermometer_code() -> None:
    pooled = [Layer(name="p", kind="maxpool", kernel=2, stride=2, padding="valid"), *CONV]
    pkg = _package(pooled, 8, 4, 0)
    assert describe(pkg).onehot_levels == 0
    with pytest.raises(ValueError, match="not exact"):
        describe(pkg, onehot=True)


def test_onehot_weight_bound_counts_one_level_per_pixel_band() -> None:
    """A first-layer neuron hears at most one level per pixel-band: its exact bound is the sum of each
    group's largest cumulative weight, below the all-inputs-fire bound of the same weights."""
    pkg = _package(CONV, 10, 2, 0)
    onehot, thermo = describe(pkg, onehot=True), describe(pkg, onehot=False)
    w = pkg.weights["c1.w"].astype(np.float64) * pkg.card.fixed_point.weight_step  # [3, 3, 6, 5]
    cum = np.cumsum(w.reshape(3, 3, 2, 3, 5), axis=3)
    b = pkg.weights["c1.b"].astype(np.float64) * pkg.card.fixed_point.weight_step  # from the clock
    # An interior neuron of c1 sees every tap, so it has the largest bound of its filter.
    exc = np.clip(cum, 0, None).max(axis=3).sum(axis=(0, 1, 2)) + np.clip(b, 0, None)
    inh = np.clip(-cum, 0, None).max(axis=3).sum(axis=(0, 1, 2)) + np.clip(-b, 0, None)
    got = max_summed_weights(onehot, "c1")
    assert got[0] == pytest.approx(exc.max()) and got[1] == pytest.approx(inh.max())
    all_fire = max_summed_weights(dataclasses.replace(onehot, onehot_levels=0), "c1")
    assert got[0] < all_fire[0] and got[1] < all_fire[1]
    assert max_summed_weights(thermo, "c2") == max_summed_weights(onehot, "c2")


def test_onehot_input_is_under_a_third_of_the_thermometer_spikes(
    shipped: package.ModelPackage, real_patches: np.ndarray
) -> None:
    pixels = real_patches[:512]
    thermo = int(encode(pixels, shipped.card.encoding).sum())
    onehot = int(input_spikes(describe(shipped), pixels, shipped.card.encoding).sum())
    assert 0 < onehot <= 0.3 * thermo, (onehot, thermo)
