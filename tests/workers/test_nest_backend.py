"""The NEST backend runs the converted network on a real NEST simulator and agrees with the emulator.

Random integer-grid networks (conv with stride and padding; conv + max-pool + flatten + dense) make the
comparison touch every conversion path; the shipped models are cross-checked on real patches in
tests/models/test_crosscheck.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.emulator import Emulator
from models.encoding import encode_onehot
from models.network import layer_shapes
from tests.models.test_pynn_net import CONV, DENSE, _package  # noqa: I001
from workers.backends import get_backend
from workers.backends.nest import NestBackend


@pytest.mark.parametrize("layers,patch,stride", [(CONV, 10, 2), (DENSE, 8, 8)])
@pytest.mark.parametrize("copies", [1, 3])
def test_nest_spikes_equal_emulator_on_every_layer(layers, patch, stride, copies) -> None:  # type: ignore[no-untyped-def]
    pkg = _package(layers, patch, stride, seed=copies)
    pixels = np.random.default_rng(7).uniform(0, 220, (40, patch, patch, 2)).astype(np.float32)
    valid = np.ones(pixels.shape[:3], dtype=bool)
    valid[::5, :3] = False  # some invalid rows: they must fire nothing on either side
    emulated = Emulator(pkg).run(pixels, valid, keep_layers=True)
    backend = NestBackend(pkg, copies=copies)
    try:
        simulated = backend.layer_spikes(pixels, valid)
        again = backend.infer(pixels, valid)  # a second batch on the same network, later in simulated time
    finally:
        backend.close()
    for ls, spikes in zip(layer_shapes(pkg.card), emulated.layer_spikes or [], strict=True):
        if ls.layer.kind != "flatten":
            np.testing.assert_array_equal(
                simulated[ls.layer.name], spikes.reshape(40, -1), err_msg=ls.layer.name
            )
    np.testing.assert_array_equal(again.scores.argmax(-1), emulated.classes)
    np.testing.assert_allclose(again.scores, emulated.scores, rtol=1e-6)
    # The network's input is one-hot levels (one spike per pixel-band), the emulator counts its thermometer
    # code; every other layer's count is the same.
    assert backend.net.onehot_levels == 3
    onehot = encode_onehot(pixels, pkg.card.encoding, valid).reshape(40, -1).sum(axis=1)
    assert np.all(onehot < emulated.spikes_per_layer[:, 0])
    assert again.spikes.tolist() == (emulated.spikes_per_layer[:, 1:].sum(axis=1) + onehot).tolist()


def test_get_backend_builds_nest() -> None:
    pkg = _package(CONV, 10, 2, seed=0)
    with get_backend("nest", pkg) as backend:
        assert backend.name == "nest" and backend.copies == 1
