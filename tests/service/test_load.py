"""Load: 20 uploads of a real scene at once against a real stack (uvicorn, Redis, worker processes).

Every job must finish with every chip counted and the same outputs as the others; the API must keep answering
health checks while the workers are busy; no process's memory may grow with the number of jobs.

The scene is OSBS_029 mirrored into a 1500 px uncompressed square: each upload is 6.4 MB of real pixels, so an
API that held uploads in memory would grow by about the sum of them (129 MB), far past the bound below. The
chip stride is a whole patch (48 model px, 256 chips a job): the load under test is 20 scenes moving through
upload, validation and the queues at once, and the default half-patch stride would only add inference time
to a test that has to fit a shared 2-core machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from workers import pipeline
from workers.jobs import OUTPUTS
from workers.pipeline import GDAL_CACHE_MB

if TYPE_CHECKING:
    from tests.service.conftest import Stack

JOBS = 20
SIDE_PX = 1500
STRIDE = 48
POLL_S = 0.2
# Health checks must answer, not be fast (speed is the benchmarks' business): 5 s is an API that is stuck.
HEALTH_TIMEOUT_S = 5.0
MB = 1 << 20
# Measured here: workers 160-290 MB, redis-server under 10 MB. The caps leave room for other library
# builds; the leak check is the comparison with the peak after one job, below.
WORKER_CAP = 512 * MB
REDIS_CAP = 64 * MB
# What a worker's peak may gain from 1 job to 21: the GDAL block cache filling up to its cap (one job
# leaves it partly filled), plus allocator noise. A leak of one scene's worth per job would be 128 MB.
WORKER_SLACK = (GDAL_CACHE_MB + 16) * MB


@pytest.fixture(scope="module")
def big_scene(osbs_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OSBS_029 tiled by mirroring (so tile seams stay continuous) to SIDE_PX square, uncompressed strips."""
    with rasterio.open(osbs_tif) as src:
        pixels, profile = src.read(), src.profile
    reps = -(-SIDE_PX // src.width)
    tiles = [
        [pixels[:, :: -1 if i % 2 else 1, :: -1 if j % 2 else 1] for j in range(reps)] for i in range(reps)
    ]
    mosaic = np.block(tiles)[:, :SIDE_PX, :SIDE_PX]
    profile.update(width=SIDE_PX, height=SIDE_PX, compress=None, tiled=False, blockysize=8)
    profile.pop("blockxsize", None)
    out = tmp_path_factory.mktemp("load") / "osbs_mirrored.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(mosaic)
    return out


def _memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of one process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class Watch:
    """Polls /healthz and one job's status every POLL_S, and samples every process's RSS, until stopped."""

    stack: Stack
    pids: dict[str, int]
    job_id: str
    latencies: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.stack.client() as http:
            while not self.stop.is_set():
                self._sample_rss()
                for path in ("/healthz", f"/v1/jobs/{self.job_id}"):
                    t0 = time.monotonic()
                    try:
                        r = http.get(path, timeout=HEALTH_TIMEOUT_S)
                    except httpx.TransportError as exc:
                        self.bad.append(f"{path}: {type(exc).__name__} after {time.monotonic() - t0:.1f} s")
                        continue
                    if path == "/healthz":
                        self.latencies.append(time.monotonic() - t0)
                    if r.status_code != 200:
                        self.bad.append(f"{path}: {r.status_code} {r.text[:200]}")
                self.stop.wait(POLL_S)

    def _sample_rss(self) -> None:
        for name, pid in self.pids.items():
            try:
                rss = _memory(pid)["VmRSS"]
            except FileNotFoundError:
                self.bad.append(f"process {name} ({pid}) is gone")
                continue
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)


def _submit(stack: Stack, scene: Path, model: str) -> str:
    with stack.client() as http, open(scene, "rb") as fh:
        r = http.post(
            "/v1/jobs",
            data={"model": model, "stride": str(STRIDE)},
            files={"scene": (scene.name, fh, "image/tiff")},
        )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _wait_all(stack: Stack, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    with stack.client() as http:
        while len(final) < len(ids):
            late = {}
            for job_id in ids:
                if job_id not in final:
                    status = http.get(f"/v1/jobs/{job_id}").json()
                    if status["status"] in ("done", "failed", "cancelled"):
                        final[job_id] = status
                    else:
                        late[job_id] = (status["status"], status["progress"]["chips_done"])
            assert not late or time.monotonic() < deadline, f"unfinished after {timeout_s} s: {late}"
            time.sleep(0.5)
    return final


def _download(stack: Stack, job_id: str, into: Path) -> Path:
    into.mkdir(parents=True)
    with stack.client() as http:
        for name in OUTPUTS:
            got = http.get(f"/v1/jobs/{job_id}/results/{name}")
            assert got.status_code == 200, (job_id, name, got.text)
            (into / name).write_bytes(got.content)
    return into


def _features(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "detections.geojson").read_text())["features"]  # type: ignore[no-any-return]


