"""Shapes of the spiking network, derived once from the card and shared by every backend.

Padding follows TensorFlow's ``same`` rule exactly (extra padding goes after), because the Keras model is
the reference the emulator must match spike for spike.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.card import Layer, ModelCard


@dataclass(frozen=True)
class LayerShape:
    layer: Layer
    in_shape: tuple[int, ...]  # (H, W, C) or (F,)
    out_shape: tuple[int, ...]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right

    @property
    def neurons(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def layer_shapes(card: ModelCard) -> list[LayerShape]:
    shape: tuple[int, ...] = (card.patch_size, card.patch_size, card.input_channels)
    shapes: list[LayerShape] = []
    for layer in card.layers:
        pad = (0, 0, 0, 0)
        if layer.kind in ("conv2d", "maxpool"):
            h, w, c = shape
            k, s = layer.kernel, layer.stride
            if layer.padding == "same":
                ho, top, bottom = same_padding(h, k, s)
                wo, left, right = same_padding(w, k, s)
                pad = (top, bottom, left, right)
            else:
                ho, wo = (h - k) // s + 1, (w - k) // s + 1
            if ho < 1 or wo < 1:
                raise ValueError(f"layer {layer.name} leaves no output cells")
            out: tuple[int, ...] = (ho, wo, layer.filters if layer.kind == "conv2d" else c)  # type: ignore[assignment]
        elif layer.kind == "flatten":
            out = (int(shape[0]) * int(shape[1]) * int(shape[2]),) if len(shape) == 3 else shape
        else:  # dense
            if len(shape) != 1:
                raise ValueError(f"dense layer {layer.name} needs a flatten before it")
            out = (int(layer.units or 0),)
        shapes.append(LayerShape(layer, shape, out, pad))
        shape = out
    return shapes


def weight_shape(ls: LayerShape) -> tuple[int, ...]:
    layer = ls.layer
    if layer.kind == "conv2d":
        return (layer.kernel, layer.kernel, ls.in_shape[2], int(layer.filters or 0))
    if layer.kind == "dense":
        return (ls.in_shape[0], int(layer.units or 0))
    return ()


def output_grid(card: ModelCard) -> tuple[int, int]:
    """(cells_y, cells_x) of one chip's output, checked against the card's output stride."""
    last = layer_shapes(card)[-1].out_shape
    n_out = len(card.population_code.owner)
    if len(last) == 1:
        if last[0] != n_out or card.output_stride != card.patch_size:
            raise ValueError("a dense output must have one cell per chip (output_stride = patch_size)")
        return 1, 1
    if last[2] != n_out:
        raise ValueError("last layer must have one neuron per population-code entry")
    if last[0] != card.output_cells or last[1] != card.output_cells:
        raise ValueError(f"network output {last[:2]} does not match patch_size / output_stride")
    return last[0], last[1]


def count_synapses(card: ModelCard) -> int:
    """Synapses of one copy, counting only connections that exist (padding has none)."""
    total = 0
    for ls in layer_shapes(card):
        layer = ls.layer
        if layer.kind == "dense":
            total += ls.in_shape[0] * ls.out_shape[0]
        elif layer.kind in ("conv2d", "maxpool"):
            taps = _valid_taps(ls.in_shape[0], ls.out_shape[0], layer.kernel, layer.stride, ls.pad[0])
            taps *= _valid_taps(ls.in_shape[1], ls.out_shape[1], layer.kernel, layer.stride, ls.pad[2])
            fan = ls.in_shape[2] * ls.out_shape[2] if layer.kind == "conv2d" else ls.out_shape[2]
            total += taps * fan
    return total


def _valid_taps(size: int, out: int, kernel: int, stride: int, before: int) -> int:
    return sum(1 for o in range(out) for k in range(kernel) if 0 <= o * stride - before + k < size)
