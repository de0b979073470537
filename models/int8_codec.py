"""The int8 path's two ends (numba): pixels -> uint8 spikes, and output spikes -> class counts and scores.

The encoder writes the thermometer code straight into the uint8 tensor the first layer reads (no boolean
5-d intermediate, no cast) and counts each patch's input spikes on the way; it runs a batch at a time, so
its output is still in cache when the first layer reads it. The decoder turns the last layer's 0/255 outputs
into class counts and scores by table (see ``Decoder``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

MAX_KEYS = 1 << 16  # rows of the decoder's table (see Decoder): up to ~2 MB, mostly far fewer
BLOCK = 16  # pixels per encoder block: their bands x levels comparisons run as one vector loop


class Thermometer:
    """The card's thermometer code, written straight into uint8 [N, H, W, bands * levels].

    Per block of 16 pixels the encoder compares every (pixel, band) value with each level's threshold in
    one vectorisable loop (counting the levels reached: the code is a prefix of ones), then stores the
    count's precomputed byte pattern as one machine word (a uint64 for 8 levels). Measured 3-5x faster than
    a per-byte loop and ~10x faster than ``encoding.encode``'s numpy broadcast."""

    def __init__(self, thresholds: np.ndarray) -> None:
        bands, levels = thresholds.shape
        # tiles[k, j]: level k's threshold for the j-th value of a block (band j % bands).
        self.tiles = np.ascontiguousarray(np.tile(thresholds.T.astype(np.float32), (1, BLOCK)))
        patterns = (np.arange(levels)[None, :] < np.arange(levels + 1)[:, None]).astype(np.uint8)
        # One word per (pixel, band) when the levels fill 1, 2, 4 or 8 bytes; else byte by byte.
        word = levels if levels in (1, 2, 4, 8) else 1
        self.patterns = np.ascontiguousarray(patterns.view(f"<u{word}"))  # [levels + 1, levels // word]

    def __call__(self, pixels: np.ndarray, valid: np.ndarray, out: np.ndarray, counts: np.ndarray) -> None:
        """pixels float32 [n, H, W, B], valid bool [n, H, W] -> out uint8 [n, H, W, B * L] (channel b*L + k
        fires iff valid and pixel >= threshold[b, k]; NaN fires nothing, as in ``encode``), counts int64 [n]
        (input spikes per patch). All C-contiguous but ``counts``."""
        n = pixels.shape[0]
        flat_pixels, flat_valid = (
            pixels.reshape(n, pixels[0].size if n else 0),
            valid.reshape(n, valid[0].size if n else 0),
        )
        words = out.reshape(n, out[0].size if n else 0).view(self.patterns.dtype)
        if self.patterns.shape[1] == 1:
            _thermometer_words(flat_pixels, flat_valid, self.tiles, self.patterns[:, 0], words, counts)
        else:
            _thermometer_bytes(flat_pixels, flat_valid, self.tiles, self.patterns, words, counts)


@njit(cache=True, nogil=True, inline="always")
def _levels_reached(
    pixels: np.ndarray, i: int, j0: int, size: int, tiles: np.ndarray, reached: np.ndarray
) -> None:
    # Level-major so the inner loop runs over contiguous values: it vectorises (pixel-major did not).
    reached[:] = 0
    for k in range(tiles.shape[0]):
        for j in range(size):
            reached[j] += pixels[i, j0 + j] >= tiles[k, j]


