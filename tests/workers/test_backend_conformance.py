"""Every registered backend (workers.backends.REGISTRY) through the same checks.

Exactness: class scores, classes and spike totals equal those of the emulator's own kernels (and every
layer's spikes, for a backend that reports them); batch order: a batch reversed or split gives the same
per-chip answers; lifecycle: the context manager hands back the backend, repeated batches do not leak into
each other, ``close`` may be called twice. What a backend declares it cannot do is checked to fail, not
skipped: a backend that starts doing it must say so in the registry. A backend this machine cannot run
(the SpiNNaker board, an extra not installed) is skipped with the registry's own reason, after checking that
``get_backend`` refuses it with that reason rather than failing later. (The SpiNNaker virtual board, which
maps and loads but runs no spikes, is exercised in test_spinnaker_backend.py: ~70 s.)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import pytest

from models.emulator import Emulator, EmulatorResult
from models.encoding import encode_onehot, is_ascending
from models.int8 import choose_engine
from models.network import layer_shapes
from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import BackendUnavailable
from tests.models.test_pynn_net import CONV, _package
from workers.backends import REGISTRY, Backend, BackendSpec, backend_names, get_backend, unavailable_reason

N = 24


@pytest.fixture(scope="module")
def pkg() -> ModelPackage:
    return _package(CONV, 10, 2, seed=5)  # strided, padded conv layers: small enough for NEST in seconds


@pytest.fixture(scope="module")
def chips() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    pixels = rng.uniform(0, 220, (N, 10, 10, 2)).astype(np.float32)
    valid = rng.random(pixels.shape[:3]) > 0.1
    return pixels, valid


@pytest.fixture(scope="module")
def reference(pkg: ModelPackage, chips: tuple[np.ndarray, np.ndarray]) -> EmulatorResult:
    return Emulator(pkg, int8=False).run(*chips, keep_layers=True)


@pytest.fixture(params=backend_names(include_variants=True))
def backend(request: pytest.FixtureRequest, pkg: ModelPackage) -> Iterator[Backend]:
    """The registered backend ``request.param`` (``registered`` on it: its registry entry)."""
    name = request.param
    settings = Settings(spinnaker_machine=None, spalloc_server=None)
    reason = unavailable_reason(name, settings)
    if reason is not None:
        with pytest.raises(BackendUnavailable, match="backend"):
            get_backend(name, pkg, settings)
        pytest.skip(f"declared unavailable here: {reason}")
    engine = get_backend(name, pkg, settings)
    engine.registered = REGISTRY[name]  # type: ignore[attr-defined]
    try:
        yield engine
    finally:
        engine.close()


def _spec(engine: Backend) -> BackendSpec:
    return engine.registered  # type: ignore[attr-defined,no-any-return]


def _input_spikes(backend: Backend, chips: tuple[np.ndarray, np.ndarray], reference: EmulatorResult
                  ) -> np.ndarray:
    encoding = backend.package.card.encoding
    if _spec(backend).input_code == "onehot" and is_ascending(encoding):
        return encode_onehot(*chips[:1], encoding, chips[1]).reshape(len(chips[0]), -1).sum(axis=1)
    return reference.spikes_per_layer[:, 0]


def test_exact(backend: Backend, chips: tuple[np.ndarray, np.ndarray], reference: EmulatorResult) -> None:
    assert _spec(backend).exact
    result = backend.infer(*chips)
    np.testing.assert_array_equal(result.scores.argmax(-1), reference.classes)
    # Spike totals: the layers' spikes exactly, the input's in the code the backend declares.
    np.testing.assert_array_equal(result.spikes, _input_spikes(backend, chips, reference)
                                  + reference.spikes_per_layer[:, 1:].sum(axis=1))
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-6)
    assert 0 < reference.spikes_per_layer[:, 1:].mean()  # the network is not silent on these chips
    if _spec(backend).layer_spikes:
        layers = backend.layer_spikes(*chips)  # type: ignore[attr-defined]
        for ls, spikes in zip(layer_shapes(backend.package.card), reference.layer_spikes or [], strict=True):
            if ls.layer.kind != "flatten":
                np.testing.assert_array_equal(layers[ls.layer.name], spikes.reshape(N, -1), ls.layer.name)


def test_emulator_runs_the_path_it_is_registered_for(backend: Backend) -> None:
    if backend.name != "emulator":
        pytest.skip("emulator variants only")
    name = _spec(backend).name
    int8 = name != "emulator-fallback" and importlib.util.find_spec("onnxruntime") is not None
    assert backend.path == ("int8" if int8 else "fallback"), backend.fallback_reason  # type: ignore[attr-defined]
    if name.startswith("emulator-") and int8:  # a variant pinned to one engine runs on that engine
        assert backend.engine == name.removeprefix("emulator-")  # type: ignore[attr-defined]
    elif name == "emulator":
        assert backend.engine == choose_engine()  # type: ignore[attr-defined]


def test_batch_order(backend: Backend, chips: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, valid = chips
    whole = backend.infer(pixels, valid)
    backwards = backend.infer(pixels[::-1].copy(), valid[::-1].copy())
    np.testing.assert_array_equal(backwards.scores[::-1], whole.scores)
    np.testing.assert_array_equal(backwards.spikes[::-1], whole.spikes)
    parts = [backend.infer(pixels[a:b], valid[a:b]) for a, b in ((0, 1), (1, 8), (8, N))]
    np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), whole.scores)
    np.testing.assert_array_equal(np.concatenate([p.spikes for p in parts]), whole.spikes)


def test_empty_batch_as_declared(backend: Backend, chips: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, valid = chips
    if _spec(backend).empty_batch:
        result = backend.infer(pixels[:0], valid[:0])
        assert result.scores.shape == (0, *backend.infer(pixels[:1], valid[:1]).scores.shape[1:])
        assert result.spikes.shape == (0,)
    else:
        with pytest.raises(ValueError):
            backend.infer(pixels[:0], valid[:0])


def test_lifecycle(pkg: ModelPackage, chips: tuple[np.ndarray, np.ndarray], backend: Backend) -> None:
    with backend as entered:
        assert entered is backend
        first = backend.infer(*chips)
        again = backend.infer(*chips)  # the second batch starts from a clean state
        np.testing.assert_array_equal(first.scores, again.scores)
        np.testing.assert_array_equal(first.spikes, again.spikes)
        assert backend.copies >= 1
    backend.close()  # a second close (the fixture closes too) is harmless
