"""The local-only tile layout (``local_only.py``) in the planner's terms: ESTIMATES on real tiles.

A fully convolutional model scans a scene as T x T tiles overlapping by its padding margin (``margin``
cells a side: landcover's two 3 x 3 convolutions reach 2 pixels), so each tile's inner (T - 2m)^2 cells
are exactly what the patch pipeline computes there. Every layer forgets between steps, so a tile takes one
timestep per layer of latency and a board takes one tile per copy per step, slowed when a core has more
synaptic events than the planner's rate allows.

Counted as ``planner.py`` counts: synaptic events per core per tile are, for local-only convolution, one
ring-buffer update per (spike, non-zero kernel tap landing on the core's neurons) (sPyNNaker's
``local_only_conv_impl.c`` skips zero weights), measured on the emulator's own integer arithmetic over real
tiles of the held-out scene (``tile_spikes`` equals the emulator on patches; test), the busiest core's
99th percentile against ``planner.EVENTS_PER_MS_PER_CORE``. Biases are thresholds: no clock events. Input
crosses the link once per tile in the planner's framing (``planner.FRAMING``); the output populations are
recorded whole (``link.recorded_bytes_per_step``); energy from ``energy.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.encoding import encode_onehot
from models.package import ModelPackage
from workers.chips import ChipGrid
from workers.input_check import open_checked
from workers.samples import chips_with_data
from workers.spinnaker import energy, link
from workers.spinnaker.local_only import TileLayer, atoms_shape, tile_layers


def margin(layers: list[TileLayer]) -> int:
    """Cells from a tile's side that its zero padding reaches (stride-1 'same' convolutions)."""
    return sum(layer.pad for layer in layers)


