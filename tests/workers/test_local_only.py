"""Local-only convolution for large tiles (issue 14 item 5): what sPyNNaker places on a virtual board and
how the tile layout's load is counted. The plan does not adopt the layout (docs/spinnaker.md says why);
these pin the facts the comparison rests on."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_local_only_tiles_place_seven_32px_tiles_and_refuse_eight(tmp_path: Path) -> None:
    """landcover as 32 x 32 tiles: one Grid2D population per channel (40 input, 16 + 24 + 21 layers), each
    ONE core of 1,024 neurons (4x the 256 of SDRAM synapses); 7 tiles place (707 cores), 8 do not. Two
    small mappings: ~15 s."""
    from workers.spinnaker.workspace import Workspace

    work = Workspace(tmp_path / "spinnaker")
    common = ["--model", "landcover-landsat", "--local-only", "--tile", "32"]
    placed = work.run_child("workers.spinnaker.mapping", [*common, "--copies", "7"], timeout_s=600)
    assert placed["ok"], placed
    assert placed["cores_by_kind"] == {"input": 280, "conv1": 112, "conv2": 168, "out": 147}, placed
    assert placed["application_cores"] == 707
    for kind in ("input", "conv1", "conv2", "out"):
        assert placed["max_neurons_per_core"][kind] == placed["min_neurons_per_core"][kind] == 1024, kind
        assert placed["core_shapes"][kind] == [[32, 32]], kind
    assert placed["projections"] == 7 * 1517  # C_in x C_out per layer, less the all-zero kernels
    assert placed["routing"]["max_per_chip"] < 1023
    # sPyNNaker's own neuron-parameter bytes for such a core: most of a core's 64 KB of DTCM (docs)
    assert placed["neuron_param_bytes_by_kind"]["conv1"] == 57376
    refused = work.run_child("workers.spinnaker.mapping", [*common, "--copies", "8"], timeout_s=600)
    assert not refused["ok"] and refused["limit"] == "placement", refused


def test_tile_spikes_are_the_emulators_on_patches() -> None:
    """The tile layout's load is counted on ``tile_spikes``; on 16 x 16 patches it is the emulator."""
    from models import package
    from models.emulator import Emulator
    from workers.samples import default_scene, real_patches
    from workers.spinnaker.tile_plan import tile_spikes

    pkg = package.load("landcover-landsat")
    pixels, valid = real_patches(pkg, default_scene(pkg), 48)
    emulated = Emulator(pkg).run(pixels, valid, keep_layers=True).layer_spikes
    ours = tile_spikes(pkg, pixels, valid)[1:]
    assert emulated is not None and len(ours) == len(emulated) == 3
    for mine, theirs in zip(ours, emulated, strict=True):
        assert np.array_equal(mine, theirs.reshape(mine.shape))
    assert sum(int(s.sum()) for s in ours) > 0


def test_core_events_are_kernel_taps_on_the_cores_rows() -> None:
    """One spike reaches its post neurons' cores with one update per non-zero tap that lands on them."""
    from workers.spinnaker.local_only import TileLayer, spynnaker_kernel
    from workers.spinnaker.tile_plan import core_events

    kernel = np.ones((3, 3, 1, 1))
    kernel[0, 0] = 0  # a zero tap costs nothing: post (y + 1, x + 1) gets no update from pre (y, x)
    layer = TileLayer("conv", kernel, np.zeros(1), 1)
    pre = np.zeros((2, 8, 8, 1), np.int64)
    pre[0, 4, 4, 0] = 1  # reaches rows 3-5, cols 3-5 but (5, 5); core 0 holds rows 0-3, core 1 rows 4-7
    pre[1, 0, 0, 0] = 1  # a corner: (0, 0), (0, 1), (1, 0); (1, 1) is the zero tap; the rest is padding
    events = core_events([pre, pre], [layer], rows=4)["conv"]  # [tiles, channels, cores]
    assert events[0, 0].tolist() == [3, 5]
    assert events[1, 0].tolist() == [3, 0]
    k = np.arange(9.0).reshape(3, 3)
    assert np.array_equal(spynnaker_kernel(k), k[::-1, ::-1])  # sPyNNaker convolves; Keras correlates
