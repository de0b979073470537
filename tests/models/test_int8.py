"""The emulator's int8 path (models/int8*.py) against its own kernels, and the bounds it refuses.

Random integer-grid networks cover every layer kind the int8 graph builds (strided and padded conv, max-pool,
flatten, dense); the shipped models are compared with Keras layer by layer in test_exact.py."""

from __future__ import annotations

import numpy as np
import pytest

from models import package
from models.card import Band, Encoding, FixedPoint, Layer, ModelCard, PopulationCode
from models.emulator import Emulator, softmax
from models.encoding import encode
from models.int8 import ENGINES
from models.int8_codec import Thermometer
from models.network import layer_shapes, weight_shape
from tests.models.test_pynn_net import CONV, DENSE, FLAT, _package


def _pixels(n: int, patch: int, bands: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 220, (n, patch, patch, bands)).astype(np.float32)
    pixels[rng.random(pixels.shape) < 0.02] = np.nan  # NaN fires nothing
    valid = rng.random(pixels.shape[:3]) > 0.1
    return pixels, valid


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    for field in ("counts", "output_spikes", "spikes_per_layer", "scores"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.layer_spikes is not None and b.layer_spikes is not None
    for i, (x, y) in enumerate(zip(a.layer_spikes, b.layer_spikes, strict=True)):
        assert x.shape == y.shape and x.dtype == y.dtype, i
        np.testing.assert_array_equal(x, y, err_msg=f"layer {i}")


# FLAT starts with flatten: its kept spikes are the input's (it once raised IndexError in _count).
@pytest.mark.parametrize("layers,patch,stride", [(CONV, 10, 2), (DENSE, 8, 8), (FLAT, 4, 4)])
@pytest.mark.parametrize("seed,n", [(0, 200), (1, 67)])  # 67: a batch that is not a multiple of 64
@pytest.mark.parametrize("engine", ENGINES)
def test_int8_path_spikes_exactly_as_the_emulator_kernels(layers, patch, stride, seed, n, engine) -> None:  # type: ignore[no-untyped-def]
    pkg = _package(layers, patch, stride, seed)
    fast, slow = Emulator(pkg, engine=engine), Emulator(pkg, int8=False)
    assert fast.path == "int8" and fast.fallback_reason is None, fast.fallback_reason
    assert fast.engine == engine
    assert slow.path == "fallback"
    pixels, valid = _pixels(n, patch, 2, seed)
    ours = fast.run(pixels, valid, keep_layers=True)
    _same(ours, slow.run(pixels, valid, keep_layers=True))
    assert 0 < ours.spikes_per_layer[:, 1:].mean()  # not silent: the comparison proves something
    spikes = encode(pixels, pkg.card.encoding, valid)
    _same(fast.run_spikes(spikes, keep_layers=True), ours)
    plain = fast.run(pixels, valid)
    assert plain.layer_spikes is None
    np.testing.assert_array_equal(plain.spikes_per_layer, ours.spikes_per_layer)


@pytest.mark.parametrize("levels", [1, 3, 8, 16])
def test_encoder_writes_what_encode_computes(levels: int) -> None:
    rng = np.random.default_rng(levels)
    thresholds = np.sort(rng.uniform(0, 255, (3, levels)), axis=1).astype(np.float32)
    encoding = Encoding(levels=levels, thresholds=thresholds.tolist())
    pixels, valid = _pixels(5, 13, 3, levels)  # 169 pixels: the last block of 16 is partial
    pixels[0, 0, 0] = thresholds[:, 0]  # exactly on a threshold: fires
    out = np.empty((5, 13, 13, 3 * levels), np.uint8)
    counts = np.empty(5, np.int64)
    Thermometer(thresholds)(pixels, valid, out, counts)
    expected = encode(pixels, encoding, valid)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(counts, expected.reshape(5, -1).sum(axis=1))


def _many_classes(n_classes: int) -> package.ModelPackage:
    owner = [i % n_classes for i in range(2 * n_classes)]
    card = ModelCard(
        name="int8-classes",
        version="0",
        task="segmentation",
        classes=[f"c{i}" for i in range(n_classes)],
        colors=[[i, i, i, 255] for i in range(n_classes)],
        bands=[Band(name="red"), Band(name="nir")],
        gsd_m=1.0,
        patch_size=8,
        output_stride=2,
        encoding=Encoding(levels=4, thresholds=[[40, 80, 120, 160], [50, 90, 130, 170]]),
        layers=[
            Layer(name="c1", kind="conv2d", filters=12, kernel=2, stride=2),
            Layer(name="out", kind="conv2d", filters=len(owner), kernel=1),
        ],
        population_code=PopulationCode(neurons_per_class=2, owner=owner, beta=0.7),
        fixed_point=FixedPoint(weight_step=1 / 64),
    )
    rng = np.random.default_rng(n_classes)
    weights = {}
    for ls in layer_shapes(card):
        shape = weight_shape(ls)
        weights[f"{ls.layer.name}.w"] = rng.integers(-40, 41, shape).astype(np.int32)
        weights[f"{ls.layer.name}.b"] = rng.integers(-20, 40, shape[-1:]).astype(np.int32)
    return package.from_parts(card, weights)


@pytest.mark.parametrize("n_classes", [2, 7, 9, 13])
def test_table_softmax_gives_the_softmax_of_the_counts(n_classes: int) -> None:
    pkg = _many_classes(n_classes)
    pixels, valid = _pixels(300, 8, 2, n_classes)
    result = Emulator(pkg).run(pixels, valid)
    assert len(np.unique(result.counts)) > 1
    np.testing.assert_array_equal(result.scores, softmax(result.counts, pkg.card.population_code.beta))
    _same(
        Emulator(pkg).run(pixels, valid, keep_layers=True), Emulator(pkg, int8=False).run(pixels, valid, True)
    )


def _with_weight(pkg: package.ModelPackage, layer: str, value: float) -> dict[str, np.ndarray]:
    weights = {k: v.astype(np.float64) for k, v in pkg.weights.items()}
    weights[f"{layer}.w"].flat[0] = value
    return weights


@pytest.mark.parametrize(
    "value,reason", [(200, "do not fit int8"), (0.5, "off the integer grid"), (-129, "do not fit int8")]
)
def test_weights_the_int8_path_cannot_hold_fall_back_and_say_so(value: float, reason: str) -> None:
    pkg = _package(CONV, 10, 2, 0)
    emulator = Emulator(pkg, weights=_with_weight(pkg, "c2", value))
    assert emulator.path == "fallback" and reason in (emulator.fallback_reason or "")
    assert "c2" in (emulator.fallback_reason or "")
    pixels, valid = _pixels(20, 10, 2, 0)
    assert emulator.run(pixels, valid).scores.shape == (20, 5, 5, 2)  # still runs, on the other kernels


@pytest.mark.parametrize("layers,patch,stride,big", [(CONV, 10, 2, "c2"), (DENSE, 8, 8, "d1")])
@pytest.mark.parametrize("value", [65, 127, -128])
def test_without_vnni_weights_beyond_64_are_split_and_stay_exact(layers, patch, stride, big, value,  # type: ignore[no-untyped-def]
                                                                 monkeypatch) -> None:
    """u8 x s8 pairs add in saturating int16 without VNNI: 255 * (w1 + w2) fits only for |w| <= 64, so such a
    layer runs as two halves within +-64 over its input doubled; the first layer (spikes worth 1) cannot
    saturate and keeps the whole int8 range."""
    import models.int8

    pkg = _package(layers, patch, stride, 0)
    weights = {k: v.astype(np.float64) for k, v in pkg.weights.items()}
    weights[f"{big}.w"][..., 0] = value  # a whole neuron's fan-in: many pairs of large weights meet
    weights["c1.w"].flat[0] = value
    monkeypatch.setattr(models.int8, "cpu_has_vnni", lambda *a: False)
    split = Emulator(pkg, weights=weights)
    assert split.path == "int8", split.fallback_reason
    assert split._int8 is not None
    nodes = {layer.shape.layer.name: layer for layer in split._int8.net.layers}
    assert [name for name, layer in nodes.items() if layer.doubled] == [big]
    assert int(np.abs(nodes["c1"].w.astype(np.int64)).max()) == abs(value)  # type: ignore[union-attr]
    for layer in nodes.values():
        if layer.w is not None and layer.input_value == 255:
            assert np.abs(layer.w.astype(np.int64)).max() <= 64
    pixels, valid = _pixels(200, patch, 2, 0)
    ours = split.run(pixels, valid, keep_layers=True)
    _same(ours, Emulator(pkg, weights=weights, int8=False).run(pixels, valid, keep_layers=True))
    assert 0 < ours.spikes_per_layer[:, 1:].mean()
    monkeypatch.setattr(models.int8, "cpu_has_vnni", lambda *a: True)
    assert Emulator(pkg, weights=weights)._int8 is not None
    assert not any(layer.doubled for layer in Emulator(pkg, weights=weights)._int8.net.layers)  # type: ignore[union-attr]


def test_sums_beyond_the_exact_range_are_refused() -> None:
    pkg = _package(CONV, 10, 2, 0)
    weights = {k: v.copy() for k, v in pkg.weights.items()}
    weights["out.b"][0] = -(2**20)
    emulator = Emulator(pkg, weights=weights)
    assert emulator.path == "fallback" and "exact range" in (emulator.fallback_reason or "")


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_batch_threads_and_profile(engine: str) -> None:
    pkg = _package(DENSE, 8, 8, 3)
    pixels, valid = _pixels(130, 8, 2, 3)
    one, two = Emulator(pkg, engine=engine), Emulator(pkg, threads=2, engine=engine)
    _same(one.run(pixels, valid, keep_layers=True), two.run(pixels, valid, keep_layers=True))
    empty = one.run(pixels[:0], valid[:0], keep_layers=True)
    assert empty.scores.shape == (0, 1, 1, 2) and empty.spikes_per_layer.shape == (0, 6)
    assert [s.shape for s in empty.layer_spikes or []] == [(0, *ls.out_shape) for ls in one.shapes]
    times = one.profile(pixels, valid)
    assert list(times) == [
        "encode (thermometer to uint8)",
        "c1",
        "p1",
        "d1",
        "out",
        *(["openvino reorders and outputs"] if engine == "openvino" else []),
        "spike counts and decode (table)",
    ]
    assert all(t >= 0 for t in times.values()) and times["c1"] > 0
    with pytest.raises(ValueError, match="bands"):
        one.run(pixels[..., :1], valid)
