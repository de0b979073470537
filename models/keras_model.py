"""Keras models for a card's layer list: the trainable Whetstone network and the exported reference.

``build_trainable`` is what training fits: pixels → thermometer → (conv/dense → batch norm → spiking
activation | max-pool | flatten)* → population decoder (logits).

``build_reference(package, mode)`` is the exported network on *encoded* input spikes, with the package's
grid weights, returning every layer's output:
- ``"spiking"``: the step activation ``[W·x + b >= 0.5]``. Bit-exact with ``models.emulator.Emulator``:
  inputs are 0/1 and weights/biases are integer multiples of ``2**-6``, so each sum is a multiple of the
  step far below ``2**24`` steps and float32 computes it exactly in any order. This holds for TensorFlow's
  CPU convolutions (oneDNN direct/GEMM, float32 accumulation); tests/models/test_exact.py checks it on
  real patches for both shipped models, so an algorithm that broke exactness (e.g. Winograd or reduced
  precision) would be caught there. No TF setting had to be changed.
- ``"float_relu"``: the same architecture and weights with a plain ReLU: the conventional non-spiking
  network a user would otherwise run (the benchmark's reference).
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np

from models.card import Layer, ModelCard
from models.network import layer_shapes
from models.package import ModelPackage
from models.whetstone import PopulationDecoder, SpikingActivation, Thermometer, fold_batchnorm

Mode = Literal["spiking", "float_relu"]


def build_trainable(card: ModelCard) -> tuple[keras.Model, list[SpikingActivation]]:
    """The Whetstone training network for ``card`` (on raw pixels) and its activations, input first.

    The spatial size is left open: a fully convolutional net can train on windows smaller than the card's
    patch (where a spatial split leaves little room) and be evaluated on full patches."""
    pixels = keras.Input((None, None, len(card.bands)), name="pixels")
    x = Thermometer.from_encoding(card.encoding)(pixels)
    activations: list[SpikingActivation] = []
    for layer in card.layers:
        if layer.has_weights:
            x = _weighted(layer, use_bias=False)(x)
            x = keras.layers.BatchNormalization(name=f"{layer.name}_bn")(x)
            act = SpikingActivation(name=f"{layer.name}_act")
            activations.append(act)
            x = act(x)
        else:
            x = _structural(layer)(x)
    pc = card.population_code
    logits = PopulationDecoder(pc.owner, len(card.classes), pc.beta, name="decode")(x)
    return keras.Model(pixels, logits, name=f"{card.name}_train"), activations


def export_weights(model: keras.Model, card: ModelCard) -> dict[str, np.ndarray]:
    """Float weights with batch norm folded in: ``{"<layer>.w": kernel, "<layer>.b": bias}``."""
    out: dict[str, np.ndarray] = {}
    for layer in card.layers:
        if not layer.has_weights:
            continue
        kernel = np.asarray(model.get_layer(layer.name).kernel)
        w, b = fold_batchnorm(kernel, None, model.get_layer(f"{layer.name}_bn"))
        out[f"{layer.name}.w"], out[f"{layer.name}.b"] = w, b
    return out


def build_reference(package: ModelPackage, mode: Mode = "spiking") -> keras.Model:
    """The exported network on encoded spikes [N, P, P, bands*levels]; outputs = every layer's output."""
    if mode not in ("spiking", "float_relu"):
        raise ValueError(f"unknown reference mode {mode!r}")
    card = package.card
    spikes = keras.Input((card.patch_size, card.patch_size, card.input_channels), name="spikes")
    x, outputs = spikes, []
    for ls in layer_shapes(card):
        layer = ls.layer
        if layer.has_weights:
            weighted = _weighted(layer, use_bias=True)
            x = weighted(x)
            weighted.set_weights(list(package.float_weights(layer.name)))
            x = SpikingActivation(1.0, name=f"{layer.name}_spike")(x) if mode == "spiking" else \
                keras.layers.ReLU(name=f"{layer.name}_relu")(x)
        else:
            x = _structural(layer)(x)
        outputs.append(x)
    return keras.Model(spikes, outputs, name=f"{card.name}_{mode}")


def _weighted(layer: Layer, use_bias: bool) -> keras.layers.Layer:
    if layer.kind == "conv2d":
        return keras.layers.Conv2D(int(layer.filters or 0), layer.kernel, strides=layer.stride,
                                   padding=layer.padding, use_bias=use_bias, name=layer.name)
    return keras.layers.Dense(int(layer.units or 0), use_bias=use_bias, name=layer.name)


def _structural(layer: Layer) -> keras.layers.Layer:
    if layer.kind == "maxpool":
        # Max of binary spikes is their OR: the output stays binary, so the next layer still gets spikes.
        return keras.layers.MaxPooling2D(layer.kernel, strides=layer.stride, padding=layer.padding,
                                         name=layer.name)
    if layer.kind == "flatten":
        return keras.layers.Flatten(name=layer.name)
    raise ValueError(f"layer {layer.name}: no structural builder for kind {layer.kind!r}")
