"""``spikescan bench``: run the chosen sub-benchmarks in pinned-thread child processes, print, save JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spikescan.errors import SpikescanError
from workers.bench import machine, table
from workers.bench.child import thread_env

NAMES = ("emulator", "pipeline", "service", "spinnaker")
# Not in ``all`` (the README's table): the scale-out on a shared bucket behind docs/operations.md's sizing,
# and the S3 client libraries compared on the bucket's operations (the choice of obstore in objectstore.py).
EXTRA = ("scaleout", "objectstore")
# What a sub-benchmark needs beyond the core install: (module, the extra that provides it).
NEEDS = {"emulator": ("tensorflow", "train"), "scaleout": ("moto", "test"), "objectstore": ("moto", "test")}


def check_extras(chosen: tuple[str, ...]) -> None:
    """Refuse up front, in one line, a benchmark whose optional extra is not installed."""
    for name in chosen:
        if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
            module, extra = NEEDS[name]
            raise SpikescanError(
                f"bench {name} needs the {extra} extra (pip install 'spikescan[{extra}]'): no module {module}"
            )


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", f"workers.bench.{name}", "--threads", str(args.threads), "--work", args.work]
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=thread_env(args.threads), capture_output=True, text=True)
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SpikescanError(f"bench {name} failed (exit {done.returncode}): {tail[0]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(args: argparse.Namespace) -> int:
    chosen = NAMES if args.which == "all" else (args.which,)
    check_extras(chosen)
    results: dict[str, Any] = {"machine": machine.describe(), "quick": args.quick, "threads": args.threads}
    t0 = time.perf_counter()
    for name in chosen:
        results[name] = run_one(name, args)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1) if args.json else table.render(results))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", nargs="?", default="all", choices=[*NAMES, *EXTRA, "all"])
    p.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--out", default=None, help="also write the JSON results to this file")
    p.add_argument("--threads", type=int, default=1, help="threads for BLAS, numba and TensorFlow alike")
    p.add_argument("--work", default="/tmp/spikescan-bench", help="scratch directory (scenes are cached)")