def test_twenty_concurrent_uploads_finish_with_api_responsive_and_memory_flat(
    new_stack: Callable[..., Stack],
    big_scene: Path,
    rgb_model: ModelPackage,
    read_bands: Callable[[Path], np.ndarray],
    tmp_path: Path,
) -> None:
    upload_bytes = big_scene.stat().st_size
    s = new_stack(SPIKESCAN_MAX_UPLOAD_MB=str(upload_bytes // MB + 2))
    # Two inference workers on two cores: chips of one job are spread over two processes, so a mix-up
    # between jobs or processes would show in the outputs; more would only contend for the cores.
    s.pipeline_workers(infer=2)
    pids = {name: p.pid for name, p in s.procs.items()}
    assert s.redis.process is not None
    pids["redis"] = s.redis.process.pid

    # One job alone first: every process loads what it keeps (imports, model, GDAL), so what it holds after
    # this job is the baseline the 20 are compared with.
    t0 = time.monotonic()
    first_id = _submit(s, big_scene, rgb_model.name)
    first = _wait_all(s, [first_id], timeout_s=60)[first_id]
    assert first["status"] == "done", first
    alone_s = time.monotonic() - t0
    time.sleep(0.5)
    after_one = {name: _memory(pid) for name, pid in pids.items()}

    watch = Watch(s, pids, job_id=first_id)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(JOBS) as pool:
            ids = list(pool.map(lambda _: _submit(s, big_scene, rgb_model.name), range(JOBS)))
        submit_s = time.monotonic() - t0
        watch.job_id = ids[-1]
        final = _wait_all(s, ids, timeout_s=120)
        wall_s = time.monotonic() - t0
    finally:
        watch.stop.set()  # before the stack is torn down, so it never samples a process being stopped
        watcher.join(HEALTH_TIMEOUT_S * 2)
    after_all = {name: _memory(pid) for name, pid in pids.items()}

    api_growth = after_all["api"]["VmHWM"] - after_one["api"]["VmRSS"]
    uploaded = JOBS * upload_bytes
    worst = max(watch.latencies)
    peaks = ", ".join(f"{n} {after_all[n]['VmHWM'] / MB:.0f}" for n in pids)
    alone = ", ".join(f"{n} {after_one[n]['VmHWM'] / MB:.0f}" for n in pids)
    print(
        f"\nload: {JOBS} concurrent uploads of {upload_bytes / MB:.1f} MB ({SIDE_PX} px, "
        f"{first['progress']['chips_total']} chips each): all done in {wall_s:.1f} s (uploads accepted in "
        f"{submit_s:.1f} s; one job alone {alone_s:.1f} s); healthz worst {worst * 1000:.0f} ms over "
        f"{len(watch.latencies)} polls; peak RSS MB: {peaks} (after 1 job: {alone}); API growth "
        f"{api_growth / MB:+.1f} MB for {uploaded / MB:.0f} MB uploaded"
    )

    assert not watch.bad, watch.bad
    assert len(watch.latencies) >= wall_s / (POLL_S + HEALTH_TIMEOUT_S)  # it polled all along
    assert all(p.poll() is None for p in s.procs.values()), {n: p.poll() for n, p in s.procs.items()}

    for status in final.values():
        assert status["status"] == "done", status
        p = status["progress"]
        assert p["chips_failed"] == 0 and p["chips_done"] == p["chips_total"], status
        assert p["chips_total"] == first["progress"]["chips_total"] > 0, status
    # Same scene, same model: every job's layers and detections equal an undisturbed in-process run's.
    reference = tmp_path / "in-process"
    pipeline.run(big_scene, rgb_model, reference, stride=STRIDE)
    ref_classes, ref_scores = read_bands(reference / "classes.tif"), read_bands(reference / "scores.tif")
    ref_features = _features(reference)
    assert ref_features and len(np.unique(ref_classes)) > 1  # a blank map would make the comparison moot
    for job_id in [first_id, *ids]:
        out = _download(s, job_id, tmp_path / job_id)
        assert np.array_equal(read_bands(out / "classes.tif"), ref_classes), job_id
        assert np.array_equal(read_bands(out / "scores.tif"), ref_scores), job_id
        assert _features(out) == ref_features, job_id

    # Uploads are streamed to disk: the API holds a flush buffer per upload and a couple of scene checks at
    # a time, never the scenes themselves.
    assert api_growth < uploaded / 2, f"API grew {api_growth / MB:.0f} MB for {uploaded / MB:.0f} MB uploaded"
    for name in pids:
        peak = after_all[name]["VmHWM"]
        if name == "redis":
            assert peak < REDIS_CAP, f"redis-server peaked at {peak / MB:.0f} MB"
        elif name != "api":
            assert peak < WORKER_CAP, f"{name} peaked at {peak / MB:.0f} MB"
            grew = peak - after_one[name]["VmHWM"]
            assert grew < WORKER_SLACK, f"{name}: peak grew {grew / MB:.0f} MB from 1 job to {JOBS + 1}"
