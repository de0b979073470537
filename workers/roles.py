"""The three worker roles over Redis: chipper, inference, mosaicker. One process may run any or all of them.

* chipper: a job id from the ``chip`` stream → the chip grid (``workers.chips``), each chip row read once to
  skip chips with no valid pixel (``pipeline.has_data``), the rest queued on ``infer`` as small chip records.
* inference: takes as many chips at once as its backend runs in parallel (``copies``; the CPU emulator,
  vectorised over a batch, takes ``Settings.batch_size``), reads their pixels, runs the backend
  (``pipeline.infer_batch``), stores the results (``workers.chipstore``), counts them in Redis, and only
  then acks; a failing batch is retried chip by chip, so one bad chip cannot sink its neighbours. The
  last chip of a job queues its mosaic (exactly once: see ``workers.jobs``).
* mosaicker: feeds the stored results chip row by chip row to ``workers.mosaic.Mosaicker`` and
  ``workers.cog.LayerWriter``, then ``pipeline.finish_outputs`` writes detections, item.json, report.json.

Errors: a ``SpikescanError`` is the input's fault and fails the job at once (retrying cannot fix a bad
scene); anything else is retried through the queue, and a chip that keeps failing is dead-lettered and
reported in the job's ``failed`` chips, while the rest of the job completes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
import redis

from models import package as model_package
from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import (
    InvalidInput,
    ModelPackageError,
    NotFound,
    OutputError,
    SpikescanError,
    writing,
)
from workers import chipstore, pipeline, report
from workers.backends import Backend, get_backend
from workers.chips import Chip, ChipGrid
from workers.cog import LayerWriter
from workers.jobs import Job, JobStore
from workers.mosaic import Mosaicker
from workers.queue import DeadLetter, Delivery, Streams, WorkStream
from workers.redis_server import warn_about_persistence
from workers.scene import Scene, open_scene

log = logging.getLogger("spikescan.worker")
ROLES = ("chip", "infer", "mosaic")
_OPEN_SCENES = 8
_PRUNE_EVERY_S = 600.0


@dataclass
class BackendInfo:
    """What report.json and item.json say about the backend, recorded by the inference workers."""

    name: str
    copies: int
    energy_per_chip_j: float | None


@dataclass
class Worker:
    """Shared state of one worker process: Redis, queues, and resources loaded once (models, backends)."""

    settings: Settings
    client: redis.Redis
    backend_name: str | None = None
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    store: JobStore = field(init=False)
    streams: Streams = field(init=False)
    _packages: dict[str, ModelPackage] = field(default_factory=dict)
    _backends: dict[str, Backend] = field(default_factory=dict)
    _scenes: OrderedDict[str, Scene] = field(default_factory=OrderedDict)
    take_count: int = 0

    def __post_init__(self) -> None:
        self.store = JobStore(self.client, self.settings.data_dir)
        self.streams = Streams.open(
            self.client, self.settings.chip_claim_timeout_s, self.settings.max_chip_attempts
        )
        self.take_count = self.take_count or self.settings.batch_size

    def package(self, job: Job) -> ModelPackage:
        pkg = self._packages.get(job.model)
        if pkg is None:
            pkg = self._packages[job.model] = model_package.load(job.model, self.settings.models_dir)
        if job.model_id and pkg.id != job.model_id:
            raise ModelPackageError(
                f"model {job.model!r} on this worker ({pkg.id}) is not the one the job was "
                f"accepted with ({job.model_id}); deploy the same model everywhere"
            )
        return pkg

    def backend(self, pkg: ModelPackage) -> Backend:
        engine = self._backends.get(pkg.id)
        if engine is None:
            engine = self._backends[pkg.id] = get_backend(self.backend_name, pkg, self.settings)
            # A board with N tiled copies scans N chips at once; the emulator vectorises over a batch.
            self.take_count = engine.copies if engine.copies > 1 else self.settings.batch_size
        return engine

    def scene(self, job: Job, pkg: ModelPackage) -> Scene:
        scene = self._scenes.pop(job.id, None) or open_scene(job.scene, pkg.card, job.bands or None)
        self._scenes[job.id] = scene
        while len(self._scenes) > _OPEN_SCENES:
            self._scenes.popitem(last=False)[1].close()
        return scene

    def forget(self, job_id: str) -> None:
        scene = self._scenes.pop(job_id, None)
        if scene is not None:
            scene.close()

    def close(self) -> None:
        for job_id in list(self._scenes):
            self.forget(job_id)
        for engine in self._backends.values():
            engine.close()


def _live_job(w: Worker, job_id: str) -> Job | None:
    job = w.store.find(job_id)
    return None if job is None or job.terminal else job


def _fail_job(w: Worker, job_id: str, exc: BaseException) -> None:
    message = exc.message if isinstance(exc, SpikescanError) else f"{type(exc).__name__}: {exc}"
    log.warning("job %s failed: %s", job_id, message)
    try:
        w.store.fail(job_id, message)
    except NotFound:
        pass  # deleted meanwhile: nothing left to mark
    w.forget(job_id)


def _guarded(w: Worker, stream: WorkStream, d: Delivery, job_id: str, task: Callable[[], None]) -> None:
    """Run one task; input errors fail the job, other errors go back to the queue (then dead letters)."""
    try:
        task()
    except SpikescanError as exc:
        _fail_job(w, job_id, exc)
        stream.ack([d.id])
    except Exception as exc:
        log.exception("task %s of job %s failed (attempt %d)", stream.name, job_id, d.attempts)
        dead = stream.retry(d, w.consumer, f"{type(exc).__name__}: {exc}")
        if dead is not None:
            _fail_job(w, job_id, RuntimeError(dead.reason))


# --- chipper ------------------------------------------------------------------------------------------------
def chip_once(w: Worker, block_ms: int) -> bool:
    return _one_job_message(w, w.streams.chip, _chip_job, block_ms)


def _one_job_message(
    w: Worker, stream: WorkStream, handle: Callable[[Worker, Job, Delivery], None], block_ms: int
) -> bool:
    """Take one per-job message from ``stream`` (chipper and mosaicker work a whole job per message): a job
    that failed too often is failed, a job gone or cancelled is acked and dropped, anything else handled."""
    deliveries, dead = stream.take(w.consumer, 1, block_ms)
    for letter in dead:
        _fail_job(w, letter.delivery.fields["job"], RuntimeError(letter.reason))
    for d in deliveries:
        job = _live_job(w, d.fields["job"])
        if job is None:
            stream.ack([d.id])
            continue
        _guarded(w, stream, d, job.id, lambda job=job, d=d: handle(w, job, d))
    return bool(deliveries or dead)


def _chip_job(w: Worker, job: Job, d: Delivery) -> None:
    if not w.store.move(job.id, "chipping"):
        w.streams.chip.ack([d.id])
        return
    pkg = w.package(job)
    with open_scene(job.scene, pkg.card, job.bands or None) as scene:
        grid = ChipGrid.for_model(
            scene.width, scene.height, pkg.card.patch_size, pkg.card.output_stride, job.stride
        )
        w.store.annotate(job.id, grid=json.dumps(grid.to_dict()))
        skipped = 0
        for row in range(grid.rows):
            batch = scene.read_chip_row(grid, row)
            keep = pipeline.has_data(batch)
            chips = batch.select(keep).chips
            skipped += len(batch) - len(chips)
            # Counted as queued before they are visible to inference, so totals never run behind "done".
            if not w.store.add_queued(job.id, [c.id for c in chips]) or _live_job(w, job.id) is None:
                break  # deleted or cancelled while chipping: stop queueing; inference drops what is queued
            w.streams.infer.add_many({"job": job.id, "chip": json.dumps(c.to_dict())} for c in chips)
            w.streams.chip.touch(d, w.consumer)
    if w.store.finish_chipping(job.id, skipped):
        w.streams.mosaic.add({"job": job.id})
    w.streams.chip.ack([d.id])


# --- inference ----------------------------------------------------------------------------------------------
def infer_once(w: Worker, block_ms: int) -> bool:
    deliveries, dead = w.streams.infer.take(w.consumer, w.take_count, block_ms)
    for letter in dead:
        _chip_failed(w, letter)
    by_job: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_job.setdefault(d.fields["job"], []).append(d)
    for job_id, group in by_job.items():
        job = _live_job(w, job_id)
        if job is None:
            w.streams.infer.ack(d.id for d in group)
            w.forget(job_id)  # its scene may be deleted: do not hold the file open
            continue
        _infer_group(w, job, group)
    return bool(deliveries or dead)


def _infer_group(w: Worker, job: Job, group: list[Delivery]) -> None:
    """Infer a batch; if it fails, retry its chips one by one so that one bad chip cannot sink its batch."""
    try:
        _infer_chips(w, job, group)
    except SpikescanError as exc:
        _fail_job(w, job.id, exc)
        w.streams.infer.ack(d.id for d in group)
    except Exception as exc:
        if len(group) > 1:
            log.warning(
                "batch of %d chips of job %s failed (%s); trying them one by one", len(group), job.id, exc
            )
            for d in group:
                _infer_group(w, job, [d])
            return
        log.exception("chip of job %s failed (attempt %d)", job.id, group[0].attempts)
        letter = w.streams.infer.retry(group[0], w.consumer, f"{type(exc).__name__}: {exc}")
        if letter is not None:
            _chip_failed(w, letter)


def _infer_chips(w: Worker, job: Job, group: list[Delivery]) -> None:
    pkg = w.package(job)
    engine = w.backend(pkg)
    scene = w.scene(job, pkg)
    batch = scene.read_chips([Chip.from_dict(json.loads(d.fields["chip"])) for d in group])
    results = pipeline.infer_batch(engine, batch, w.take_count, pkg.card.output_stride)
    live = _live_job(w, job.id)
    if live is None:  # cancelled or deleted while we computed: keep nothing
        w.streams.infer.ack(d.id for d in group)
        return
    if live.backend != engine.name or live.extra.get("copies") != str(engine.copies):
        # What report.json says ran the job: written by the first batch, not re-sent with every batch.
        energy = engine.energy_per_chip_j
        w.store.annotate(job.id, backend=engine.name, copies=engine.copies, energy_per_chip_j=energy)
    chipstore.store(w.store.chip_dir(job.id), results)
    # Stored, then counted, then acked: a crash between any two steps loses nothing and counts nothing twice.
    if w.store.chips_done(job.id, [r.chip.id for r in results])[1]:
        w.streams.mosaic.add({"job": job.id})
    w.streams.infer.ack(d.id for d in group)


def _chip_failed(w: Worker, letter: DeadLetter) -> None:
    job_id = letter.delivery.fields["job"]
    chip_id = Chip.from_dict(json.loads(letter.delivery.fields["chip"])).id
    log.warning("chip %s of job %s dead-lettered: %s", chip_id, job_id, letter.reason)
    if w.store.chip_failed(job_id, chip_id, letter.reason)[1]:
        w.streams.mosaic.add({"job": job_id})


# --- mosaicker ----------------------------------------------------------------------------------------------
def mosaic_once(w: Worker, block_ms: int) -> bool:
    return _one_job_message(w, w.streams.mosaic, _mosaic_job, block_ms)


def _mosaic_job(w: Worker, job: Job, d: Delivery) -> None:
    if not w.store.move(job.id, "mosaicking"):
        w.streams.mosaic.ack([d.id])
        return
    out = w.store.out_dir(job.id)
    if not _outputs_complete(out, job):
        with writing(out):
            _write_outputs(w, job, d, out)
    note = f"{job.chips_failed} chip(s) failed and are missing from the outputs" if job.chips_failed else ""
    w.store.move(job.id, "done", error=note)
    shutil.rmtree(w.store.chip_dir(job.id), ignore_errors=True)
    w.forget(job.id)
    w.streams.mosaic.ack([d.id])


def _outputs_complete(out: Path, job: Job) -> bool:
    """A mosaicker killed (or a Redis that lost its last writes) after report.json was written but before
    "done" was recorded: the outputs are whole — report.json is written last, atomically — so the redelivered
    mosaic only records "done". The chip results may already be gone; mosaicking again could not work."""
    try:
        rep = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(rep.get("chips", {}).get("processed") == job.chips_done)


def _write_outputs(w: Worker, job: Job, d: Delivery, out: Path) -> None:
    pkg = w.package(job)
    grid = ChipGrid.from_dict(json.loads(job.extra["grid"]))
    watch = _stopwatch(job)
    with open_scene(job.scene, pkg.card, job.bands or None) as scene:
        writer = LayerWriter(
            out,
            grid.out_width,
            grid.out_height,
            pipeline.output_transform(scene, grid),
            scene.crs,
            pkg.card.classes,
            pkg.card.colors,
        )
        try:
            spikes = _feed_rows(w, job, grid, Mosaicker(grid, len(pkg.card.classes), writer), watch, d)
            with watch.stage("cog"):
                writer.finish()
        except BaseException:
            writer.abort()
            raise
        counters = report.Counters(
            chips_total=grid.n_chips,
            chips_skipped=job.chips_skipped,
            chips_processed=job.chips_done,
            spikes=spikes,
        )
        info = BackendInfo(
            job.backend or "emulator",  # inference workers record the backend they actually ran
            int(job.extra.get("copies", 1)),
            float(job.extra["energy_per_chip_j"]) if job.extra.get("energy_per_chip_j") else None,
        )
        pipeline.finish_outputs(
            out,
            pkg,
            watch,
            scene=scene,
            grid=grid,
            engine=info,  # type: ignore[arg-type]
            counters=counters,
        )


def _feed_rows(
    w: Worker, job: Job, grid: ChipGrid, mosaic: Mosaicker, watch: report.Stopwatch, d: Delivery
) -> int:
    done = w.store.done_chips(job.id)
    spikes = loaded = 0
    for row in range(grid.rows):
        with watch.stage("mosaic"):
            results = chipstore.load_row(w.store.chip_dir(job.id), row, done)
            mosaic.feed_row(row, results)
        spikes += sum(r.spikes for r in results)
        loaded += len(results)
        w.streams.mosaic.touch(d, w.consumer)
    if loaded != len(done):
        # Never a quietly blank patch in the map: results counted done but gone from storage fail the job.
        raise OutputError(
            f"{len(done) - loaded} of {len(done)} chip results of job {job.id} are missing from "
            f"{w.store.chip_dir(job.id)} (shared storage lost them); resubmit the job"
        )
    return spikes


def _stopwatch(job: Job) -> report.Stopwatch:
    """Stage times of a job that ran on several machines: chipping→last chip is 'infer', wall time since
    the job was created is the total."""
    watch = report.Stopwatch(_start=time.perf_counter() - (time.time() - job.created))
    if job.started is not None and job.last_chip is not None:
        # Chipping and inference overlap on different workers: one stage from the first to the last chip.
        watch.seconds["chip+infer"] = round(job.last_chip - job.started, 4)
    return watch


# --- the loop -----------------------------------------------------------------------------------------------
STEPS: dict[str, Callable[[Worker, int], bool]] = {
    "chip": chip_once,
    "infer": infer_once,
    "mosaic": mosaic_once,
}


def run(w: Worker, roles: list[str], should_stop: Callable[[], bool]) -> None:
    """Serve ``roles`` until ``should_stop()``; with several roles, none waits long on an empty queue."""
    # Several roles: never block on one empty queue while another has work; nap only when all are idle.
    block_ms = 1000 if len(roles) == 1 else 0
    log.info("worker %s serving %s", w.consumer, ", ".join(roles))
    next_prune = 0.0
    try:
        while not should_stop():
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _PRUNE_EVERY_S
                _prune(w)
            try:
                busy = any([STEPS[role](w, block_ms) for role in roles])
            except redis.ConnectionError as exc:
                # Redis restarting or unreachable: nothing was acked, so nothing is lost; wait and go on.
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                busy = False
                time.sleep(1.0)
            except Exception:
                # A worker must outlive any one task: what it held unacked is redelivered or reclaimed.
                log.exception("unexpected error in worker %s; carrying on", w.consumer)
                busy = False
                time.sleep(0.5)
            if not busy and len(roles) > 1:
                time.sleep(0.1)
    finally:
        w.close()


def _prune(w: Worker) -> None:
    idle_s = max(_PRUNE_EVERY_S, 10 * w.settings.chip_claim_timeout_s)
    for stream in w.streams.all():
        for name in stream.prune_consumers(idle_s):
            log.info("forgot idle consumer %s of stream %s", name, stream.name)


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``spikescan worker``: serve the given roles against ``SPIKESCAN_REDIS_URL`` until SIGTERM/SIGINT."""
    if not settings.redis_url:
        raise InvalidInput(
            "spikescan worker needs SPIKESCAN_REDIS_URL (spikescan serve runs its own workers)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    roles = list(ROLES) if args.role == "all" else [args.role]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=60, health_check_interval=30)
    warn_about_persistence(client, log)
    # GDAL's block cache defaults to 5 % of RAM, and an inference worker keeps several jobs' scenes open at
    # once: capped as in the in-process pipeline, its memory stays flat however many jobs run.
    with rasterio.Env(GDAL_CACHEMAX=pipeline.GDAL_CACHE_BYTES):
        run(Worker(settings, client, args.backend), roles, stop.is_set)
    return 0
