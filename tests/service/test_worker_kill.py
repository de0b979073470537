"""SIGKILL an inference worker while it holds chips: another worker reclaims them and the job's outputs are
exactly those of an undisturbed in-process run, every chip counted once."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import redis

from models.package import ModelPackage
from workers import pipeline

if TYPE_CHECKING:
    from tests.service.conftest import Stack

STREAM, GROUP = "spikescan:stream:infer", "infer"


def _held_by(r: redis.Redis, consumer: str) -> int:
    summary = r.xpending(STREAM, GROUP)
    return sum(c["pending"] for c in summary["consumers"] if c["name"].decode() == consumer)


def _freeze_while_holding(r: redis.Redis, pid: int, timeout_s: float = 60) -> int:
    """SIGSTOP the worker at a moment it holds unacknowledged chips; returns how many it holds."""
    consumer = f"{socket.gethostname()}-{pid}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _held_by(r, consumer):
            os.kill(pid, signal.SIGSTOP)
            held = _held_by(r, consumer)
            if held:
                return held
            os.kill(pid, signal.SIGCONT)  # it acked between our look and the stop: try again
        time.sleep(0.005)
    raise AssertionError("the inference worker never held chips")


def test_sigkilled_inference_worker_loses_nothing_and_counts_nothing_twice(
    new_stack: Callable[..., Stack],
    landsat_tif: Path,
    landsat_model: ModelPackage,
    tmp_path: Path,
    read_bands: Callable[[Path], np.ndarray],
) -> None:
    s = new_stack(SPIKESCAN_BATCH_SIZE="4", SPIKESCAN_CHIP_CLAIM_TIMEOUT_S="2")
    scene = s.inputs / "landsat.tif"
    shutil.copy(landsat_tif, scene)
    s.worker("chipper", "chip")
    s.worker("mosaicker", "mosaic")
    victim = s.worker("victim", "infer")
    r = s.rclient()
    with s.client() as http:
        job_id = http.post("/v1/jobs", json={"uri": str(scene), "model": landsat_model.name}).json()["id"]
        held = _freeze_while_holding(r, victim.pid)
        victim.kill()
        victim.wait()
        s.worker("rescuer", "infer")
        status = s.wait_done(http, job_id, timeout_s=180)
    assert status["status"] == "done", status
    progress = status["progress"]
    assert held > 0 and progress["chips_failed"] == 0
    assert progress["chips_done"] == progress["chips_total"] == r.scard(f"spikescan:job:{job_id}:done")
    assert r.xpending(STREAM, GROUP)["pending"] == 0 and r.llen(f"{STREAM}:dead") == 0
    r.close()

    undisturbed = tmp_path / "undisturbed"
    report = pipeline.run(landsat_tif, landsat_model, undisturbed)
    assert report["chips"]["processed"] == progress["chips_done"]
    out = s.data_dir / "jobs" / job_id / "out"
    for name in ("classes.tif", "scores.tif"):  # scores.tif carries the hits band
        assert np.array_equal(read_bands(out / name), read_bands(undisturbed / name)), name
