"""`spikescan serve` with no Redis configured: private redis-server + worker, driven by `spikescan submit`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from models.package import ModelPackage
from workers.jobs import OUTPUTS


def _cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikescan.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _clean_env(models_dir: Path | None = None, data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without any SPIKESCAN_ setting (so no Redis configured), plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKESCAN_")}
    if models_dir is not None:
        env["SPIKESCAN_MODELS_DIR"] = str(models_dir)
    if data_dir is not None:
        env["SPIKESCAN_DATA_DIR"] = str(data_dir)
    return env | extra


def _wait_up(url: str, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("spikescan serve did not come up")


def test_serve_on_a_clean_machine_accepts_an_upload_and_finishes_it(
    tmp_path: Path,
    models_dir: Path,
    osbs_tif: Path,
    rgb_model: ModelPackage,
    loopback_port: int,
    landsat_tif: Path,
) -> None:
    env = _clean_env(models_dir, tmp_path / "data")
    port = loopback_port
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikescan.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_up(url, serve)
        done = _cli(
            "submit",
            str(osbs_tif),
            "--server",
            url,
            "--model",
            rgb_model.name,
            "--wait",
            "--out",
            str(tmp_path / "results"),
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.split()[0]
        results = tmp_path / "results" / job_id
        assert sorted(p.name for p in results.iterdir()) == sorted(OUTPUTS)
        assert json.loads((results / "report.json").read_text())["chips"]["processed"] > 0
        assert "done" in done.stderr  # progress lines were printed while waiting

        shipped = _cli(
            "submit",
            str(landsat_tif),
            "--server",
            url,
            "--model",
            "landcover-landsat",
            "--wait",
            "--out",
            str(tmp_path / "results"),
            env=env,
            cwd=tmp_path,
        )
        assert shipped.returncode == 0, shipped.stderr  # the shipped, trained model on a real scene
        item = json.loads((tmp_path / "results" / shipped.stdout.split()[0] / "item.json").read_text())
        assert item["properties"]["spikescan:model"]["name"] == "landcover-landsat"

        bad = _cli(
            "submit",
            str(tmp_path / "results" / job_id / "report.json"),
            "--server",
            url,
            "--model",
            rgb_model.name,
            env=env,
            cwd=tmp_path,
        )
        assert bad.returncode == 2
        assert bad.stderr.count("\n") == 1 and "report.json: not a GeoTIFF" in bad.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    assert "no API keys configured" in err and "listening on 127.0.0.1 only (not 0.0.0.0)" in err
    assert "embedded Redis" in err
    assert not (tmp_path / "data" / "redis" / "redis.sock").exists()  # the private redis-server is gone
    assert (tmp_path / "data" / "redis" / "appendonly.aof").is_file()


def test_a_worker_without_redis_configured_says_so(tmp_path: Path) -> None:
    env = _clean_env()
    r = _cli("worker", "--role", "infer", env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "needs SPIKESCAN_REDIS_URL" in r.stderr


def _serve(env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "spikescan.cli", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_up(f"http://127.0.0.1:{port}", proc)
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


def test_a_restarted_server_resumes_its_jobs_from_the_embedded_redis(
    tmp_path: Path, models_dir: Path, landsat_tif: Path, landsat_model: ModelPackage, loopback_port: int
) -> None:
    env = _clean_env(models_dir, tmp_path / "data", SPIKESCAN_BATCH_SIZE="8")
    url = f"http://127.0.0.1:{loopback_port}"
    serve = _serve(env, loopback_port, tmp_path)
    try:
        with open(landsat_tif, "rb") as fh:
            r = httpx.post(
                f"{url}/v1/jobs", data={"model": landsat_model.name}, files={"scene": fh}, timeout=60
            )
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while (p := httpx.get(f"{url}/v1/jobs/{job_id}").json())["progress"]["chips_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        _stop(serve)
    assert p["status"] == "running" and p["progress"]["chips_done"] < p["progress"]["chips_total"]

    serve = _serve(env, loopback_port, tmp_path)  # same data dir: the AOF brings the queue back
    try:
        during = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        assert during["progress"]["chips_done"] >= p["progress"]["chips_done"]  # nothing was lost
        deadline = time.monotonic() + 120
        while (final := httpx.get(f"{url}/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        _stop(serve)
    assert final["status"] == "done", final
    assert final["progress"]["chips_done"] == final["progress"]["chips_total"]


def test_serve_restarts_a_worker_killed_mid_job_and_the_job_finishes(
    tmp_path: Path, models_dir: Path, landsat_tif: Path, landsat_model: ModelPackage, loopback_port: int
) -> None:
    env = _clean_env(
        models_dir, tmp_path / "data", SPIKESCAN_BATCH_SIZE="4", SPIKESCAN_CHIP_CLAIM_TIMEOUT_S="2"
    )
    url = f"http://127.0.0.1:{loopback_port}"
    cmd = [sys.executable, "-m", "spikescan.cli", "serve", "--port", str(loopback_port)]
    with open(tmp_path / "serve.log", "w") as log:
        serve = subprocess.Popen(cmd, env=env, cwd=tmp_path, text=True, stdout=log, stderr=log)
        try:
            _wait_up(url, serve)
            with open(landsat_tif, "rb") as fh:
                r = httpx.post(f"{url}/v1/jobs", data={"model": landsat_model.name}, files={"scene": fh})
            job_id = r.json()["id"]
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]["chips_done"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            (victim,) = [c for c in psutil.Process(serve.pid).children() if "worker" in c.cmdline()]
            victim.kill()
            deadline = time.monotonic() + 120
            while (final := httpx.get(f"{url}/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
                assert time.monotonic() < deadline, final
                time.sleep(0.2)
            (successor,) = [c for c in psutil.Process(serve.pid).children() if "worker" in c.cmdline()]
        finally:
            _stop(serve)
    assert final["status"] == "done", final
    assert final["progress"]["chips_done"] == final["progress"]["chips_total"]
    assert final["progress"]["chips_failed"] == 0
    assert successor.pid != victim.pid
    assert (
        f"worker process {victim.pid} exited with status -9; restarting it"
        in (tmp_path / "serve.log").read_text()
    )
