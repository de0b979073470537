"""The emulator's int8 path end to end: pixels -> uint8 spikes -> int8 graph -> class counts and scores.

Patches go through in batches of ``BATCH``: each batch is encoded into one reused buffer and run at once, so
the encoded spikes are still in cache when the first layer reads them, and the graph's working set stays
cache-sized (measured: 64 fastest of 16-1024). Per-layer spike counts come from the graph's outputs.

``threads`` are onnxruntime's intra-op threads. Running whole batches in parallel instead (each on one
onnxruntime thread, encoder and decoder included) measured slower at 2 threads: 0.6-0.85x of intra-op.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from models import int8_codec
from models.card import ModelCard
from models.int8 import Int8Network
from models.network import LayerShape, output_grid

BATCH = 64


@dataclass
class Int8Output:
    scores: np.ndarray  # float32 [N, cy, cx, classes]
    counts: np.ndarray  # int32 [N, cy, cx, classes]
    output_spikes: np.ndarray  # uint8 0/1 [N, cy, cx, output neurons]
    spikes_per_layer: np.ndarray  # int64 [N, 1 + layers]
    layer_spikes: list[np.ndarray] | None  # every layer's 0/1 spikes in the card's shapes, when asked for


class Int8Runner:
    def __init__(
        self,
        card: ModelCard,
        shapes: list[LayerShape],
        params: dict[str, tuple[np.ndarray, np.ndarray]],
        threads: int = 1,
        engine: str = "auto",
    ) -> None:
        """Raises ``models.int8.Unsupported`` when the network cannot run exactly on the int8 path."""
        self.card, self.shapes = card, shapes
        self.net = Int8Network(shapes, params, threads, engine=engine, batch=BATCH)
        self.encoder = int8_codec.Thermometer(np.asarray(card.encoding.thresholds, dtype=np.float32))
        self.grid = output_grid(card)
        self.owner = np.asarray(card.population_code.owner, dtype=np.int64)
        from models.emulator import softmax  # the reference scores (imported late: emulator imports us)

        beta = card.population_code.beta
        self.decoder = int8_codec.Decoder(self.owner, len(card.classes), lambda c: softmax(c, beta))
        self._node = {node.shape.layer.name: i for i, node in enumerate(self.net.layers)}
        self.batch = BATCH  # patches per graph call (the benchmark tries others)
        self._local = threading.local()  # per calling thread: its encoder buffer

    def run_pixels(self, pixels: np.ndarray, valid: np.ndarray, keep_layers: bool) -> Int8Output:
        """pixels float32 [N, H, W, B] and valid bool [N, H, W], both C-contiguous."""

        def encoded(lo: int, hi: int, inputs: np.ndarray) -> np.ndarray:
            x = self._buffer(hi - lo)
            self.encoder(pixels[lo:hi], valid[lo:hi], x, inputs)
            return x

        return self._run(len(pixels), encoded, keep_layers)

    def run_spikes(self, spikes: np.ndarray, keep_layers: bool) -> Int8Output:
        """spikes uint8 0/1 [N, H, W, bands * levels], C-contiguous."""

        def given(lo: int, hi: int, inputs: np.ndarray) -> np.ndarray:
            int8_codec.fired_per_patch(spikes[lo:hi].reshape(hi - lo, -1), inputs)
            return spikes[lo:hi]

        return self._run(len(spikes), given, keep_layers)

    def network(self, spikes: np.ndarray) -> list[np.ndarray]:
        """The layers alone (the last one's raw 0/255 outputs per batch), batched as ``run_spikes`` batches
        and on the same threads: what the benchmark times against the float network."""
        return [
            self.net.run(spikes[lo : lo + self.batch], last_only=True)[0]
            for lo in range(0, len(spikes), self.batch)
        ]

    def _buffer(self, n: int) -> np.ndarray:
        """This thread's encoder output, reused batch after batch (fresh memory would cost page faults)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < n:
            buffer = self._local.buffer = np.empty((max(n, self.batch), *self.shapes[0].in_shape), np.uint8)
        return buffer[:n]  # type: ignore[no-any-return]

    def profile(self, pixels: np.ndarray, valid: np.ndarray) -> dict[str, float]:
        """Seconds per stage of one batched run: encoding, each graph node (onnxruntime's own profiler, in a
        separate session), then spike counting and decoding."""
        n = len(pixels)
        x = np.empty((n, *self.shapes[0].in_shape), np.uint8)
        per_layer = np.zeros((n, 1 + len(self.shapes)), np.int64)
        self.run_pixels(pixels[:1], valid[:1], keep_layers=False)  # compiled kernels loaded before timing
        t0 = time.perf_counter()
        for lo in range(0, n, self.batch):
            self.encoder(
                pixels[lo : lo + self.batch],
                valid[lo : lo + self.batch],
                x[lo : lo + self.batch],
                per_layer[lo : lo + self.batch, 0],
            )
        times = {"encode (thermometer to uint8)": time.perf_counter() - t0}
        times.update(self.net.profile([x[lo : lo + self.batch] for lo in range(0, n, self.batch)]))
        outs = [self.net.run(x[lo : lo + self.batch]) for lo in range(0, n, self.batch)]
        cy, cx = self.grid
        counts = np.empty((self.batch * cy * cx, len(self.card.classes)), np.int32)
        scores = np.empty(counts.shape, np.float32)
        spikes = np.empty((self.batch * cy * cx, len(self.owner)), np.uint8)
        t0 = time.perf_counter()
        for lo, out in zip(range(0, n, self.batch), outs, strict=True):
            self._count(x[lo : lo + self.batch], out, per_layer[lo : lo + self.batch], None)
            last = out[-1].reshape(-1, out[-1].shape[-1])
            rows = slice(0, len(last))
            self.decoder(last, counts[rows], scores[rows], spikes[rows])
        times["spike counts and decode (table)"] = time.perf_counter() - t0
        return times

    def _run(self, n: int, inputs_of, keep_layers: bool) -> Int8Output:  # type: ignore[no-untyped-def]
        cy, cx = self.grid
        cells, n_out, n_classes = cy * cx, len(self.owner), len(self.card.classes)
        per_layer = np.zeros((n, 1 + len(self.shapes)), np.int64)
        counts = np.empty((n * cells, n_classes), np.int32)
        scores = np.empty((n * cells, n_classes), np.float32)
        spikes = np.empty((n * cells, n_out), np.uint8)

        def batch(lo: int) -> list[list[np.ndarray]] | None:
            """One batch, start to end, into its own rows of the outputs."""
            hi = min(lo + self.batch, n)
            x = inputs_of(lo, hi, per_layer[lo:hi, 0])
            outs = self.net.run(x)
            kept: list[list[np.ndarray]] | None = [[] for _ in self.shapes] if keep_layers else None
            self._count(x, outs, per_layer[lo:hi], kept)
            rows = slice(lo * cells, hi * cells)
            self.decoder(outs[-1].reshape((hi - lo) * cells, -1), counts[rows], scores[rows], spikes[rows])
            return kept

        done = [batch(lo) for lo in range(0, n, self.batch)]
        layers = None
        if keep_layers:
            empty = [np.zeros((0, *ls.out_shape), np.uint8) for ls in self.shapes]
            layers = [np.concatenate([e, *(k[j][0] for k in done if k)]) for j, e in enumerate(empty)]
        return Int8Output(
            scores=scores.reshape(n, cy, cx, n_classes),
            counts=counts.reshape(n, cy, cx, n_classes),
            output_spikes=spikes.reshape(n, cy, cx, n_out),
            spikes_per_layer=per_layer,
            layer_spikes=layers,
        )

    def _count(
        self,
        x: np.ndarray,
        outs: list[np.ndarray],
        per_layer: np.ndarray,
        kept: list[list[np.ndarray]] | None,
    ) -> None:
        """Spikes per patch of every layer (flatten adds none: its neurons are the previous layer's), and
        each layer's spikes as 0/1 in the card's shape when ``kept`` collects them. ``x`` is the batch's
        input spikes: what a flatten in first place renames."""
        for j, ls in enumerate(self.shapes):
            if ls.layer.kind == "flatten":
                if kept is not None:
                    # A copy: the pixel path's input is a buffer the next batch overwrites.
                    before = kept[j - 1][-1] if j > 0 else x.copy()
                    kept[j].append(before.reshape(len(per_layer), -1))
                continue
            y = outs[self._node[ls.layer.name]]
            int8_codec.fired_per_patch(y.reshape(len(y), -1), per_layer[:, 1 + j])
            if kept is not None:
                fired = (y[..., : ls.out_shape[-1]] != 0).view(np.uint8)
                kept[j].append(fired.reshape(len(y), *ls.out_shape))
