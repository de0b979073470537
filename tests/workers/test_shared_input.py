"""Shared overlapping input (issue 14 item 2): blocks of neighbouring copies share one input population.

Each copy must see exactly its own patch, with the weights it has without sharing, and a batch in block order
must send each pixel-band's spike once per block. The virtual board runs nothing, so spikes are checked on
NEST running the same shared build; the slow test has sPyNNaker build and inject it on a virtual board.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from models.emulator import Emulator
from models.pynn_net import CLOCK, describe, input_spikes
from tests.models.test_pynn_net import CONV, _package  # noqa: I001
from workers.backends.pynn_build import SHARED_INPUT, build
from workers.spinnaker.shared_input import block_for, pack


def _scene_squares(patch: int, squares: int, seed: int) -> np.ndarray:
    """``squares`` 2 x 2 squares of neighbouring chips (half-patch stride) cut from random scenes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(squares):
        scene = rng.uniform(0, 220, (patch + patch // 2, patch + patch // 2, 2)).astype(np.float32)
        for dy, dx in ((0, 0), (0, patch // 2), (patch // 2, 0), (patch // 2, patch // 2)):
            out.append(scene[dy : dy + patch, dx : dx + patch])
    return np.stack(out)


class _Recorder:
    """A stand-in simulator: populations are labels, ``connect`` records every table."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, str, str, np.ndarray]] = []

    def sim(self) -> ModuleType:
        module = ModuleType("recorder")

        class Pop:
            def __init__(self, size: int, model: Any, label: str = "", **_: Any) -> None:
                self.size, self.label = size, label

            def record(self, *_: Any) -> None:
                pass

        module.Population = Pop  # type: ignore[attr-defined]
        module.SpikeSourceArray = lambda **_: None  # type: ignore[attr-defined]
        module.IF_curr_delta = lambda **_: None  # type: ignore[attr-defined]
        return module

    def connect(self, sim: ModuleType, pre: Any, post: Any, table: np.ndarray, receptor: str) -> str:
        self.tables.append((pre.label, post.label, receptor, table.copy()))
        return f"{pre.label}->{post.label}"


def _synapses(rec: _Recorder, copy: int, block: Any = None) -> dict[tuple[str, str, str], set[tuple]]:
    """Copy ``copy``'s synapses per (pre population kind, post, receptor); input pre-indices as indices into
    the copy's own patch (mapped back from its block window when shared)."""
    out: dict[tuple[str, str, str], set[tuple]] = {}
    back = None
    if block is not None:
        own = np.arange(int(np.prod(block.patch)))
        back = dict(zip(block.remap(own, copy % block.copies).tolist(), own.tolist(), strict=True))
    for pre, post, receptor, table in rec.tables:
        if not post.endswith(f"#{copy}"):
            continue
        if pre.startswith(SHARED_INPUT):
            assert pre == f"{SHARED_INPUT}#{copy // block.copies}"
            rows = {(back[int(a)], int(b), float(w)) for a, b, w, _ in table}
            kind = "input"
        else:
            rows = {(int(a), int(b), float(w)) for a, b, w, _ in table}
            kind = "input" if pre.startswith("input.") else pre.split("#")[0]
        out.setdefault((kind, post.split("#")[0], receptor), set()).update(rows)
    return out


def test_shared_build_gives_each_copy_its_unshared_synapses() -> None:
    """Every copy's projections in the shared build, read back through its window, are exactly its
    projections in the unshared build: same pre-neurons of its own patch, same posts, same weights."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    block = block_for(net, 10, 2)
    plain, shared = _Recorder(), _Recorder()
    build(plain.sim(), net, 6, negative_inhibitory=False, connect=plain.connect)
    build(shared.sim(), net, 6, negative_inhibitory=False, connect=shared.connect, shared_block=block)
    assert len({pre for pre, *_ in shared.tables if pre.startswith(SHARED_INPUT)}) == 2  # 4 + 2 copies
    for k in range(6):
        want, got = _synapses(plain, k), _synapses(shared, k, block)
        assert got == want, k
        assert got[("input", "c1", "excitatory")]  # the first layer is there at all


def test_pack_sends_each_pixel_once_and_gives_each_copy_its_patch() -> None:
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    block = block_for(net, 10, 2)
    pixels = _scene_squares(10, 3, 1)
    spikes = input_spikes(net, pixels, pkg.card.encoding, np.ones(pixels.shape[:3], bool))
    packing = pack(block, 4, spikes)
    assert packing.slots == 3 and len(packing.frames) == 3  # one time slot per square
    for b, slot, neurons in packing.frames:
        frame = np.zeros(block.size, np.uint8)
        frame[neurons] = 1
        for k in range(4):  # each copy's window of the frame is exactly its patch's spikes
            i = packing.placement[b * 4 + k, slot]
            np.testing.assert_array_equal(frame[block.remap(np.arange(spikes.shape[1]), k)], spikes[i])
        # each pixel-band once: the block's distinct spiking neurons, not the four patches' sum
        assert len(neurons) == len(set(neurons.tolist()))
    assert packing.spikes_sent < spikes.sum()
    assert packing.spikes_sent == sum(len(n) for _, _, n in packing.frames)


def test_pack_is_exact_for_patches_that_are_not_neighbours() -> None:
    """Patches whose overlaps disagree each get a slot of their own, so every copy still sees its patch."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    block = block_for(net, 10, 2)
    rng = np.random.default_rng(2)
    pixels = rng.uniform(0, 220, (9, 10, 10, 2)).astype(np.float32)
    spikes = input_spikes(net, pixels, pkg.card.encoding, np.ones(pixels.shape[:3], bool))
    packing = pack(block, 5, spikes)  # one full block and one of a single copy
    assert sorted(packing.placement[packing.placement >= 0].tolist()) == list(range(9))
    for b, slot, neurons in packing.frames:
        frame = np.zeros(block.size, np.uint8)
        frame[neurons] = 1
        for k in range(min(4, 5 - 4 * b)):
            i = packing.placement[b * 4 + k, slot]
            if i >= 0:
                np.testing.assert_array_equal(frame[block.remap(np.arange(spikes.shape[1]), k)], spikes[i])
    assert packing.spikes_sent == spikes.sum()  # nothing shared


def nest_equals_emulator(pkg: Any, pixels: np.ndarray, valid: np.ndarray, **layout: int) -> Any:
    """Run ``pixels`` through a NEST backend built with ``layout`` (copies, shared_side or strip_copies):
    every layer's spikes (layer_spikes) and the class scores (infer, a second batch on the same build) must
    equal the emulator's. Returns the build (``TiledNetwork``) for layout checks."""
    from workers.backends.nest import NestBackend

    emulated = Emulator(pkg).run(pixels, valid, keep_layers=True)
    backend = NestBackend(pkg, **layout)
    try:
        simulated = backend.layer_spikes(pixels, valid)
        again = backend.infer(pixels, valid)
    finally:
        backend.close()
    names = [p.name for p in backend.net.populations if not p.is_source]
    for name, spikes in zip(names, emulated.layer_spikes or [], strict=True):
        np.testing.assert_array_equal(simulated[name], spikes.reshape(len(pixels), -1), err_msg=name)
    np.testing.assert_allclose(again.scores, emulated.scores, rtol=1e-6)
    return backend.tiled


def _check_windows(block: Any, copies: int, spikes: np.ndarray, packing: Any) -> None:
    """Every copy's window of every frame is exactly the spikes of the patch it computes in that slot."""
    for b, slot, neurons in packing.frames:
        frame = np.zeros(block.size, np.uint8)
        frame[neurons] = 1
        for k in range(min(block.copies, copies - block.copies * b)):
            i = packing.placement[b * block.copies + k, slot]
            if i >= 0:
                np.testing.assert_array_equal(frame[block.remap(np.arange(spikes.shape[1]), k)], spikes[i])
    assert sorted(packing.placement[packing.placement >= 0].tolist()) == list(range(len(spikes)))


def test_pack_finds_squares_in_a_chip_grids_row_order() -> None:
    """Chips as the pipeline batches them (chip rows, left to right, then shuffled too): squares of
    neighbouring chips are found by content and share a slot; the rest still compute exactly."""
    pkg = _package(CONV, 10, 2, 0)
    net = describe(pkg)
    block = block_for(net, 10, 2)
    scene = np.random.default_rng(6).uniform(0, 220, (10 + 2 * 5, 10 + 4 * 5, 2)).astype(np.float32)
    pixels = np.stack([scene[r * 5 : r * 5 + 10, c * 5 : c * 5 + 10] for r in range(3) for c in range(5)])
    spikes = input_spikes(net, pixels, pkg.card.encoding, np.ones(pixels.shape[:3], bool))
    for order in (np.arange(15), np.random.default_rng(1).permutation(15)):
        packing = pack(block, 4, spikes[order])
        _check_windows(block, 4, spikes[order], packing)
        assert packing.slots <= 15 - 3 * 2  # at least two squares of four shared a slot
        assert packing.spikes_sent < spikes.sum()


@pytest.mark.parametrize("copies", [4, 5])
def test_nest_runs_the_shared_layout_exactly(copies: int) -> None:
    """NEST on the shared build (a block of 4 copies, and a second block of one): every layer's spikes and
    the class scores equal the emulator's, for squares of neighbouring chips and for unrelated patches."""
    pkg = _package(CONV, 10, 2, seed=3)
    squares = _scene_squares(10, 5, 4)
    loose = np.random.default_rng(5).uniform(0, 220, (6, 10, 10, 2)).astype(np.float32)
    pixels = np.concatenate([squares, loose])
    valid = np.ones(pixels.shape[:3], dtype=bool)
    valid[-2, :4] = False  # invalid pixels fire nothing
    tiled = nest_equals_emulator(pkg, pixels, valid, copies=copies, shared_side=2)
    assert tiled.shared_block is not None and CLOCK in tiled.populations


@pytest.mark.parametrize("model", ["landcover-landsat", "trees-rgb"])
def test_real_neighbouring_chips_share_one_slot_per_square(model: str) -> None:
    """Squares of neighbouring chips of each shipped model's held-out scene, in block order, pack into one
    time slot per square: their overlaps agree, so each pixel-band's spike is sent once per block."""
    from models import package
    from workers.samples import block_patches, default_scene

    pkg = package.load(model)
    net = describe(pkg)
    pixels, valid = block_patches(pkg, default_scene(pkg), 8)
    spikes = input_spikes(net, pixels, pkg.card.encoding, valid)
    packing = pack(block_for(net, pkg.card.patch_size, 2), 4, spikes)
    assert packing.slots == 8 and (packing.placement >= 0).all()
    assert packing.spikes_sent < 0.7 * spikes.sum()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nest_shared_layout_on_real_neighbouring_patches() -> None:
    """landcover-landsat on squares of neighbouring chips of its held-out scene, in block order: NEST on the
    shared layout gives the emulator's spikes on every layer and its class scores (~40 s, most of it
    building 4 copies in NEST)."""
    from models import package
    from workers.samples import block_patches, default_scene

    pkg = package.load("landcover-landsat")
    pixels, valid = block_patches(pkg, default_scene(pkg), 6)
    tiled = nest_equals_emulator(pkg, pixels, valid, copies=4, shared_side=2)
    assert tiled.placement.shape[1] == 6  # every square shared one time slot
