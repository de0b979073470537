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
        f"onnxruntime int8 GEMM {r['ort_int8_gemm_peak_gops']} GOP/s, OpenVINO int8 GEMM "
        f"{r.get('openvino_int8_gemm_peak_gops', 'n/a')} GOP/s (* dense-equivalent work, against the peak of "
        "the engine the emulator ran on)"
    ]
    for m in r["models"]:
        batches = ", ".join(f"{k} {v}" for k, v in m["best_batch"].items())
        notes.append(
            f"  {m['model']}: emulator path {m['emulator_path']} on "
            f"{m.get('emulator_engine', 'onnxruntime')}, spikes identical to its own kernels: "
            f"{m['spikes_identical_to_fallback']}; best batch: {batches}; emulator p/s by threads: "
            + ", ".join(f"{k}: {v}" for k, v in m["emulator_patches_per_s_by_threads"].items())
        )
        by_engine = m.get("emulator_network_patches_per_s_by_engine") or {}
        if by_engine:
            notes.append(
                "    layers alone by int8 engine (p/s): "
                + ", ".join(f"{k} {v} ({v / m['keras_network_patches_per_s']:.2f}x keras)"
                            for k, v in by_engine.items())
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


def _sig(x: float) -> str:
    """Three significant figures: the table spans J/km² from 0.01 to 10,000."""
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def spinnaker(r: dict[str, Any]) -> str:
    bases = list(r["cpu_power_bases"])
    rows = []
    for m in r["models"]:
        b, c, f = m["board"], m["cpu"], m["floor"]
        rows.append(
            [
                m["model"],
                f"{b['patches_per_s']} ({b['bottleneck'].split(' ')[0]})",
                _sig(b["j_per_km2_estimate"]),
                c["emulator_patches_per_s"],
                *(_sig(c["j_per_km2_estimate"][k]) for k in bases),
                *(f"{m['board_over_cpu'][k]:,.3g}x" for k in bases),
                f"{_sig(f['raw_bytes_per_km2'] / 1e3)} kB, {_sig(f['j_per_km2_estimate'])} J",
            ]
        )
    head = [
        "model",
        "board p/s (bound)",
        "board J/km²",
        "CPU p/s (here)",
        *(f"CPU J/km² {k}" for k in bases),
        *(f"board/CPU {k}" for k in bases),
        "floor: raw bytes/km², J/km²",
    ]
    bases_used = r["cpu_power_bases"].items()
    notes = [f"  CPU {k}: {v['watts_per_core']} W/core: {v['source']}" for k, v in bases_used]
    notes.append(f"  board: {r['board_power']}")
    notes.append(
        "  floor: each km²'s raw pixel bytes once over the 100 Mb/s host link, board idle meanwhile; "
        "no network change beats it. All J/km² are estimates; board/CPU > 1: the board needs more energy."
    )
    verdicts = []
    for m in r["models"]:
        worse = [k for k in bases if m["board_over_cpu"][k] > 1]
        if worse:
            verdicts.append(
                f"  {m['model']}: the board LOSES to one CPU core by "
                + ", ".join(f"{m['board_over_cpu'][k]:,.3g}x ({k})" for k in worse)
                + f"; its floor alone is {m['floor_over_cpu'][bases[0]]:,.3g}x the CPU ({bases[0]})"
            )
        else:
            verdicts.append(f"  {m['model']}: the board needs less energy per km² than one CPU core")
    return "\n".join([grid(head, rows), *notes, *verdicts])


def scaleout(r: dict[str, Any]) -> str:
    head = ["inference workers", "chips", "seconds", "chips/s", "Redis CPU ms/chip", "Redis peak B/chip"]
    rows = [[s["inference_workers"], s["chips"], s["submit_to_done_s"], s["chips_per_s"],
             s["redis_cpu_ms_per_chip"], s["redis_peak_bytes_per_chip"]] for s in r["runs"]]
    note = (f"  {r['model']} on {r['scene']} ({r['scene_km2']} km²), {r['cores']} cores; bucket: "
            f"{r['bucket_chip_bytes_per_chip']} B/chip of chip results (deleted after the mosaic), "
            f"{r['bucket_output_bytes_per_km2']:,.0f} B/km² of outputs")
    return "\n".join([grid(head, rows), note])


def objectstore(r: dict[str, Any]) -> str:
    libs = list(r["ops"])
    head = ["operation", *(f"{lib} ops/s" for lib in libs), *(f"{lib} CPU µs/op" for lib in libs)]
    ops = list(next(iter(r["ops"].values()))) if libs else []
    rows = [[op, *(r["ops"][lib][op]["ops_per_s"] for lib in libs),
             *(r["ops"][lib][op]["cpu_us_per_op"] for lib in libs)] for op in ops]
    missing = [f"{lib} not installed" for lib, version in r["libraries"].items() if not version]
    versions = ", ".join(f"{lib} {v}" for lib, v in r["libraries"].items() if v)
    note = (f"  {versions}; best of {r['rounds']} interleaved rounds of {r['objects_per_round']} chip-row "
            f"objects ({r['chip_object_bytes_mean']} B, {r['chip_object_chips_mean']} chips each), "
            f"{r['range_bytes'] >> 10} kB ranges of a {r['cog_bytes']} B scores.tif; list: per row, "
            f"delete: per object" + (f"; {', '.join(missing)}" if missing else ""))
    return "\n".join([grid(head, rows), note])


RENDER = {"emulator": emulator, "pipeline": pipeline, "service": service, "spinnaker": spinnaker,
          "scaleout": scaleout, "objectstore": objectstore}
TITLES = {
    "emulator": "1. Emulator vs float Keras/TensorFlow (same patches, encoder and threads; interleaved)",
    "pipeline": "2. Pipeline vs its limits (trees-rgb)",
    "service": "3. Service (Redis) vs in-process",
    "spinnaker": "4. SpiNNaker projection (1 SpiNN-5 board) vs CPU emulator, energy per km² and its floor",
    "scaleout": "Scale-out: hosts sharing only Redis and a bucket (moto S3)",
    "objectstore": "S3 client libraries on the bucket's operations (moto S3; CPU is the client's)",
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
