"""The key property: the emulator and the sharpened Keras reference spike identically on every layer.

Run on at least 1000 real patches of held-out imagery per shipped model (the landcover test polygons'
scene, the held-out OSBS_029 / SOAP_061 tree images), ties at the threshold included."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.emulator import Emulator
from models.encoding import encode
from models.keras_model import build_reference
from models.package import ModelPackage

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("path", ["int8", "fallback"])
def test_emulator_and_keras_spike_identically_on_every_layer(shipped: ModelPackage,
                                                               real_patches: np.ndarray, path: str) -> None:
    """Both of the emulator's paths: the int8 graph (asserted to be the one running: a silent fallback
    would test the other path twice) and its own kernels."""
    spikes = encode(real_patches, shipped.card.encoding)
    emulator = Emulator(shipped, int8=path == "int8")
    assert emulator.path == path, emulator.fallback_reason
    ours = emulator.run_spikes(spikes, keep_layers=True).layer_spikes
    theirs = build_reference(shipped, "spiking").predict(spikes.astype(np.float32), batch_size=256, verbose=0)
    assert ours is not None and len(ours) == len(theirs) == len(shipped.card.layers)
    n = len(real_patches)
    assert n >= 1000
    for layer, a, b in zip(shipped.card.layers, ours, theirs, strict=True):
        b = np.asarray(b)
        assert set(np.unique(b)) <= {0.0, 1.0}, f"{layer.name}: Keras output is not binary"
        mismatched = int((a.reshape(n, -1) != b.reshape(n, -1)).sum())
        assert mismatched == 0, f"{layer.name}: {mismatched} neurons differ over {n} patches"
        assert 0 < a.mean() < 1, f"{layer.name}: silent or saturated, the comparison would prove nothing"


def test_ties_at_the_threshold_occur_and_still_agree(shipped: ModelPackage, real_patches: np.ndarray) -> None:
    """Sums landing exactly on 0.5 are where float rounding would show; count that real data hits them."""
    spikes = encode(real_patches, shipped.card.encoding).astype(np.float32)
    first = shipped.card.layers[0]
    w, b = shipped.float_weights(first.name)
    pre = tf.nn.conv2d(spikes, w, strides=first.stride, padding=first.padding.upper()).numpy() + b
    assert (pre == 0.5).sum() > 0, "no exact ties on the first layer: the tie test would be vacuous"


def test_float_relu_reference_is_the_same_network_without_spikes(shipped: ModelPackage,
                                                                  real_patches: np.ndarray) -> None:
    spikes = encode(real_patches[:64], shipped.card.encoding).astype(np.float32)
    relu = build_reference(shipped, "float_relu").predict(spikes, verbose=0)
    step = build_reference(shipped, "spiking").predict(spikes, verbose=0)
    first_relu, first_step = np.asarray(relu[0]), np.asarray(step[0])
    assert first_relu.min() >= 0 and not set(np.unique(first_relu)) <= {0.0, 1.0}
    # Same weights, so the same first-layer sums: ReLU(sum) >= 0.5 exactly where the spiking layer fired.
    np.testing.assert_array_equal(first_relu >= 0.5, first_step == 1)
