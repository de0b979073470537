"""Input shared across blocks (issue 14 item 1): strips of copies sweep the scene, each pixel sent once.

Each copy must compute exactly its own patch from bands that arrived in earlier steps (synaptic delays), with
the synapses it has without sharing; a batch of neighbouring chips in strip order must send each pixel-band's
spike once (plus one warm-up band per sweep). Spikes are checked on NEST running the strip build.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.card import Layer
from models.pynn_net import describe, input_spikes
from tests.models.test_pynn_net import CONV, _package  # noqa: I001
from tests.workers.test_shared_input import _Recorder, _synapses, nest_equals_emulator
from workers.backends.pynn_build import STRIP_INPUT, build
from workers.spinnaker.strip_input import output_share, share_of_patch, strip_for, sweep


def _strip_order(scene: np.ndarray, patch: int, rows: int, cols: int) -> np.ndarray:
    """Chips of a scene at the half-patch stride, handed over column by column, rows top to bottom."""
    s = patch // 2
    return np.stack(
        [scene[r * s : r * s + patch, c * s : c * s + patch] for c in range(cols) for r in range(rows)]
    )


def _scene(rows: int, cols: int, patch: int, seed: int) -> np.ndarray:
    s = patch // 2
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 220, (patch + (rows - 1) * s, patch + (cols - 1) * s, 2)).astype(np.float32)


def _dense(strip: Any, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Each slot's band as 0/1 over the strip's neurons."""
    out = []
    for neurons in frames:
        frame = np.zeros(strip.size, np.uint8)
        frame[neurons] = 1
        out.append(frame)
    return out


def _check_windows(strip: Any, spikes: np.ndarray, swept: Any) -> None:
    """Every copy computing in a slot sees exactly its patch in the bands sent so far; every patch is
    computed once."""
    dense = _dense(strip, swept.frames)
    for slot in range(strip.bands - 1, swept.slots):
        for k in range(strip.copies):
            i = swept.placement[k, slot]
            if i >= 0:
                window = strip.window(dense[slot - strip.bands + 1 : slot + 1], k)
                np.testing.assert_array_equal(window, spikes[i])
    assert sorted(swept.placement[swept.placement >= 0].tolist()) == list(range(len(spikes)))


def test_strip_build_gives_each_copy_its_unshared_synapses_with_delays() -> None:
    """Every copy's strip synapses, mapped back from (band index, delay) to its patch, are exactly its
    unshared synapses; the delays are 1 for the patch's last band and 2 for the one before."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    strip = strip_for(net, 10, 3)
    plain, shared = _Recorder(), _Recorder()
    build(plain.sim(), net, 5, negative_inhibitory=False, connect=plain.connect)
    build(shared.sim(), net, 5, negative_inhibitory=False, connect=shared.connect, strip=strip)
    # 3 + 2 copies: two strips of 3 + 1 pieces (a stride of rows each); the short one's last piece unread
    assert strip.pieces == 4
    assert len({pre for pre, *_ in shared.tables if pre.startswith(STRIP_INPUT)}) == 4 + 3
    own = np.arange(int(np.prod(strip.patch)))
    for k in range(5):
        index, delay = strip.remap(own, k % 3)
        back = dict(zip(zip(index.tolist(), delay.tolist(), strict=True), own.tolist(), strict=True))
        rec = _Recorder()
        for pre, post, receptor, table in shared.tables:
            if not post.endswith(f"#{k}"):
                continue
            if pre.startswith(STRIP_INPUT):
                b, p = (int(x) for x in pre.split("#")[1].split("."))
                assert b == k // 3 and k % 3 <= p < k % 3 + 2  # the two pieces the copy's patch covers
                table = table.copy()
                table[:, 0] += p * strip.piece_size
                table[:, 0] = [back[(int(a), int(d))] for a, d in zip(table[:, 0], table[:, 3], strict=True)]
                pre = "input.x"
            rec.tables.append((pre, post, receptor, table))
        assert _synapses(rec, k) == _synapses(plain, k), k
        delays = {
            int(d) for pre, post, _, t in shared.tables
            if post == f"c1#{k}" and pre.startswith(STRIP_INPUT) for d in t[:, 3]
        }
        assert delays == {1, 2}


def test_sweep_sends_each_band_once_and_gives_each_copy_its_patch() -> None:
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    strip = strip_for(net, 10, 3)
    pixels = _strip_order(_scene(3, 6, 10, 1), 10, 3, 6)
    spikes = input_spikes(net, pixels, pkg.card.encoding, np.ones(pixels.shape[:3], bool))
    swept = sweep(strip, spikes)
    assert swept.slots == 6 + 1  # one warm-up band, then one column of chips per slot
    dense = _dense(strip, swept.frames)
    for slot in range(1, swept.slots):
        for k in range(3):
            i = swept.placement[k, slot]
            np.testing.assert_array_equal(strip.window(dense[slot - 1 : slot + 1], k), spikes[i])
    assert sorted(swept.placement[swept.placement >= 0].tolist()) == list(range(18))
    # (6 + 1) bands of a (3 + 1)-stride-high strip: about (n + 1) / (4 n) of the patches' own spikes
    assert swept.spikes_sent < 0.5 * spikes.sum()
    assert abs(share_of_patch(strip) - 4 / 12) < 1e-9


def test_sweep_is_exact_for_patches_that_are_not_neighbours() -> None:
    """Unrelated patches: each column that does not continue starts a new sweep; each copy still sees its
    patch."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    strip = strip_for(net, 10, 2)
    pixels = np.random.default_rng(2).uniform(0, 220, (5, 10, 10, 2)).astype(np.float32)
    spikes = input_spikes(net, pixels, pkg.card.encoding, np.ones(pixels.shape[:3], bool))
    swept = sweep(strip, spikes)
    _check_windows(strip, spikes, swept)


