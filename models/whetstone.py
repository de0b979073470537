"""The Whetstone method in Keras 3 (TensorFlow backend), written from its description (Severa et al. 2019).

A network is trained with *bounded ReLU* activations whose sharpness ``s`` is raised from 0 to 1 during
training, layer by layer from the input up. At ``s = 1`` each unit is a step, ``y = [x >= 0.5]``: a neuron
that fires iff its weighted input reaches the threshold, so the trained network runs on spiking hardware.

Pieces:
- ``SpikingActivation``: the bounded ReLU with a non-trainable sharpness variable.
- ``Sharpener``: a callback that drives every activation's sharpness from one scalar "total sharpness"
  ``T`` in ``[0, n_layers]`` (layer i gets ``clip(T - i, 0, 1)``, which is what makes the order input-first),
  with a fixed schedule or an adaptive one.
- ``population_owner`` / ``PopulationDecoder``: the N-hot output code and its softmax decoder.
- ``fold_batchnorm`` / ``quantise``: export to the fixed-point grid the package stores.
- ``Thermometer``: the input encoding as a layer, so training batches stay compact uint8/float pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from models.card import Encoding


@keras.saving.register_keras_serializable("spikescan")
class SpikingActivation(keras.layers.Layer):
    """Bounded ReLU with sharpness ``s``: ``clip((x - 0.5) / (1 - s) + 0.5, 0, 1)``; the step at ``s = 1``.

    Gradient choice: for ``s < 1`` the true gradient of the clipped ramp (slope ``1 / (1 - s)`` inside the
    ramp, 0 outside). At ``s = 1`` the forward pass is exactly the step ``[x >= 0.5]`` and the backward pass
    is straight-through with the ``s = 0`` ramp (slope 1 on ``[0, 1]``), so fine-tuning a fully sharpened
    network (e.g. after quantisation) still gets a useful gradient.
    """

    # Below this distance from 1 the ramp is treated as the step, so the slope never overflows.
    EPS = 1e-4

    def __init__(self, sharpness: float = 0.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._initial = float(sharpness)
        self.sharpness = self.add_weight(
            name="sharpness", shape=(), initializer=keras.initializers.Constant(self._initial),
            trainable=False, dtype="float32",
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        s = tf.cast(self.sharpness, x.dtype)
        slope = 1.0 / tf.maximum(1.0 - s, self.EPS)
        soft = tf.clip_by_value((x - 0.5) * slope + 0.5, 0.0, 1.0)
        step = tf.cast(x >= 0.5, x.dtype)
        straight = tf.clip_by_value(x, 0.0, 1.0)
        hard = straight + tf.stop_gradient(step - straight)
        return tf.where(s >= 1.0 - self.EPS, hard, soft)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "sharpness": self._initial}


def set_total_sharpness(layers: list[SpikingActivation], total: float) -> None:
    """Layer i (0 = nearest the input) gets ``clip(total - i, 0, 1)``."""
    for i, layer in enumerate(layers):
        layer.sharpness.assign(float(np.clip(total - i, 0.0, 1.0)))


@dataclass
class FixedSchedule:
    """Sharpen from ``start_epoch``, spending ``epochs_per_layer`` epochs on each layer, updated per batch."""

    start_epoch: float
    epochs_per_layer: float

    def total(self, epoch_progress: float, n_layers: int) -> float:
        return float(np.clip((epoch_progress - self.start_epoch) / self.epochs_per_layer, 0.0, n_layers))


@dataclass
class AdaptiveSchedule:
    """Start sharpening once the loss plateaus; advance ``step`` per epoch while the loss holds; when it
    worsens by more than ``tolerance`` (relative) over the loss at the last good point, back off half a step
    and pause ``patience`` epochs so the network can recover.

    ``update(loss)`` is called once per epoch and returns the new total sharpness."""

    n_layers: int
    step: float = 0.5
    patience: int = 2
    min_delta: float = 0.01
    tolerance: float = 0.1
    total: float = 0.0
    started: bool = False
    best: float = float("inf")
    reference: float = float("inf")
    wait: int = 0
    history: list[str] = field(default_factory=list)

    def update(self, loss: float) -> float:
        if not self.started:
            self._watch_plateau(loss)
        elif loss > self.reference * (1.0 + self.tolerance):
            self.total = max(self.total - self.step / 2, 0.0)
            self.wait = self.patience
            self.reference = float("inf")  # re-anchor on the first epoch after the pause
            self.history.append("backoff")
        elif self.wait > 0:
            self.wait -= 1
            self.reference = min(self.reference, loss)
            self.history.append("pause")
        else:
            self.reference = min(self.reference, loss)
            self.total = min(self.total + self.step, float(self.n_layers))
            self.history.append("sharpen")
        return self.total

    def _watch_plateau(self, loss: float) -> None:
        if loss < self.best * (1.0 - self.min_delta):
            self.best, self.wait = loss, 0
            self.history.append("improving")
            return
        self.wait += 1
        self.history.append("plateau?")
        if self.wait >= self.patience:
            self.started, self.wait, self.reference = True, 0, loss
            self.total = min(self.step, float(self.n_layers))
            self.history[-1] = "start"

    @property
    def done(self) -> bool:
        return self.total >= self.n_layers


class Sharpener(keras.callbacks.Callback):
    """Drives the sharpness of ``layers`` (ordered input → output) from a fixed or adaptive schedule."""

    def __init__(self, layers: list[SpikingActivation], schedule: FixedSchedule | AdaptiveSchedule,
                 monitor: str = "loss") -> None:
        super().__init__()
        self.layers_to_sharpen = layers
        self.schedule = schedule
        self.monitor = monitor
        self.total = 0.0
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if isinstance(self.schedule, FixedSchedule):
            steps = max(int((self.params or {}).get("steps") or 1), 1)
            self._apply(self.schedule.total(self._epoch + batch / steps, len(self.layers_to_sharpen)))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if isinstance(self.schedule, FixedSchedule):  # the end of epoch e is progress e + 1 exactly
            self._apply(self.schedule.total(epoch + 1, len(self.layers_to_sharpen)))
        elif logs and self.monitor in logs:
            self._apply(self.schedule.update(float(logs[self.monitor])))
        if logs is not None:
            logs["sharpness"] = self.total

    def _apply(self, total: float) -> None:
        self.total = total
        set_total_sharpness(self.layers_to_sharpen, total)


# --- population code -------------------------------------------------------------------------------------

def population_owner(n_classes: int, neurons_per_class: int, seed: int) -> list[int]:
    """A random key: output neuron i belongs to class owner[i]; every class owns exactly neurons_per_class."""
    owner = np.repeat(np.arange(n_classes), neurons_per_class)
    return [int(v) for v in np.random.default_rng(seed).permutation(owner)]


@keras.saving.register_keras_serializable("spikescan")
class PopulationDecoder(keras.layers.Layer):
    """Output spikes [..., n_out] → class logits ``beta * (spikes per class)`` [..., C]; softmax outside.

    Returning logits (not probabilities) lets the loss use the numerically stable softmax cross-entropy;
    the emulator's scores are ``softmax`` of exactly these logits."""

    def __init__(self, owner: list[int], n_classes: int, beta: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.owner, self.n_classes, self.beta = list(owner), int(n_classes), float(beta)
        onehot = (np.asarray(owner)[:, None] == np.arange(n_classes)).astype(np.float32)
        self._onehot = tf.constant(onehot)

    def call(self, spikes: tf.Tensor) -> tf.Tensor:
        return self.beta * tf.tensordot(spikes, self._onehot, axes=1)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "owner": self.owner, "n_classes": self.n_classes, "beta": self.beta}


