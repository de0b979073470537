"""`spikescan bench emulator --quick --json` through the real CLI: the JSON shape, positive figures.

No speed targets here: the benchmark's ratios are for the README, not for a shared, noisy CI machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert table["numpy_sgemm_peak_gflops"] > 0
    shipped = sorted(p.name for p in model_package.available())
    assert [m["model"] for m in table["models"]] == shipped
    for row in table["models"]:
        for key in (
            "emulator_patches_per_s",
            "keras_float_patches_per_s",
            "speedup",
            "emulator_dense_equiv_gflops",
        ):
            assert row[key] > 0, key
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
