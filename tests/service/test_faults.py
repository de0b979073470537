"""Faults while a job runs: a worker SIGKILLed while it holds work, the Redis server restarted or killed, the
result volume full. Each job either finishes with exactly the outputs of an undisturbed in-process run, every
chip counted once, or fails with a message that says what to fix — never a hang, never a quiet gap."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import redis

from models.package import ModelPackage
from workers import pipeline
from workers.jobs import OUTPUTS, SIDECARS

if TYPE_CHECKING:
    from tests.service.conftest import Stack


def _stream(name: str) -> str:
    return f"spikescan:stream:{name}"


def _held_by(r: redis.Redis, stream: str, consumer: str) -> int:
    summary = r.xpending(_stream(stream), stream)
    return sum(c["pending"] for c in summary["consumers"] if c["name"].decode() == consumer)


def _freeze_while_holding(
    r: redis.Redis, pid: int, stream: str, ready: Callable[[], bool] = lambda: True, timeout_s: float = 90
) -> int:
    """SIGSTOP the worker at a moment it holds unacknowledged entries of ``stream`` (and ``ready()``);
    returns how many it holds."""
    consumer = f"{socket.gethostname()}-{pid}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _held_by(r, stream, consumer) and ready():
            os.kill(pid, signal.SIGSTOP)
            held = _held_by(r, stream, consumer)
            if held and ready():
                return held
            os.kill(pid, signal.SIGCONT)  # it acked between our look and the stop: try again
        time.sleep(0.005)
    raise AssertionError(f"the worker never held work from {stream}")


@pytest.fixture(scope="module")
def undisturbed(
    landsat_tif: Path, landsat_model: ModelPackage, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("undisturbed")
    return out, pipeline.run(landsat_tif, landsat_model, out)


def _assert_like_undisturbed(
    s: Stack,
    job_id: str,
    status: dict[str, Any],
    undisturbed: tuple[Path, dict[str, Any]],
    read_bands: Callable[[Path], np.ndarray],
) -> None:
    assert status["status"] == "done", status
    progress = status["progress"]
    r = s.rclient()
    assert progress["chips_failed"] == 0
    assert progress["chips_done"] == progress["chips_total"] == r.scard(f"spikescan:job:{job_id}:done")
    assert progress["chips_done"] == undisturbed[1]["chips"]["processed"]
    deadline = time.monotonic() + 10  # "done" is recorded just before the mosaic message is acked
    for stream in ("chip", "infer", "mosaic"):  # nothing pending, nothing dead-lettered
        while r.xpending(_stream(stream), stream)["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.xpending(_stream(stream), stream)["pending"] == 0, stream
        assert r.llen(f"{_stream(stream)}:dead") == 0, stream
    r.close()
    out = s.data_dir / "jobs" / job_id / "out"
    for name in ("classes.tif", "scores.tif"):  # scores.tif carries the hits band
        assert np.array_equal(read_bands(out / name), read_bands(undisturbed[0] / name)), name
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS + SIDECARS)  # no temporaries left behind


def _submit(s: Stack, http: httpx.Client, landsat_tif: Path, model: str) -> str:
    scene = s.inputs / "landsat.tif"
    shutil.copy(landsat_tif, scene)
    r = http.post("/v1/jobs", json={"uri": str(scene), "model": model})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_sigkilled_inference_worker_loses_nothing_and_counts_nothing_twice(
    new_stack: Callable[..., Stack],
    landsat_tif: Path,
    landsat_model: ModelPackage,
    undisturbed: tuple[Path, dict[str, Any]],
    read_bands: Callable[[Path], np.ndarray],
) -> None:
    s = new_stack(SPIKESCAN_BATCH_SIZE="4")
    s.worker("chipper", "chip")
    s.worker("mosaicker", "mosaic")
    victim = s.worker("victim", "infer")
    r = s.rclient()
    with s.client() as http:
        job_id = _submit(s, http, landsat_tif, landsat_model.name)
        held = _freeze_while_holding(r, victim.pid, "infer")
        victim.kill()
        victim.wait()
        s.worker("rescuer", "infer")
        status = s.wait_done(http, job_id, timeout_s=180)
    r.close()
    assert held > 0
    _assert_like_undisturbed(s, job_id, status, undisturbed, read_bands)


def test_sigkilled_mosaicker_is_replaced_and_the_replacement_finishes_the_outputs(
    new_stack: Callable[..., Stack],
    landsat_tif: Path,
    landsat_model: ModelPackage,
    undisturbed: tuple[Path, dict[str, Any]],
    read_bands: Callable[[Path], np.ndarray],
) -> None:
    s = new_stack()
    s.worker("chipper", "chip")
    s.worker("infer", "infer")
    victim = s.worker("victim", "mosaic")
    r = s.rclient()
    with s.client() as http:
        job_id = _submit(s, http, landsat_tif, landsat_model.name)

        def mosaicking() -> bool:
            return r.hget(f"spikescan:job:{job_id}", "status") == b"mosaicking"

        _freeze_while_holding(r, victim.pid, "mosaic", mosaicking)
        victim.kill()
        victim.wait()
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "mosaicking"
        s.worker("rescuer", "mosaic")
        status = s.wait_done(http, job_id, timeout_s=120)
    r.close()
    _assert_like_undisturbed(s, job_id, status, undisturbed, read_bands)


def _wait_chips_done(r: redis.Redis, job_id: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not r.scard(f"spikescan:job:{job_id}:done"):
        assert time.monotonic() < deadline, "no chip was ever done"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_redis_restarted_or_killed_mid_job_loses_nothing(
    new_stack: Callable[..., Stack],
    landsat_tif: Path,
    landsat_model: ModelPackage,
    undisturbed: tuple[Path, dict[str, Any]],
    read_bands: Callable[[Path], np.ndarray],
    how: str,
) -> None:
    """With the persistence we ship (AOF, fsync before each reply), a SIGTERM (graceful) or a SIGKILL of
    redis-server mid-job loses no accepted job and no counted chip; while it is down the API answers 503 with
    a JSON reason, and everything carries on once it is back."""
    s = new_stack(SPIKESCAN_BATCH_SIZE="4")
    s.pipeline_workers()
    r = s.rclient()
    with s.client() as http:
        assert http.get("/healthz").json()["persistence"] == "aof-always"
        job_id = _submit(s, http, landsat_tif, landsat_model.name)
        _wait_chips_done(r, job_id)
        r.close()
        before = http.get(f"/v1/jobs/{job_id}").json()["progress"]["chips_done"]
        if how == "crash":
            assert s.redis.process is not None
            s.redis.process.kill()
            s.redis.process.wait()
            s.redis.process = None
        else:
            s.redis.stop()
        health = http.get("/healthz")
        down = http.get(f"/v1/jobs/{job_id}")
        refused = http.post(
            "/v1/jobs", json={"uri": str(s.inputs / "landsat.tif"), "model": landsat_model.name}
        )
        time.sleep(2)  # the workers see the outage too
        s.redis.start()
        after = http.get(f"/v1/jobs/{job_id}").json()
        status = s.wait_done(http, job_id, timeout_s=180)
    assert health.status_code == 503 and health.json()["redis"] is False
    for answer in (down, refused):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"]["code"] == "queue_unavailable"
    assert after["progress"]["chips_done"] >= before  # what was counted survived
    assert not any(p.poll() is not None for name, p in s.procs.items() if name != "api")  # none died
    _assert_like_undisturbed(s, job_id, status, undisturbed, read_bands)


def test_a_redis_that_lost_everything_still_serves_new_jobs(
    new_stack: Callable[..., Stack], landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    """What a Redis without persistence does on a restart (FLUSHALL here): the jobs it held are gone — said
    plainly by a 404 — but the workers recreate their queues and new jobs run."""
    s = new_stack()
    s.pipeline_workers()
    with s.client() as http:
        first = _submit(s, http, landsat_tif, landsat_model.name)
        assert s.wait_done(http, first)["status"] == "done"
        s.rclient().flushall()
        gone = http.get(f"/v1/jobs/{first}")
        second = _submit(s, http, landsat_tif, landsat_model.name)
        assert s.wait_done(http, second, timeout_s=60)["status"] == "done"
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


# --- a full result volume ----------------------------------------------------------------------------------
@pytest.fixture()
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB tmpfs mounted where the first stack of this test keeps its data dir."""
    mountpoint = tmp_path / "stack0" / "data"
    mountpoint.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(volume: Path) -> Path:
    """Take every free byte of ``volume``; delete the returned file to give them back."""
    filler = volume / "filler"
    with open(filler, "wb") as fh:
        st = os.statvfs(volume)
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize)
    with open(volume / "probe", "wb") as probe, pytest.raises(OSError, match="No space left"):
        probe.write(b"x" * 65536)
        probe.flush()
    (volume / "probe").unlink()
    return filler