# --- input encoding --------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable("spikescan")
class Thermometer(keras.layers.Layer):
    """[N, H, W, B] pixels → [N, H, W, B*K] spikes, channel b*K + k, exactly as ``models.encoding.encode``
    (float32 ``>=``; NaN marks an invalid pixel and fires nothing)."""

    def __init__(self, thresholds: list[list[float]], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.thresholds = [list(map(float, row)) for row in thresholds]
        self._t = tf.constant(np.asarray(self.thresholds, dtype=np.float32))

    def call(self, pixels: tf.Tensor) -> tf.Tensor:
        spikes = tf.cast(tf.cast(pixels, tf.float32)[..., None] >= self._t, tf.float32)  # [N,H,W,B,K]
        shape = tf.shape(spikes)
        return tf.reshape(spikes, tf.concat([shape[:3], [shape[3] * shape[4]]], axis=0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:3], input_shape[3] * len(self.thresholds[0]))

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "thresholds": self.thresholds}

    @classmethod
    def from_encoding(cls, encoding: Encoding) -> Thermometer:
        return cls(encoding.thresholds, name="encode")


# --- export ----------------------------------------------------------------------------------------------

def fold_batchnorm(kernel: np.ndarray, bias: np.ndarray | None, bn: keras.layers.BatchNormalization
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference-mode batch norm that follows a conv/dense into that layer's kernel and bias.

    BN(z) = gamma * (z - mean) / sqrt(var + eps) + beta with z = W·x + b, so per output channel
    W' = W * g and b' = (b - mean) * g + beta where g = gamma / sqrt(var + eps)."""
    gamma = _bn_param(bn, "gamma", 1.0)
    beta = _bn_param(bn, "beta", 0.0)
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    var = np.asarray(bn.moving_variance, dtype=np.float64)
    g = gamma / np.sqrt(var + bn.epsilon)
    b = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float64)
    return np.asarray(kernel, dtype=np.float64) * g, (b - mean) * g + beta


def _bn_param(bn: keras.layers.BatchNormalization, name: str, default: float) -> np.ndarray:
    var = getattr(bn, name, None)
    n = int(np.asarray(bn.moving_mean).shape[0])
    return np.full(n, default) if var is None else np.asarray(var, dtype=np.float64)


def quantise(values: np.ndarray, step: float) -> np.ndarray:
    """Float weights → integers in units of ``step`` (round half to even, numpy's rule)."""
    return np.round(np.asarray(values, dtype=np.float64) / step).astype(np.int32)