def test_sweep_finds_columns_in_a_chip_grids_row_order() -> None:
    """Chips as the pipeline batches them (chip rows, left to right) and shuffled: columns of neighbouring
    chips are found by content, so row order sweeps like strip order (one warm-up band, one slot per
    column); any order stays exact."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    strip = strip_for(net, 10, 3)
    scene = _scene(3, 6, 10, 1)
    rows = np.stack([scene[r * 5 : r * 5 + 10, c * 5 : c * 5 + 10] for r in range(3) for c in range(6)])
    spikes = input_spikes(net, rows, pkg.card.encoding, np.ones(rows.shape[:3], bool))
    in_strip_order = sweep(strip, input_spikes(net, _strip_order(scene, 10, 3, 6), pkg.card.encoding,
                                               np.ones(rows.shape[:3], bool)))
    for order in (np.arange(18), np.random.default_rng(3).permutation(18)):
        batch = spikes[order]
        swept = sweep(strip, batch)
        _check_windows(strip, batch, swept)
        assert swept.spikes_sent < spikes.sum()
    swept = sweep(strip, spikes)
    assert swept.slots == in_strip_order.slots == 7 and swept.spikes_sent == in_strip_order.spikes_sent


# Stride-1 convolutions keep the patch's size to the output: overlapping chips compute the same cells.
SAME_SIZE = [
    Layer(name="c1", kind="conv2d", filters=5, kernel=3, stride=1, padding="same"),
    Layer(name="c2", kind="conv2d", filters=4, kernel=3, stride=1, padding="same"),
    Layer(name="out", kind="conv2d", filters=6, kernel=1),
]


def test_output_is_shared_where_overlapping_chips_compute_the_same_cells() -> None:
    """Two 3x3 layers: padding reaches 2 cells in, so a 12-cell patch records columns 0-1, its middle 6 and
    10-11 (10 of 12); the shipped land-cover model 12 of 16 columns; a network with a strided layer (its
    output is not the patch's size) or trees-rgb's pooling records everything."""
    from models import package

    net = describe(_package(SAME_SIZE, 12, 1, seed=0))
    share = output_share(net, strip_for(net, 12, 3))
    assert share is not None and share.margin == 2
    assert share.own_columns().tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 10, 11]
    assert len(share.recorded()) == 12 * 10 * 6
    land = describe(package.load("landcover-landsat"))
    land_share = output_share(land, strip_for(land, 16, 12))
    assert land_share is not None and len(land_share.own_columns()) == 12
    conv = describe(_package(CONV, 10, 2, seed=0))
    assert output_share(conv, strip_for(conv, 10, 3)) is None
    trees = package.load("trees-rgb")
    assert output_share(describe(trees), strip_for(describe(trees), trees.card.patch_size, 3)) is None


@pytest.mark.parametrize("copies", [3, 4])
@pytest.mark.parametrize("network", ["strided", "same-size"])
def test_nest_runs_the_strip_layout_exactly(copies: int, network: str) -> None:
    """NEST on the strip build (strips of 3 copies; with 4 copies a second strip of one): every layer's spikes
    and the class scores equal the emulator's, for neighbouring chips in strip order, the same chips in a
    chip grid's row order (new sweeps in mid-batch), unrelated patches after them and a patch with nodata.
    The same-size network (stride-1 layers) also shares its output: each copy records 10 of its 12 columns
    and the batch path takes the other two from the slots before and after."""
    layers, patch, stride = (CONV, 10, 2) if network == "strided" else (SAME_SIZE, 12, 1)
    pkg = _package(layers, patch, stride, seed=3)
    s = patch // 2
    scene = _scene(3, 5, patch, 4)
    rows = np.stack([scene[r * s : r * s + patch, c * s : c * s + patch] for r in range(3) for c in range(5)])
    loose = np.random.default_rng(5).uniform(0, 220, (4, patch, patch, 2)).astype(np.float32)
    pixels = np.concatenate([_strip_order(scene, patch, 3, 5), rows, loose])
    valid = np.ones(pixels.shape[:3], dtype=bool)
    valid[-2, : s - 1] = False
    tiled = nest_equals_emulator(pkg, pixels, valid, copies=copies, strip_copies=3)
    assert tiled.strip is not None
    assert (tiled.output_share is not None) == (network == "same-size")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nest_strip_layout_on_real_neighbouring_patches() -> None:
    """landcover-landsat on 8 columns of a strip of 3 chip rows of its held-out scene, in strip order (the
    top strip: its upper rows are nodata, so one piece of the strip's input stays silent): NEST on the strip
    build gives the emulator's spikes on every layer and its class scores, one time slot per column after
    one warm-up band."""
    from models import package
    from workers.samples import default_scene, strip_patches

    pkg = package.load("landcover-landsat")
    pixels, valid = strip_patches(pkg, default_scene(pkg), 3, 114)
    pixels, valid = pixels[90:114], valid[90:114]  # whole columns from the middle of the strip
    tiled = nest_equals_emulator(pkg, pixels, valid, copies=3, strip_copies=3)
    assert tiled.output_share is not None  # 12 of 16 columns recorded, the rest from neighbouring slots
    assert tiled.placement.shape[1] == 8 + 1 + 1  # every column continued the sweep; one silent slot after
