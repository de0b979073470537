"""The chipper, inference and mosaicker roles in one process on a real Redis and real scenes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import redis

from models.package import ModelPackage
from spikescan.config import Settings
from workers import roles
from workers.jobs import OUTPUTS, SIDECARS, Job


def _settings(tmp_path: Path, server: Any, pkg: ModelPackage, **over: Any) -> Settings:
    base = {
        "redis_url": server.url,
        "data_dir": tmp_path / "data",
        "models_dir": pkg.path.parent,
        "batch_size": 8,
        "chip_claim_timeout_s": 0.2,
        "max_chip_attempts": 2,
    }
    return Settings(**(base | over))


def _submit(w: roles.Worker, scene: Path, pkg: ModelPackage, job_id: str = "j1") -> str:
    w.store.create(job_id, "local", pkg.name, pkg.id, scene, uploaded=False)
    w.streams.chip.add({"job": job_id})
    return job_id


def _drain(w: roles.Worker, job_id: str, timeout_s: float = 60) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for step in roles.STEPS.values():
            step(w, 10)
        job = w.store.get(job_id)
        if job.terminal:
            return job
    raise AssertionError(f"job {job_id} not finished: {w.store.get(job_id)}")


def _bands(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture()
def worker(tmp_path: Path, redis_server, redis_client: redis.Redis, rgb_model: ModelPackage):  # type: ignore[no-untyped-def]
    w = roles.Worker(_settings(tmp_path, redis_server, rgb_model), redis_client)
    yield w
    w.close()


def test_the_three_roles_produce_exactly_the_in_process_outputs(
    worker: roles.Worker, osbs_tif: Path, rgb_model: ModelPackage, osbs_run
) -> None:  # type: ignore[no-untyped-def]
    job = _drain(worker, _submit(worker, osbs_tif, rgb_model))
    assert job.status == "done", job.error
    assert job.chips_failed == 0 and job.chips_done == job.chips_total > 0
    out = worker.store.out_dir(job.id)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS + SIDECARS)
    ref_dir, ref_report = osbs_run
    for name in ("classes.tif", "scores.tif"):
        assert np.array_equal(_bands(out / name), _bands(ref_dir / name)), name
    assert (out / "detections.geojson").read_text().count('"Feature"') == ref_report["detections"]
    assert not worker.store.chip_dir(job.id).exists()  # per-chip results are cleaned up once mosaicked
    assert all(s.lag()["backlog"] == 0 for s in worker.streams.all())


def test_chips_whose_results_cannot_be_stored_are_dead_lettered_and_reported(
    tmp_path: Path, redis_server, redis_client: redis.Redis, osbs_tif: Path, rgb_model: ModelPackage
) -> None:  # type: ignore[no-untyped-def]
    # Batches of 12 straddle chip rows 0 and 1: the good chips must not go down with the bad ones.
    worker = roles.Worker(_settings(tmp_path, redis_server, rgb_model, batch_size=12), redis_client)
    job_id = "jbroken"
    # Storage for chip row 0 is broken: a file where its directory should be.
    worker.store.chip_dir(job_id).mkdir(parents=True)
    (worker.store.chip_dir(job_id) / "r0").write_text("not a directory")
    job = _drain(worker, _submit(worker, osbs_tif, rgb_model, job_id))
    assert job.status == "done"
    failures = worker.store.failures(job_id)
    assert set(failures) == {f"r0c{c}" for c in range(8)}  # 200 model pixels: 8 chips of 48 every 24
    assert all("failed 2 times" in why for why in failures.values())
    assert "missing from the outputs" in job.error
    assert job.chips_done == job.chips_total - job.chips_failed
    dead = worker.streams.infer.dead_letters()
    assert len(dead) == job.chips_failed
    # Output rows that only chip row 0 covers have no data; the rest of the scene is there.
    classes = _bands(worker.store.out_dir(job_id) / "classes.tif")[0]
    grid = rgb_model.card
    only_row0 = 24 // grid.output_stride  # default stride: half of the 48-pixel patch
    assert (classes[:only_row0] == 255).all()
    assert (classes[only_row0 + grid.output_cells :] != 255).all()
    worker.close()


def test_a_scene_gone_before_chipping_fails_the_job_with_its_name(
    worker: roles.Worker, osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    scene = tmp_path / "gone.tif"
    shutil.copy(osbs_tif, scene)
    job_id = _submit(worker, scene, rgb_model)
    scene.unlink()
    job = _drain(worker, job_id)
    assert job.status == "failed" and "gone.tif" in job.error
    assert worker.streams.chip.lag()["backlog"] == 0


def test_a_cancelled_job_is_dropped_by_every_role(
    worker: roles.Worker, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    job_id = _submit(worker, osbs_tif, rgb_model)
    roles.chip_once(worker, 10)
    assert worker.store.get(job_id).chips_total > 0
    assert worker.store.move(job_id, "cancelled")
    while roles.infer_once(worker, 10):
        pass
    job = worker.store.get(job_id)
    assert job.status == "cancelled" and job.chips_done == 0
    assert worker.streams.infer.lag()["backlog"] == 0
    assert not worker.store.out_dir(job_id).exists()


def test_inference_takes_as_many_chips_as_its_backend_scans_at_once(
    worker: roles.Worker, osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    job_id = _submit(worker, osbs_tif, rgb_model)
    roles.chip_once(worker, 10)
    before = worker.streams.infer.lag()["backlog"]
    total = worker.store.get(job_id).chips_total
    roles.infer_once(worker, 10)
    engine = worker.backend(rgb_model)
    expected = engine.copies if engine.copies > 1 else worker.settings.batch_size
    assert expected == worker.take_count
    # An infer entry carries one backend batch of chips (the chipper packs them, across chip rows); a take
    # holds as many entries as make at least the backend's batch and at least _TAKE_CHIPS chips.
    per_entry = worker.settings.batch_size
    entries = min(before, max(expected // per_entry, -(-roles._TAKE_CHIPS // per_entry)))
    assert before - worker.streams.infer.lag()["backlog"] == entries > 1
    assert worker.store.get(job_id).chips_done == min(total, entries * per_entry)


def test_a_job_deleted_under_the_workers_leaves_no_trace_and_no_dead_worker(
    worker: roles.Worker, osbs_tif: Path, rgb_model: ModelPackage, redis_client: redis.Redis
) -> None:
    job_id = _submit(worker, osbs_tif, rgb_model)
    roles.chip_once(worker, 10)
    worker.store.delete(worker.store.get(job_id))  # what DELETE /v1/jobs/{id} does
    shutil.rmtree(worker.store.job_dir(job_id), ignore_errors=True)
    while roles.infer_once(worker, 10):
        pass
    roles.mosaic_once(worker, 10)
    assert list(redis_client.scan_iter(f"*{job_id}*")) == []  # no half-records written back
    assert worker.streams.infer.lag()["backlog"] == 0
    assert not worker.store.job_dir(job_id).exists()
    roles._fail_job(worker, job_id, RuntimeError("late failure report"))  # must not raise either


def test_a_worker_keeps_its_liveness_file_fresh_and_sizes_its_pool_to_its_threads(  # type: ignore[no-untyped-def]
    tmp_path: Path, redis_server, redis_client: redis.Redis, rgb_model: ModelPackage, osbs_tif: Path
) -> None:
    alive = tmp_path / "tmp" / "alive"
    w = roles.Worker(
        _settings(tmp_path, redis_server, rgb_model, worker_alive_file=alive, threads=2), redis_client
    )
    try:
        job = _submit(w, osbs_tif, rgb_model)
        passes = iter(range(3))
        roles.run(w, list(roles.STEPS), lambda: next(passes, None) is None)  # three passes of the loop
        assert alive.is_file() and time.time() - alive.stat().st_mtime < 5
        assert w.backend(w.package(w.store.get(job))).threads == 2  # what SPIKESCAN_THREADS asks for
    finally:
        w.close()