def real_tiles(pkg: ModelPackage, scene_path: Any, tile: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Every T x T tile of the scene at stride T - overlap that holds data, read as a job reads chips."""
    with open_checked(scene_path, pkg.card) as scene:
        return chips_with_data(scene, ChipGrid(scene.width, scene.height, tile, tile - overlap, 1))


def _conv_same(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """[N, H, W, Ci] x [k, k, Ci, Co] -> [N, H, W, Co], stride 1, zero padding ``pad`` (cross-correlation)."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[3]), np.int64)
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nhwc,cd->nhwd", xp[:, dy : dy + h, dx : dx + wd], w[dy, dx], optimize=True)
    return out


def tile_spikes(pkg: ModelPackage, pixels: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """[input, layer 1, ...] 0/1 spikes [N, T, T, C] of the one-hot network on whole tiles, in the
    package's integer weight units (a neuron fires iff W.x + b >= threshold)."""
    step = pkg.card.fixed_point.weight_step
    thr = pkg.card.fixed_point.threshold / step
    x = encode_onehot(pixels, pkg.card.encoding, valid).astype(np.int64)
    out = [x]
    for layer in tile_layers(pkg):
        w = np.rint(layer.kernel / step).astype(np.int64)
        b = np.rint(layer.bias / step).astype(np.int64)
        x = (_conv_same(x, w, layer.pad) + b >= thr).astype(np.int64)
        out.append(x)
    return out


def core_events(spikes: list[np.ndarray], layers: list[TileLayer], rows: int) -> dict[str, np.ndarray]:
    """Per layer [N, channels, cores]: ring-buffer updates per core per tile (a core holds ``rows`` whole
    rows of one channel's plane)."""
    events = {}
    for pre, layer in zip(spikes[:-1], layers, strict=True):
        nonzero = (layer.kernel != 0).astype(np.int64)
        updates = _conv_same(pre, nonzero, layer.pad)  # [N, T, T, Co]: updates each post neuron receives
        n, t = updates.shape[:2]
        cores = -(-t // rows)
        padded = np.pad(updates, ((0, 0), (0, cores * rows - t), (0, 0), (0, 0)))
        per_core = padded.reshape(n, cores, rows, t, -1).sum(axis=(2, 3))  # [N, cores, Co]
        events[layer.name] = per_core.transpose(0, 2, 1)
    return events


def tile_load(pkg: ModelPackage, pixels: np.ndarray, valid: np.ndarray, percentile: float = 99.0
              ) -> dict[str, Any]:
    layers = tile_layers(pkg)
    tile = pixels.shape[1]
    rows = atoms_shape(tile)[0]
    spikes = tile_spikes(pkg, pixels, valid)
    events = core_events(spikes, layers, rows)
    busiest = ("", 0.0, 0.0)
    for name, per in events.items():
        flat = per.reshape(per.shape[0], -1)
        p99 = np.percentile(flat, percentile, axis=0)
        j = int(p99.argmax())
        if p99[j] > busiest[1]:
            busiest = (name, float(p99[j]), float(flat[:, j].mean()))
    n = len(pixels)
    per_layer = [float(s.sum() / n) for s in spikes]
    return {
        "tiles": n,
        "tile": tile,
        "margin": margin(layers),
        "input_spikes_per_tile": per_layer[0],
        "spikes_per_tile": sum(per_layer),
        "spikes_per_tile_by_layer": dict(zip(["input", *(la.name for la in layers)], per_layer, strict=True)),
        "events_per_tile": float(sum(e.sum() for e in events.values()) / n),
        "busiest_core": {"population": busiest[0], "events_per_tile_p99": busiest[1],
                         "events_per_tile_mean": busiest[2]},
        "output_channels": int(layers[-1].kernel.shape[3]),
    }


def tile_figures(pkg: ModelPackage, load: dict[str, Any], tiles_per_board: int, cores_per_tile: int,
                 events_per_ms: float, framing: link.Framing, boards: int = 1) -> dict[str, Any]:
    """The planner's bounds for ``tiles_per_board`` tiles: compute (busiest core), host link (input once
    per tile, output bitfields), km² per second and energy per km²."""
    tile, m = load["tile"], load["margin"]
    km2_tile = ((tile - 2 * m) * pkg.card.gsd_m) ** 2 / 1e6
    copies = tiles_per_board * boards
    steps = max(1.0, load["busiest_core"]["events_per_tile_p99"] / events_per_ms)
    step_rate = copies / 1e-3
    compute = step_rate / steps
    in_bytes = load["input_spikes_per_tile"] * framing.bytes_per_spike
    per_core = atoms_shape(tile)[0] * tile
    out_bytes = load["output_channels"] * link.recorded_bytes_per_step(tile * tile, per_core)
    link_rate = link.LINK_BYTES_PER_S / max(in_bytes, out_bytes)
    rate = min(step_rate, compute, link_rate)
    bottleneck = "compute" if rate == compute and compute < step_rate else "host link" if rate == link_rate \
        else "step"
    per_tile = energy.joules_per_patch(boards, copies * cores_per_tile, rate, load["spikes_per_tile"])
    return {
        "tile": tile,
        "useful_cells_per_tile": (tile - 2 * m) ** 2,
        "km2_per_tile": km2_tile,
        "tiles_per_board": tiles_per_board,
        "cores_per_tile": cores_per_tile,
        "steps_per_tile": round(steps, 3),
        "input_bytes_per_tile": round(in_bytes, 1),
        "output_bytes_per_tile": round(out_bytes, 1),
        "host_link_bytes_per_km2": round((in_bytes + out_bytes) / km2_tile, 1),
        "compute_tiles_per_s": round(compute, 1),
        "host_link_tiles_per_s": round(link_rate, 1),
        "projected_tiles_per_s": round(rate, 1),
        "bottleneck": bottleneck,
        "km2_per_s": round(rate * km2_tile, 2),
        "compute_km2_per_s": round(compute * km2_tile, 2),
        "host_link_km2_per_s": round(link_rate * km2_tile, 2),
        "energy_per_km2_j": per_tile / km2_tile,
    }


def cores_per_tile(pkg: ModelPackage, tile: int) -> int:
    """One population per channel (input, every layer), each ceil(T / rows) cores (``atoms_shape``)."""
    layers = tile_layers(pkg)
    planes = layers[0].kernel.shape[2] + sum(int(la.kernel.shape[3]) for la in layers)
    return planes * -(-tile // atoms_shape(tile)[0])


def main() -> None:
    """``python -m workers.spinnaker.tile_plan --model M --tile T [--map] [--compare]``: the local-only
    tile layout's figures (ESTIMATES) on the scene's real tiles; ``--map`` first has sPyNNaker place N
    tiles and refuse N + 1 on a virtual board (N from the cores each tile needs); ``--compare`` adds the
    current plan's headline layout in the same units (km² per second, J/km²)."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from models import package
    from workers.samples import default_scene
    from workers.spinnaker import planner
    from workers.spinnaker.cores import APP_CORES_PER_BOARD
    from workers.spinnaker.workspace import Workspace

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tile", type=int, required=True)
    parser.add_argument("--map", action="store_true")
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    pkg = package.load(args.model)
    cores = cores_per_tile(pkg, args.tile)
    tiles = APP_CORES_PER_BOARD // cores  # no clock core: biases are thresholds
    result: dict[str, Any] = {"model": pkg.name, "tile": args.tile, "cores_per_tile": cores,
                              "tiles_by_cores": tiles}
    if args.map:
        common = ["--model", args.model, "--local-only", "--tile", str(args.tile)]
        with tempfile.TemporaryDirectory(prefix="spikescan-tiles-") as tmp:
            work = Workspace(Path(tmp))
            placed = work.run_child("workers.spinnaker.mapping", [*common, "--copies", str(tiles)], 1800)
            refused = work.run_child("workers.spinnaker.mapping", [*common, "--copies", str(tiles + 1)], 1800)
        result["mapping"] = {"placed": placed, "next": {k: refused.get(k) for k in ("ok", "limit", "error")}}
    margin_px = margin(tile_layers(pkg))
    pixels, valid = real_tiles(pkg, default_scene(pkg), args.tile, 2 * margin_px)
    load = tile_load(pkg, pixels, valid)
    result["load"] = load
    result["figures"] = tile_figures(pkg, load, tiles, cores, planner.EVENTS_PER_MS_PER_CORE, planner.FRAMING)
    result["events_per_ms_per_core"] = planner.EVENTS_PER_MS_PER_CORE
    result["link_framing"] = planner.FRAMING.name
    result["note"] = energy.NOTE
    if args.compare:
        plan = planner.plan(pkg)
        km2 = energy.km2_per_patch(pkg.card.patch_size, pkg.card.gsd_m)
        result["plan"] = {
            "layout": plan.layout, "projected_patches_per_s": plan.projected_patches_per_s,
            "km2_per_s": round(plan.projected_patches_per_s * km2, 2), "bottleneck": plan.bottleneck,
            "host_link_bytes_per_km2": plan.host_link_bytes_per_km2,
            "energy_per_km2_j": plan.energy_per_km2_j,
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
