"""Plain-text tables of ``spikescan bench`` results (the JSON holds every figure; these show the ratios)."""

from __future__ import annotations

from typing import Any


def grid(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emulator(r: dict[str, Any]) -> str:
    rows = [
        [
            m["model"],
            m["emulator_patches_per_s"],
            m["keras_float_patches_per_s"],
            f"{m['speedup']}x",
            m["emulator_network_patches_per_s"],
            m["keras_network_patches_per_s"],
            f"{m['network_speedup']}x",
            f"{m['emulator_fraction_of_int8_peak']:.1%}",
            f"{m['keras_fraction_of_fp32_peak']:.1%}",
        ]
        for m in r["models"]
    ]
    head = [
        "model",
        "emulator p/s",
        "keras p/s",
        "speedup",
        "emu net p/s",
        "keras net p/s",
        "net speedup",
        "emu of int8 peak*",
        "keras of fp32 peak",
    ]
    notes = [
        f"  speedup: pixels -> class scores, same encoder; net: the layers alone; targets >= 2x and >= 3x. "
        f"Peaks at {r['threads']} thread(s): TensorFlow float32 GEMM {r['tf_sgemm_peak_gflops']} GFLOP/s, "
        f"onnxruntime int8 GEMM {r['ort_int8_gemm_peak_gops']} GOP/s (* dense-equivalent work)"
    ]
    for m in r["models"]:
        batches = ", ".join(f"{k} {v}" for k, v in m["best_batch"].items())
        notes.append(
            f"  {m['model']}: emulator path {m['emulator_path']}, spikes identical to its own kernels: "
            f"{m['spikes_identical_to_fallback']}; best batch: {batches}; emulator p/s by threads: "
            + ", ".join(f"{k}: {v}" for k, v in m["emulator_patches_per_s_by_threads"].items())
        )
        notes.append(
            "    profile (ms per 1000 patches): "
            + ", ".join(f"{k} {v}" for k, v in m["profile_ms_per_1000_patches"].items())
        )
    return "\n".join([grid(head, rows), *notes])


def pipeline(r: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['scene_px'][0]}x{r['scene_px'][1]}",
            r["chips"],
            r["end_to_end_mp_per_s"],
            r["inference_alone_mp_per_s"],
            r["io_floor_mp_per_s"],
            f"{r['end_to_end_fraction_of_slower_limit']:.0%}",
        ]
    ]
    head = ["scene", "chips", "end-to-end MP/s", "inference MP/s", "I/O floor MP/s", "of slower (>=80%)"]
    rss = r["peak_rss"]
    mem = [[run["pixels"], run["chips"], run["peak_rss_mb"]] for run in rss["runs"]]
    flat = f"  peak RSS growth {rss['peak_rss_growth']:+.1%} (flat within 20 %: {rss['flat_within_20pct']})"
    return "\n".join([grid(head, rows), "", grid(["scene px", "chips", "peak RSS MB"], mem), flat])


def service(r: dict[str, Any]) -> str:
    rows = [["in-process", r["chips"], r["in_process_s"], r["in_process_chips_per_s"], "100%"]]
    rows += [
        [
            f"redis, {s['inference_workers']} infer",
            s["chips"],
            s["submit_to_done_s"],
            s["chips_per_s_wall"],
            f"{s['fraction_of_in_process']:.0%}",
        ]
        for s in r["service"]
    ]
    head = ["path", "chips", "seconds", "chips/s", "of in-process (>=80% with 1)"]
    note = f"  {r['model']} on {r['scene']}; queue overhead {r['queue_overhead_ms_per_chip']} ms/chip"
    if "service_fixed_overhead_s" in r:
        fits = ", ".join(f"{s['inference_workers']} infer {s['fixed_s']} s" for s in r["service"])
        note += (
            f"\n  per-job fixed cost (intercept of {r['small_scene']} and the mosaic): in-process "
            f"{r['in_process_fixed_s']} s, redis {fits}"
        )
    return "\n".join([grid(head, rows), note])


def spinnaker(r: dict[str, Any]) -> str:
    rows = [
        [
            m["model"],
            m["copies_per_board"],
            m["spinnaker_patches_per_s"],
            m["spinnaker_j_per_km2_estimate"],
            m["emulator_patches_per_s"],
            m["cpu_j_per_km2_estimate"],
        ]
        for m in r["models"]
    ]
    head = [
        "model",
        "copies/board",
        "SpiNNaker p/s",
        "SpiNNaker J/km² (est)",
        "emulator p/s",
        "CPU J/km² (est)",
    ]
    note = f"  CPU power assumed {r['cpu_watts_assumed']:.2f} W: {r['cpu_power_source']}"
    return "\n".join([grid(head, rows), note])


RENDER = {"emulator": emulator, "pipeline": pipeline, "service": service, "spinnaker": spinnaker}
TITLES = {
    "emulator": "1. Emulator vs float Keras/TensorFlow (same patches, encoder and threads; interleaved)",
    "pipeline": "2. Pipeline vs its limits (trees-rgb)",
    "service": "3. Service (Redis) vs in-process",
    "spinnaker": "4. SpiNNaker projection (1 SpiNN-5 board) vs CPU emulator",
}


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"machine: {m['cpu_model']}, {m['cores']} cores, load {m['load_average_1min']}, "
        f"threads {results['threads']}{', quick' if results['quick'] else ''}"
    ]
    for name, fn in RENDER.items():
        if name in results:
            parts += ["", f"{TITLES[name]}  [{results[name]['bench_seconds']} s]", fn(results[name])]
    parts.append(f"\ntotal {results['total_seconds']} s")
    return "\n".join(parts)
