"""`spikescan bench emulator --quick --json` through the real CLI: the JSON shape, positive figures.

No speed targets here: the benchmark's ratios are for the README, not for a shared, noisy CI machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import package as model_package


def test_bench_emulator_quick_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "spikescan.cli", "bench", "emulator", "--quick", "--json", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["machine"]["cores"] >= 1 and printed["machine"]["cpu_model"]
    table = printed["emulator"]
    assert table["tf_sgemm_peak_gflops"] > 0 and table["ort_int8_gemm_peak_gops"] > 0
    shipped = sorted(p.name for p in model_package.available())
    assert [m["model"] for m in table["models"]] == shipped
    for row in table["models"]:
        for key in (
            "emulator_patches_per_s",
            "keras_float_patches_per_s",
            "speedup",
            "emulator_network_patches_per_s",
            "keras_network_patches_per_s",
            "network_speedup",
            "emulator_dense_equiv_gops",
        ):
            assert row[key] > 0, key
        # int8 unless its bounds cannot be proven on this CPU (e.g. |w| > 64 without VNNI): then it says why.
        assert row["emulator_path"] == "int8" or row["emulator_fallback_reason"]
        assert row["spikes_identical_to_fallback"] is True
        assert all(v > 0 for v in row["profile_ms_per_1000_patches"].values())
        assert len(row["mean_spikes_per_patch_by_layer"]) >= 2


def test_bench_rejects_unknown_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "bench", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_bench_helpers_are_package_modules() -> None:
    """The bench ships inside the package (issue 12 point 6): imported normally, nothing loaded by file path,
    and no top-level bench/ directory a wheel or the Docker image would leave behind."""
    import importlib.util

    from workers.bench import memory, pipeline, service, service_e2e

    bench_dir = Path(pipeline.__file__).parent
    for module in (memory, service_e2e):
        assert Path(module.__file__).parent == bench_dir
        assert module.__spec__ is not None and module.__spec__.name.startswith("workers.bench.")
    assert callable(memory.build_scene) and callable(memory.peak_rss_of_predict)
    assert service.service_run is service_e2e.service_run
    assert pipeline.memory is memory
    repo = Path(__file__).resolve().parents[2]
    assert not (repo / "bench").exists()
    assert importlib.util.find_spec("workers.bench.scripts") is None
    for source in bench_dir.glob("*.py"):
        assert "spec_from_file_location" not in source.read_text(), source


def test_bench_memory_runs_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.bench.memory", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "--sizes" in done.stdout, done.stderr


def test_bench_package_is_discovered_for_the_wheel() -> None:
    """What setuptools puts in the wheel and the Docker image installs: workers.bench with its modules (a
    real ``pip wheel`` needs a newer setuptools from the network, so this reads the same configuration)."""
    import tomllib

    from setuptools import find_packages

    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(repo), include=config["include"])
    assert "workers.bench" in packages
    assert {"memory.py", "service_e2e.py", "pipeline.py", "main.py"} <= {
        p.name for p in (repo / "workers" / "bench").glob("*.py")
    }
    dockerfile = (repo / "Dockerfile").read_text()
    assert "COPY workers ./workers" in dockerfile and "pip install ." in dockerfile


def test_bench_refuses_a_missing_extra_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from spikescan.errors import SpikescanError
    from workers.bench import main as bench_main

    monkeypatch.setitem(bench_main.NEEDS, "emulator", ("spikescan_no_such_module", "train"))
    with pytest.raises(SpikescanError, match=r"needs the train extra .*spikescan\[train\]"):
        bench_main.check_extras(("emulator", "pipeline"))
    bench_main.check_extras(("pipeline", "service"))  # nothing extra needed


def test_bench_spinnaker_quick_json() -> None:
    """The energy table's figures hang together: the projection under both bounds, the floor under the
    board (bytes and joules), each J/km² the stated watts over the measured rate, the verdict the ratio."""
    from workers.bench import table
    from workers.spinnaker import energy, link

    cmd = [sys.executable, "-m", "spikescan.cli", "bench", "spinnaker", "--quick", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["spinnaker"]
    bases = result["cpu_power_bases"]
    assert set(bases) == {"tdp_share", "server_wall"}
    assert all(b["source"] and b["watts_per_core"] > 0 for b in bases.values())
    assert bases["server_wall"]["watts_per_core"] > bases["tdp_share"]["watts_per_core"]
    rows = result["models"]
    assert {r["model"] for r in rows} == {p.name for p in model_package.available()}
    text = table.spinnaker(result)
    for r in rows:
        board, cpu, floor = r["board"], r["cpu"], r["floor"]
        assert board["copies_per_board"] >= 1 and board["patches_per_s"] > 0
        assert board["patches_per_s"] <= min(board["compute_patches_per_s"], board["host_link_patches_per_s"])
        # The floor: the model's own pixels once over the link, under what the board sends, idle meanwhile.
        raw = 1e6 / floor["gsd_m"] ** 2 * floor["bands"] * floor["bytes_per_sample"]
        assert floor["raw_bytes_per_km2"] == pytest.approx(raw)
        assert floor["level_code_bytes_per_km2"] < raw <= board["host_link_bytes_per_km2"]
        assert floor["j_per_km2_estimate"] == pytest.approx(
            energy.BOARD_IDLE_W * floor["raw_bytes_per_km2"] / link.LINK_BYTES_PER_S, rel=1e-6
        )
        assert floor["j_per_km2_estimate"] <= board["j_per_km2_estimate"]
        for name, basis in bases.items():
            watts = basis["watts_per_core"] * cpu["threads"]
            expected = watts / cpu["emulator_patches_per_s"] / r["km2_per_patch"]
            assert cpu["j_per_km2_estimate"][name] == pytest.approx(expected, rel=2e-3)
            ratio = board["j_per_km2_estimate"] / cpu["j_per_km2_estimate"][name]
            assert r["board_over_cpu"][name] == pytest.approx(ratio)
        verdict = next(line for line in text.splitlines() if line.startswith(f"  {r['model']}:"))
        assert ("LOSES" in verdict) == any(v > 1 for v in r["board_over_cpu"].values()), verdict


def test_the_io_floor_writes_what_the_real_run_writes(tmp_path: Path) -> None:
    """The floor replays the run's own scores, so its outputs are the real ones: the same boxes and the same
    class raster as `pipeline.run` on that scene (all-zero scores made a floor lighter than any real run)."""
    import rasterio

    from workers import pipeline
    from workers.bench import memory
    from workers.bench import pipeline as bench_pipeline

    scene = memory.build_scene(tmp_path / "scene.tif", 640)
    pkg = model_package.load("trees-rgb")
    scores: list = []
    assert bench_pipeline.inference_alone_s(scene, pkg, 64, scores) > 0
    assert bench_pipeline.io_floor_s(scene, pkg, tmp_path / "floor", scores) > 0
    pipeline.run(scene, pkg, tmp_path / "run", quiet=True)
    floor, run = (json.loads((tmp_path / d / "detections.geojson").read_text()) for d in ("floor", "run"))
    assert len(run["features"]) > 50
    assert [f["geometry"] for f in floor["features"]] == [f["geometry"] for f in run["features"]]
    floor_classes, run_classes = (tmp_path / d / "classes.tif" for d in ("floor", "run"))
    with rasterio.open(floor_classes) as a, rasterio.open(run_classes) as b:
        assert (a.read() == b.read()).all()


def test_bench_objectstore_quick_json() -> None:
    """The S3 client comparison runs end to end on moto (tiny sizes): every installed library gets every
    operation with positive figures, the project's own store (obstore) among them, and the table renders."""
    from workers.bench import s3clients, table

    cmd = [sys.executable, "-m", "spikescan.cli", "bench", "objectstore", "--quick", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["objectstore"]
    installed = {lib for lib, version in s3clients.available().items() if version}
    assert "obstore" in installed and set(result["ops"]) == installed
    for lib, ops in result["ops"].items():
        assert set(ops) == {"put", "head", "head_missing", "get", "list", "range", "delete"}, lib
        assert all(o["ops_per_s"] > 0 and o["cpu_us_per_op"] >= 0 for o in ops.values()), lib
    assert 500 < result["chip_object_bytes_mean"] / result["chip_object_chips_mean"] < 2000  # ~0.9 kB/chip
    assert result["cog_bytes"] > result["range_bytes"]
    assert "obstore CPU µs/op" in table.objectstore(result)