@njit(cache=True, nogil=True)
def _thermometer_words(
    pixels: np.ndarray,
    valid: np.ndarray,
    tiles: np.ndarray,
    patterns: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:
    """pixels [n, P*B], valid [n, P], tiles [L, B*BLOCK], patterns [L+1] words -> out [n, P*B] words."""
    n, per = valid.shape
    bands = tiles.shape[1] // BLOCK
    levels = tiles.shape[0]
    # q levels reached is the all-levels word shifted right by the levels not reached: computed, not looked
    # up, so the store loop vectorises (a table lookup is a gather: measured 1.8x slower on trees-rgb).
    full = np.uint64(patterns[levels])
    reached = np.empty(tiles.shape[1], np.int64)
    for i in range(n):
        total = 0
        # A block index, not range(0, per, BLOCK): numba's stepped range kept LLVM from vectorising (4x).
        for blk in range(-(-per // BLOCK)):
            p0 = blk * BLOCK
            count = min(BLOCK, per - p0)
            j0 = p0 * bands
            size = count * bands
            reached[:size] = 0
            for k in range(levels):
                for j in range(size):
                    reached[j] += pixels[i, j0 + j] >= tiles[k, j]
            for p in range(count):
                if not valid[i, p0 + p]:
                    reached[p * bands : (p + 1) * bands] = 0
            for j in range(size):
                q = reached[j]
                total += q
                # np.uint64(0), not 0: numba unifies uint64 with int64 as float64, which loses the low bytes.
                out[i, j0 + j] = (full >> np.uint64(8 * (levels - q))) if q > 0 else np.uint64(0)
        counts[i] = total


@njit(cache=True, nogil=True)
def _thermometer_bytes(
    pixels: np.ndarray,
    valid: np.ndarray,
    tiles: np.ndarray,
    patterns: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:
    """As ``_thermometer_words`` for any number of levels: patterns [L+1, L] bytes, out [n, P*B*L]."""
    n, per = valid.shape
    bands = tiles.shape[1] // BLOCK
    levels = patterns.shape[1]
    reached = np.empty(tiles.shape[1], np.uint8)
    for i in range(n):
        total = 0
        for blk in range(-(-per // BLOCK)):
            p0 = blk * BLOCK
            count = min(BLOCK, per - p0)
            j0 = p0 * bands
            _levels_reached(pixels, i, j0, count * bands, tiles, reached)
            for p in range(count):
                ok = valid[i, p0 + p]
                for b in range(bands):
                    q = reached[p * bands + b] if ok else 0
                    total += q
                    at = (j0 + p * bands + b) * levels
                    for k in range(levels):
                        out[i, at + k] = patterns[q, k]
        counts[i] = total


@njit(cache=True, nogil=True)
def fired_per_patch(x: np.ndarray, out: np.ndarray) -> None:
    """x uint8 [N, M] of 0 / nonzero spikes -> out int64 [N], nonzero entries per row."""
    for i in range(x.shape[0]):
        total = 0
        for j in range(x.shape[1]):
            total += x[i, j] != 0
        out[i] = total


class Decoder:
    """The last layer's 0/255 outputs -> 0/1 output spikes, class counts and class scores.

    The class counts of a cell are small integers (at most the neurons each class owns), so every possible
    tuple of them has a number (mixed radix: ``key = sum of count_c * radix_c``) and a table row holding its
    counts and scores. Decoding a cell is then one dot product over its output neurons and a row copy, no
    ``exp``. The scores row is ``softmax`` of that counts row, computed by ``softmax`` itself, so the numbers
    are the ones it gives. Past ``MAX_KEYS`` tuples the table would not stay in cache: the counts are
    summed per class and ``softmax`` runs on them directly.
    """

    def __init__(
        self, owner: np.ndarray, n_classes: int, softmax: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        self.owner = np.asarray(owner, dtype=np.int64)
        self.n_classes = n_classes
        self.softmax = softmax
        radix = np.bincount(self.owner, minlength=n_classes) + 1
        self.keyed = int(np.prod(radix.astype(np.float64))) <= MAX_KEYS and radix.max() <= 256
        if self.keyed:
            place = np.concatenate([[1], np.cumprod(radix)[:-1]]).astype(np.int64)
            keys = np.arange(int(np.prod(radix)))
            counts = (keys[:, None] // place[None, :]) % radix[None, :]
            self.scores = np.ascontiguousarray(softmax(counts.astype(np.int32)), dtype=np.float32)
            self.counts = counts.astype(np.uint8)  # a quarter of int32's cache footprint
            self.weight = place[self.owner]  # what one spike of each output neuron adds to the key

    def __call__(self, last: np.ndarray, counts: np.ndarray, scores: np.ndarray, spikes: np.ndarray) -> None:
        """last uint8 [cells, F_padded] -> counts int32 [cells, C], scores float32 [cells, C], spikes uint8
        [cells, F] (0/1)."""
        if self.keyed:
            _decode_keyed(last, self.weight, self.counts, self.scores, counts, scores, spikes)
        else:
            _decode_counts(last, self.owner, counts, spikes)
            scores[:] = self.softmax(counts)


@njit(cache=True, nogil=True)
def _decode_keyed(
    last: np.ndarray,
    weight: np.ndarray,
    count_rows: np.ndarray,
    score_rows: np.ndarray,
    counts: np.ndarray,
    scores: np.ndarray,
    spikes: np.ndarray,
) -> None:
    n_out, n_classes = weight.shape[0], counts.shape[1]
    for i in range(last.shape[0]):
        key = 0
        for o in range(n_out):
            fired = last[i, o] != 0
            spikes[i, o] = fired
            key += fired * weight[o]
        for c in range(n_classes):
            counts[i, c] = count_rows[key, c]
            scores[i, c] = score_rows[key, c]


@njit(cache=True, nogil=True)
def _decode_counts(last: np.ndarray, owner: np.ndarray, counts: np.ndarray, spikes: np.ndarray) -> None:
    for i in range(last.shape[0]):
        for c in range(counts.shape[1]):
            counts[i, c] = 0
        for o in range(owner.shape[0]):
            fired = last[i, o] != 0
            spikes[i, o] = fired
            counts[i, owner[o]] += fired