def _assert_failed_for_space(status: dict[str, Any], where: Path) -> None:
    assert status["status"] == "failed", status
    message = status["error"]
    assert "No space left on device" in message and str(where) in message, message
    assert "resubmit" in message


def test_full_volume_while_inferring_fails_the_job_at_once_and_a_resubmission_works(
    small_volume: Path, new_stack: Callable[..., Stack], landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    s = new_stack(SPIKESCAN_MAX_CHIP_ATTEMPTS="1000")  # only an immediate failure can end the job in time
    s.pipeline_workers()
    filler = _fill(small_volume)
    with s.client() as http:
        job_id = _submit(s, http, landsat_tif, landsat_model.name)
        status = s.wait_done(http, job_id, timeout_s=60)
        _assert_failed_for_space(status, s.data_dir / "jobs" / job_id / "chips")
        assert status["progress"]["chips_failed"] == 0  # the job failed; its chips were not blamed

        filler.unlink()
        again = _submit(s, http, landsat_tif, landsat_model.name)
        assert s.wait_done(http, again, timeout_s=120)["status"] == "done"


def test_full_volume_while_mosaicking_fails_the_job_with_a_message(
    small_volume: Path, new_stack: Callable[..., Stack], landsat_tif: Path, landsat_model: ModelPackage
) -> None:
    s = new_stack()
    s.worker("chipper", "chip")
    s.worker("infer", "infer")
    r = s.rclient()
    with s.client() as http:
        job_id = _submit(s, http, landsat_tif, landsat_model.name)
        deadline = time.monotonic() + 120
        while r.hget(f"spikescan:job:{job_id}", "mosaic_queued") != b"1":  # every chip stored and counted
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r.close()
        _fill(small_volume)
        s.worker("mosaicker", "mosaic")
        status = s.wait_done(http, job_id, timeout_s=60)
    _assert_failed_for_space(status, s.data_dir / "jobs" / job_id / "out")
    out = s.data_dir / "jobs" / job_id / "out"
    assert not out.exists() or [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_an_upload_to_a_full_volume_is_a_507_and_leaves_nothing(
    small_volume: Path, new_stack: Callable[..., Stack], osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    s = new_stack()
    _fill(small_volume)
    with s.client() as http, open(osbs_tif, "rb") as fh:
        r = http.post("/v1/jobs", data={"model": rgb_model.name}, files={"scene": ("osbs.tif", fh)})
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "output_error"
    assert "No space left on device" in r.json()["error"]["message"]
    assert list((s.data_dir / "uploads").iterdir()) == []
    assert s.rclient().zcard("spikescan:jobs") == 0
