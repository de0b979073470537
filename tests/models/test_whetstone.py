"""The Whetstone pieces: activation, sharpening schedules, batch-norm folding, population code, encoder."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.card import Encoding
from models.emulator import softmax
from models.encoding import encode
from models.whetstone import (
    AdaptiveSchedule,
    FixedSchedule,
    PopulationDecoder,
    Sharpener,
    SpikingActivation,
    Thermometer,
    fold_batchnorm,
    population_owner,
    quantise,
    set_total_sharpness,
)

pytestmark = pytest.mark.tf

X = np.array([-1.0, 0.0, 0.2, 0.25, 0.4999, 0.5, 0.6, 0.75, 1.0, 2.0], dtype=np.float32)


def activate(s: float, x: np.ndarray = X) -> np.ndarray:
    return np.asarray(SpikingActivation(s)(tf.constant(x)))


def test_activation_at_zero_is_bounded_relu() -> None:
    np.testing.assert_allclose(activate(0.0), np.clip(X, 0, 1), atol=1e-7)


def test_activation_at_half_is_twice_as_steep() -> None:
    np.testing.assert_allclose(activate(0.5), np.clip((X - 0.5) * 2 + 0.5, 0, 1), atol=1e-6)


def test_activation_at_one_is_the_step_including_the_tie() -> None:
    np.testing.assert_array_equal(activate(1.0), (X >= 0.5).astype(np.float32))


def test_full_sharpness_passes_a_straight_through_gradient() -> None:
    layer = SpikingActivation(1.0)
    x = tf.Variable(X)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x))
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, ((X >= 0) & (X <= 1)).astype(np.float32))


def test_fixed_schedule_sharpens_input_layer_first() -> None:
    layers = [SpikingActivation() for _ in range(3)]
    schedule = FixedSchedule(start_epoch=2, epochs_per_layer=2)
    seen = []
    for progress in (0, 2, 3, 4, 5, 7, 8, 9):
        set_total_sharpness(layers, schedule.total(progress, 3))
        seen.append([float(a.sharpness.numpy()) for a in layers])
    assert seen == [[0, 0, 0], [0, 0, 0], [0.5, 0, 0], [1, 0, 0],
                    [1, 0.5, 0], [1, 1, 0.5], [1, 1, 1], [1, 1, 1]]
    for row in seen:  # a layer never starts before every layer below it is fully sharp
        assert all(row[i] == 1 or row[i + 1] == 0 for i in range(2))


def test_adaptive_schedule_waits_for_a_plateau_then_sharpens() -> None:
    s = AdaptiveSchedule(n_layers=2, step=0.5, patience=2, min_delta=0.01, tolerance=0.1)
    for loss in (1.0, 0.8, 0.7):
        assert s.update(loss) == 0.0
    assert s.update(0.699) == 0.0  # not better by 1 %: first epoch of the plateau
    assert s.update(0.698) == 0.5 and s.started  # patience reached: sharpening starts
    assert s.update(0.70) == 1.0 and s.update(0.71) == 1.5
    assert s.history[-2:] == ["sharpen", "sharpen"]


def test_adaptive_schedule_backs_off_and_pauses_when_the_loss_worsens() -> None:
    s = AdaptiveSchedule(n_layers=3, step=0.5, patience=2, tolerance=0.1, started=True, total=1.0,
                         reference=0.5)
    assert s.update(0.6) == 0.75  # 20 % worse than the reference: half a step back
    assert s.update(0.58) == 0.75 and s.update(0.57) == 0.75  # paused for `patience` epochs
    assert s.update(0.56) == 1.25  # holding: sharpening resumes
    assert s.history == ["backoff", "pause", "pause", "sharpen"]


def test_adaptive_schedule_ends_fully_sharp() -> None:
    s = AdaptiveSchedule(n_layers=2, step=0.5, patience=1, started=True, reference=1.0)
    for _ in range(10):
        s.update(1.0)
    assert s.total == 2.0 and s.done


def test_sharpener_callback_drives_layers_during_fit() -> None:
    keras.utils.set_random_seed(0)
    acts = [SpikingActivation(name=f"a{i}") for i in range(2)]
    inp = keras.Input((4,))
    x = acts[1](keras.layers.Dense(4)(acts[0](keras.layers.Dense(4)(inp))))
    model = keras.Model(inp, x)
    model.compile("sgd", "mse")
    sharpener = Sharpener(acts, FixedSchedule(start_epoch=1, epochs_per_layer=1))
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 4)), rng.random((32, 4)), batch_size=8, epochs=3, verbose=0,
              callbacks=[sharpener])
    assert [float(a.sharpness.numpy()) for a in acts] == [1.0, 1.0]


def test_batchnorm_folding_matches_conv_then_bn() -> None:
    keras.utils.set_random_seed(1)
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=True)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    x = np.random.default_rng(1).random((4, 8, 8, 5)).astype(np.float32)
    conv.build(x.shape)
    bn.build((4, 8, 8, 6))
    rng = np.random.default_rng(2)
    conv.set_weights([rng.normal(size=(3, 3, 5, 6)).astype(np.float32),
                      rng.normal(size=6).astype(np.float32)])
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)])
    expected = np.asarray(bn(conv(x), training=False))
    w, b = fold_batchnorm(conv.kernel.numpy(), conv.bias.numpy(), bn)
    folded = keras.layers.Conv2D(6, 3, padding="same")
    folded.build(x.shape)
    folded.set_weights([w.astype(np.float32), b.astype(np.float32)])
    np.testing.assert_allclose(np.asarray(folded(x)), expected, rtol=1e-4, atol=1e-4)


def test_quantise_rounds_to_the_grid() -> None:
    step = 2.0 ** -6
    q = quantise(np.array([0.0, step * 0.49, step * 0.51, -3.3 * step, 0.5]), step)
    np.testing.assert_array_equal(q, [0, 0, 1, -3, 32])
    assert q.dtype == np.int32


def test_population_key_is_balanced_random_and_seeded() -> None:
    owner = population_owner(4, 5, seed=3)
    assert sorted(owner) == sorted(list(range(4)) * 5)
    assert owner == population_owner(4, 5, seed=3)
    assert owner != population_owner(4, 5, seed=4)
    assert owner != sorted(owner)


def test_decoder_counts_spikes_per_class_and_matches_the_emulator_scores() -> None:
    owner = [1, 0, 2, 1, 0, 2]
    spikes = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1]], dtype=np.float32)
    logits = np.asarray(PopulationDecoder(owner, 3, beta=1.5)(tf.constant(spikes)))
    counts = np.array([[1, 2, 0], [0, 0, 0], [2, 0, 2]])
    np.testing.assert_allclose(logits, 1.5 * counts)
    probs = np.asarray(tf.nn.softmax(logits))
    np.testing.assert_allclose(probs, softmax(counts, 1.5), rtol=1e-6)


def test_thermometer_layer_equals_the_numpy_encoder_with_nan_as_no_data() -> None:
    enc = Encoding(levels=3, thresholds=[[10, 20, 30], [0.5, 1.0, 1.5]])
    px = np.random.default_rng(0).uniform(0, 35, (2, 4, 4, 2)).astype(np.float32)
    px[0, 0, 0, :] = [20.0, 1.0]  # exactly on a threshold: fires
    px[1, 2, 3, 0] = np.nan
    ours = np.asarray(Thermometer.from_encoding(enc)(tf.constant(px)))
    np.testing.assert_array_equal(ours, encode(px, enc).astype(np.float32))
    assert ours[1, 2, 3, :3].sum() == 0
