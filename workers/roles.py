"""The three worker roles over Redis: chipper, inference, mosaicker. One process may run any or all of them.

* chipper: a job id from the ``chip`` stream → the chip grid (``workers.chips``), each chip row read once to
  skip chips with no valid pixel (``pipeline.has_data``), the rest queued on ``infer`` packed into entries
  of one backend batch (``Settings.batch_size`` chips, across chip rows; ``row,col,x,y,size`` text, no
  JSON) — one Redis call per chip row counts and queues them. It also queues the job's mosaic when chipping
  begins (exactly once: ``JobStore.stream_mosaic``).
* inference: takes as many entries as make its backend's batch (``copies``; the CPU emulator, vectorised
  over a batch, takes ``Settings.batch_size`` chips), reads their pixels, runs the backend
  (``pipeline.infer_batch``), stores the results (``workers.chipstore``), then counts the chips and acks
  the entries in one atomic Redis call (``JobStore.chips_done_and_ack``). Per batch: one XREADGROUP, one
  script call, and a status look at most every ``_LIVE_CHECK_S``.
* mosaicker: follows a job from the start of its chipping, feeding the stored results chip row by chip row
  to ``workers.mosaic.Mosaicker`` as soon as each row's chips are all counted (so mosaicking overlaps
  inference, as in ``spikescan predict``), strips written behind on a thread to the COGs and the vector
  layer (``pipeline.OutputWriters``); once the job is complete, ``pipeline.finish_outputs``.

Errors: a ``SpikescanError`` is the input's fault and fails the job at once (retrying cannot fix a bad
scene); anything else is retried through the queue. A failing batch is tried again chip by chip, so one bad
chip cannot sink its neighbours: the chips that work are stored and counted (each once, however often it is
tried), and an entry holding a chip that failed is retried as a unit; on its last attempt each chip still
failing is dead-lettered on its own (one ``<stream>:dead`` record per chip) and reported in the job's
``failed`` chips, while the rest of the job completes. An entry whose workers keep dying is dead-lettered on
delivery, one record and one failed chip per chip it holds that is not done.
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

import rasterio
import redis

from models import package as model_package
from models.package import ModelPackage
from spikescan.config import Settings
from spikescan.errors import (
    InvalidInput,
    InvalidScene,
    ModelPackageError,
    NotFound,
    OutputError,
    SpikescanError,
    writing,
)
from workers import chipstore, gdal_cache, input_check, pipeline, report, retention
from workers.backends import Backend, get_backend
from workers.chips import Chip, ChipGrid
from workers.jobs import Job, JobStore, RowCounts
from workers.mosaic import Mosaicker, WriteBehind
from workers.objectstore import StorageUnavailable
from workers.queue import DeadLetter, Delivery, Streams, WorkStream
from workers.redis_server import warn_about_persistence
from workers.scene import Scene

log = logging.getLogger("spikescan.worker")
ROLES = ("chip", "infer", "mosaic")
_OPEN_SCENES = 8
_PRUNE_EVERY_S = 600.0
_LIVE_CHECK_S = 0.25
_ALIVE_EVERY_S = 5.0  # how often the liveness file is touched at most (SPIKESCAN_WORKER_ALIVE_FILE)
_TAKE_CHIPS = 2048  # fewest chips an inference worker takes at once (``infer_once``)


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
    _jobs: OrderedDict[str, Job] = field(default_factory=OrderedDict)
    _checked: dict[str, float] = field(default_factory=dict)  # job id -> when to look at its status again
    mosaics: dict[str, _Mosaic] = field(default_factory=dict)  # jobs this mosaicker follows (``mosaic_once``)
    next_mosaic_take: float = 0.0
    take_count: int = 0
    _alive_due: float = 0.0

    def __post_init__(self) -> None:
        self.store = JobStore.for_settings(self.client, self.settings)
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

    def alive(self) -> None:
        """Touch ``SPIKESCAN_WORKER_ALIVE_FILE`` (a Kubernetes probe checks its age), at most every few
        seconds: from the loop and from long tasks' heartbeats, so a worker stuck anywhere — a hung read, a
        deadlock — stops touching it and is restarted, while one chipping a huge scene is not."""
        path = self.settings.worker_alive_file
        now = time.monotonic()
        if path is None or now < self._alive_due:
            return
        self._alive_due = now + _ALIVE_EVERY_S
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def heartbeat(self, stream: WorkStream, d: Delivery) -> Callable[[], None]:
        """``stream.heartbeat`` for a long task that also keeps this worker's liveness file fresh."""
        touch = stream.heartbeat(d, self.consumer)

        def beat() -> None:
            touch()
            self.alive()

        return beat

    def backend(self, pkg: ModelPackage) -> Backend:
        engine = self._backends.get(pkg.id)
        if engine is None:
            engine = self._backends[pkg.id] = get_backend(self.backend_name, pkg, self.settings)
            # A board with N tiled copies scans N chips at once; the emulator vectorises over a batch.
            self.take_count = engine.copies if engine.copies > 1 else self.settings.batch_size
        return engine

    def scene(self, job: Job, pkg: ModelPackage) -> Scene:
        scene = self._scenes.pop(job.id, None) or input_check.open_for_job(
            job.scene, pkg.card, job.bands, job.extra
        )
        self._scenes[job.id] = scene
        while len(self._scenes) > _OPEN_SCENES:
            self._scenes.popitem(last=False)[1].close()
        return scene

    def live_job(self, job_id: str) -> Job | None:
        """The job, if it still exists and is not finished. An inference worker asks this for every batch: the
        record is read once per job and kept (what inference needs of it does not change), and its status is
        looked at again (``JobStore.peek``) at most every ``_LIVE_CHECK_S`` — the script that counts a batch
        refuses the chips of a job that has finished or gone meanwhile, so this only spares the computing of a
        cancelled job's chips."""
        now = time.monotonic()
        job = self._jobs.get(job_id)
        if job is None or now >= self._checked.get(job_id, 0.0):
            state = self.store.peek(job_id)
            if state is None or state.terminal:
                self._jobs.pop(job_id, None)
                return None
            job = job or self.store.find(job_id)
            if job is None:
                return None
            job.status, job.backend = state.status, state.backend
            job.extra["copies"] = state.copies
            self._checked[job_id] = now + _LIVE_CHECK_S
        self._jobs[job_id] = job
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > _OPEN_SCENES:
            self._checked.pop(self._jobs.popitem(last=False)[0], None)
        return job

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._checked.pop(job_id, None)
        scene = self._scenes.pop(job_id, None)
        if scene is not None:
            scene.close()

    def close(self) -> None:
        for m in self.mosaics.values():  # their messages are reclaimed by another mosaicker
            m.close(abort=True)
        self.mosaics.clear()
        for job_id in list(self._scenes):
            self.forget(job_id)
        for engine in self._backends.values():
            engine.close()


def _live_job(w: Worker, job_id: str) -> Job | None:
    job = w.store.find(job_id)
    return None if job is None or job.terminal else job


def _fail_job(w: Worker, job_id: str, exc: BaseException) -> None:
    # The job's error is read through the API: options are named as its request fields.
    message = exc.for_api() if isinstance(exc, SpikescanError) else f"{type(exc).__name__}: {exc}"
    log.warning("job %s failed: %s", job_id, message)
    try:
        w.store.fail(job_id, message)
    except NotFound:
        pass  # deleted meanwhile: nothing left to mark
    w.forget(job_id)
    try:  # a failed job gets no outputs: its per-chip results are of no further use
        w.store.chips(job_id).delete()
    except StorageUnavailable as exc:
        log.warning("job %s: chip results not deleted (%s); the retention sweep will", job_id, exc)


def _unless_storage_down(w: Worker, job_id: str, exc: BaseException) -> None:
    """Return if the job's storage answers: ``exc`` is then the job's own failure. If the store is down,
    raise ``StorageUnavailable`` instead: a scene in the bucket that cannot be read, a result that cannot be
    stored are the store's fault, so neither failing the job nor spending one of its chips' attempts is
    right. The task's entries stay pending (unacked), ``run`` waits for the store, and the job goes on once
    it is back (its entries reclaimed after the claim timeout: one delivery per outage)."""
    try:
        w.store.objects.check()
    except StorageUnavailable as down:
        log.warning("job %s: storage unavailable (%s); its task waits for the store", job_id, down)
        w.forget(job_id)  # its scene (/vsis3/) is opened afresh once the store is back
        raise down from exc


def _guarded(w: Worker, stream: WorkStream, d: Delivery, job_id: str, task: Callable[[], None]) -> None:
    """Run one task; input errors fail the job, other errors go back to the queue (then dead letters), and
    any error while the job's storage is down leaves the task pending until it is back."""
    try:
        task()
    except SpikescanError as exc:
        _unless_storage_down(w, job_id, exc)
        if not _uploaded_scene_unreadable(w, job_id, exc):
            _fail_job(w, job_id, exc)
            stream.ack([d.id])
            return
        _retry(w, stream, d, job_id, exc)
    except Exception as exc:
        _unless_storage_down(w, job_id, exc)
        _retry(w, stream, d, job_id, exc)


def _uploaded_scene_unreadable(w: Worker, job_id: str, exc: SpikescanError) -> bool:
    """Whether ``exc`` is an uploaded scene that cannot be read now: it was read and checked when it was
    uploaded, so this is the storage's doing (a store just back from an outage, a read cut short), not the
    input's — worth the task's remaining attempts, not an immediate failure of the job."""
    if not isinstance(exc, InvalidScene):
        return False
    job = w.store.find(job_id)
    if job is None or not job.uploaded:
        return False
    w.forget(job_id)  # opened afresh on the next attempt
    return True


def _retry(w: Worker, stream: WorkStream, d: Delivery, job_id: str, exc: BaseException) -> None:
    """Hand the task back with its attempt counted (called inside the ``except``); past the last attempt it
    is dead-lettered and the job fails with the reason."""
    if isinstance(exc, SpikescanError):
        log.warning("task %s of job %s failed (attempt %d): %s", stream.name, job_id, d.attempts, exc)
        reason = exc.for_api()
    else:
        log.exception("task %s of job %s failed (attempt %d)", stream.name, job_id, d.attempts)
        reason = f"{type(exc).__name__}: {exc}"
    dead = stream.retry(d, w.consumer, reason)
    if dead is not None:
        _fail_job(w, job_id, exc if isinstance(exc, SpikescanError) else RuntimeError(dead.reason))


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
    beat = w.heartbeat(w.streams.chip, d)
    with input_check.open_for_job(job.scene, pkg.card, job.bands, job.extra) as scene:
        grid = ChipGrid.for_model(
            scene.width, scene.height, pkg.card.patch_size, pkg.card.output_stride, job.stride
        )
        w.store.annotate(job.id, grid=json.dumps(grid.to_dict()))
        # The mosaic follows the job from now on, row by row, while its chips are inferred.
        w.store.stream_mosaic(job.id, w.streams.mosaic.key)
        skipped = 0
        entries = _Entries(w.settings.batch_size)
        for row in range(grid.rows):
            batch = scene.read_chip_row(grid, row)
            chips = [c for c, keep in zip(batch.chips, pipeline.has_data(batch), strict=True) if keep]
            skipped += len(batch) - len(chips)
            full = entries.add(row, chips, last=row == grid.rows - 1)
            # Counted as queued and queued in one atomic call, so totals never run behind "done".
            if (full or entries.advanced) and not w.store.queue_chips(
                job.id, full, entries.chipped_rows, w.streams.infer.key, "chips"
            ):
                break  # deleted or cancelled while chipping: stop queueing; inference drops what is queued
            beat()
        else:  # every row read: the exact counts behind report.json's warnings, written once
            w.store.annotate(job.id, **input_check.chipped_fields(scene))
    if w.store.finish_chipping(job.id, skipped):
        w.streams.mosaic.add({"job": job.id})
    w.streams.chip.ack([d.id])


# --- inference ----------------------------------------------------------------------------------------------
class _Entries:
    """The chipper's packing of chips into ``infer`` entries of ``size`` chips (a backend batch; the last one
    smaller), across chip rows, in row order. ``chipped_rows`` counts the rows whose chips are all in entries
    handed out; ``advanced`` says whether the last ``add`` moved it."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.pending: list[Chip] = []
        self.chipped_rows = 0
        self.advanced = False

    def add(self, row: int, chips: list[Chip], last: bool) -> list[str]:
        self.pending += chips
        n = len(self.pending) if last else len(self.pending) // self.size * self.size
        out, self.pending = self.pending[:n], self.pending[n:]
        before = self.chipped_rows
        self.chipped_rows = self.pending[0].row if self.pending else row + 1
        self.advanced = self.chipped_rows != before
        return [chips_field(out[i : i + self.size]) for i in range(0, len(out), self.size)]


def chips_field(chips: list[Chip]) -> str:
    """Chips as an ``infer`` stream entry carries them: ``row,col,x,y,size`` joined by ``;`` (no JSON)."""
    return ";".join(f"{c.row},{c.col},{c.x},{c.y},{c.size}" for c in chips)


def parse_chips(fields: dict[str, str]) -> list[Chip]:
    if "chips" not in fields:  # one chip, queued by an older chipper
        return [Chip.from_dict(json.loads(fields["chip"]))]
    out = []
    for part in fields["chips"].split(";"):
        row, col, x, y, size = map(int, part.split(","))
        out.append(Chip(row, col, x, y, size))
    return out


def infer_once(w: Worker, block_ms: int) -> bool:
    # An entry holds up to a chipper's batch of chips. Take as many as make this worker's batch, and at least
    # ``_TAKE_CHIPS`` chips: every take costs the same round trips, scene read, stored objects (a file
    # creation each) and count whatever it holds; at one 64-chip entry a take, that fixed cost was most of
    # the service's overhead on in-process (``bench service``: 0.10 → 0.03 ms a chip with 512, 0.023 with
    # 2048 once the int8 layers ran on AMX). Memory: 2048 chips' pixels (14 MB of land-cover chips, 55 MB
    # of trees-rgb's), a few chip rows; a crashed worker's entries are still claimed by another.
    per_entry = max(1, w.settings.batch_size)
    entries = max(1, w.take_count // per_entry, -(-_TAKE_CHIPS // per_entry))
    deliveries, dead = w.streams.infer.take(w.consumer, entries, block_ms)
    for letter in dead:
        _chip_failed(w, letter)
    by_job: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_job.setdefault(d.fields["job"], []).append(d)
    for job_id, group in by_job.items():
        job = w.live_job(job_id)
        if job is None:
            w.streams.infer.ack(d.id for d in group)
            w.forget(job_id)  # its scene may be deleted: do not hold the file open
            continue
        _infer_group(w, job, group)
    return bool(deliveries or dead)


def _infer_group(w: Worker, job: Job, group: list[Delivery]) -> None:
    """Infer the chips of some entries and ack them; if that fails, try each chip alone, so that one bad chip
    cannot sink its batch: the chips that work are stored and counted (once, however often they are tried),
    and an entry with a chip that failed is retried as a unit — until its last attempt, on which each chip
    still failing is dead-lettered and reported on its own (one dead-letter record and one ``failed`` chip
    each), and the entry acked."""
    chips = [(d, chip) for d in group for chip in parse_chips(d.fields)]
    try:
        _infer_chips(w, job, [c for _, c in chips], group)
        return
    except SpikescanError as exc:
        _unless_storage_down(w, job.id, exc)
        _fail_job(w, job.id, exc)
        w.streams.infer.ack(d.id for d in group)
        return
    except Exception as exc:
        _unless_storage_down(w, job.id, exc)
        if len(chips) == 1:
            log.exception("chip %s of job %s failed (attempt %d)", chips[0][1].id, job.id, group[0].attempts)
            failed = {group[0].id: [(chips[0][1], f"{type(exc).__name__}: {exc}")]}
        else:
            log.warning("batch of %d chips of job %s failed (%s); trying each alone", len(chips), job.id, exc)
            failed = _one_by_one(w, job, chips)
            if failed:  # the store may have gone down meanwhile: then the chips that failed are not to blame
                _unless_storage_down(w, job.id, exc)
    if failed is None:
        w.streams.infer.ack(d.id for d in group)
        return
    w.streams.infer.ack(d.id for d in group if d.id not in failed)
    for d in group:
        if d.id in failed:
            bad = failed[d.id]
            parts = [{**d.fields, "chips": chips_field([chip])} for chip, _ in bad]
            letter = w.streams.infer.retry(d, w.consumer, bad[0][1], parts)
            if letter is not None:
                _chips_failed(w, job.id, [chip for chip, _ in bad], letter.reason)


def _one_by_one(
    w: Worker, job: Job, chips: list[tuple[Delivery, Chip]]
) -> dict[str, list[tuple[Chip, str]]] | None:
    """Each chip alone (stored and counted if it works, its entry not acked): the failures by entry id, or
    None if the job failed for its input."""
    failed: dict[str, list[tuple[Chip, str]]] = {}
    for d, chip in chips:
        try:
            _infer_chips(w, job, [chip], [])
        except SpikescanError as exc:
            _fail_job(w, job.id, exc)
            return None
        except Exception as exc:
            log.warning("chip %s of job %s failed (attempt %d): %s", chip.id, job.id, d.attempts, exc)
            failed.setdefault(d.id, []).append((chip, f"{type(exc).__name__}: {exc}"))
    return failed


def _infer_chips(w: Worker, job: Job, chips: list[Chip], group: list[Delivery]) -> None:
    """Infer, store and count ``chips``, and ack the entries ``group`` in the same call that counts them."""
    pkg = w.package(job)
    engine = w.backend(pkg)
    scene = w.scene(job, pkg)
    batch = scene.read_chips(chips)
    results = pipeline.infer_batch(engine, batch, w.take_count, pkg.card.output_stride)
    if job.backend != engine.name or job.extra.get("copies") != str(engine.copies):
        # What report.json says ran the job: written by the first batch, not re-sent with every batch.
        energy = engine.energy_per_chip_j
        if not w.store.annotate(job.id, backend=engine.name, copies=engine.copies, energy_per_chip_j=energy):
            w.streams.infer.ack(d.id for d in group)  # deleted while we computed: keep nothing
            return
        job.backend, job.extra["copies"] = engine.name, str(engine.copies)
    chips = w.store.chips(job.id)
    chipstore.store(chips, results)
    # Stored, then counted and acked (and the mosaic queued if this was the last chip) in one atomic call: a
    # crash before it loses nothing — the chips are redelivered, stored again, and count nothing twice.
    counted, _ = w.store.chips_done_and_ack(
        job.id, [r.chip.id for r in results], [d.id for d in group], w.streams.infer, w.streams.mosaic
    )
    if counted < 0:  # deleted or cancelled while we computed: keep nothing
        chips.delete()
        w.forget(job.id)


def _chip_failed(w: Worker, letter: DeadLetter) -> None:
    """An entry dead-lettered on delivery (its workers kept dying): each of its chips not done is failed."""
    _chips_failed(w, letter.delivery.fields["job"], parse_chips(letter.delivery.fields), letter.reason)


def _chips_failed(w: Worker, job_id: str, chips: list[Chip], reason: str) -> None:
    for chip in chips:
        log.warning("chip %s of job %s dead-lettered: %s", chip.id, job_id, reason)
        if w.store.chip_failed(job_id, chip.id, reason)[1]:
            w.streams.mosaic.add({"job": job_id})


# --- mosaicker ----------------------------------------------------------------------------------------------
# A job's mosaic message is queued when its chipping begins (``JobStore.stream_mosaic``). The mosaicker keeps
# the message pending (with heartbeats) while it feeds each chip row to the Mosaicker as soon as every chip
# of that row is counted done or failed (``JobStore.row_progress``), so the mosaic and the strips' writing
# overlap inference as in the in-process pipeline; once the last row is fed and the job is complete it writes
# the COGs, item.json and report.json. Each call advances every open mosaic by what is ready and returns, so
# a process that serves several roles in one loop never waits inside the mosaic for its own inference.
_OPEN_MOSAICS = 2  # jobs one mosaicker follows at once; further messages wait in the stream
_ROWS_PER_POLL = 16
_POLL_S = 0.05  # how often a mosaicker following a job looks for newly finished rows
_TAKE_WHILE_OPEN_S = 0.5


@dataclass
class _Mosaic:
    """One job being mosaicked: its (pending) message and, once its first row is ready, the open writers."""

    job: Job
    delivery: Delivery
    beat: Callable[[], None]
    watch: report.Stopwatch
    grid: ChipGrid | None = None
    scene: Scene | None = None
    writers: pipeline.OutputWriters | None = None
    behind: WriteBehind | None = None
    mosaic: Mosaicker | None = None
    next_row: int = 0
    spikes: int = 0
    backlog: bool = False  # the last look found a full window of finished rows: more may be ready now

    def close(self, abort: bool) -> None:
        """Stop the strip writer and close the scene; ``abort`` also removes the partial outputs."""
        try:
            if self.behind is not None:
                self.behind.close()
        finally:
            if abort and self.writers is not None:
                self.writers.abort()
            if self.scene is not None:
                self.scene.close()
            self.behind = self.writers = self.scene = None


def mosaic_once(w: Worker, block_ms: int) -> bool:
    busy = False
    for m in list(w.mosaics.values()):
        busy = _advance(w, m) or busy
    now = time.monotonic()
    # With a job open, look for the next one only now and then: a take per row poll would double the polling.
    if len(w.mosaics) < _OPEN_MOSAICS and (not w.mosaics or now >= w.next_mosaic_take):
        w.next_mosaic_take = now + _TAKE_WHILE_OPEN_S
        deliveries, dead = w.streams.mosaic.take(w.consumer, 1, 0 if w.mosaics else block_ms)
        for letter in dead:
            _drop_mosaic(w, letter.delivery.fields["job"])
            _fail_job(w, letter.delivery.fields["job"], RuntimeError(letter.reason))
        for d in deliveries:
            busy = True
            _open_mosaic(w, d)
    if w.mosaics and block_ms and not any(m.backlog for m in w.mosaics.values()):
        # Nothing more ready for now: a short nap, so that the next look finds several rows at once, instead
        # of a look per row (or a busy loop) on Redis.
        time.sleep(_POLL_S)
    return busy


def _open_mosaic(w: Worker, d: Delivery) -> None:
    job_id = d.fields["job"]
    if job_id in w.mosaics:  # our own message, reclaimed by us after a pause (e.g. Redis was away)
        w.mosaics[job_id].delivery = d
        return
    job = _live_job(w, job_id)
    if job is None:
        w.streams.mosaic.ack([d.id])
        return
    if job.status == "mosaicking" and _outputs_complete(w.store, job):
        _record_done(w, job, d)
        return
    beat = w.heartbeat(w.streams.mosaic, d)
    # Stage times of a job that ran on several machines: wall time since the job was created is the total.
    watch = report.Stopwatch(_start=time.perf_counter() - (time.time() - job.created))
    w.mosaics[job_id] = m = _Mosaic(job, d, beat, watch)
    _advance(w, m)


def _drop_mosaic(w: Worker, job_id: str) -> None:
    """Stop following a job and remove its partial outputs."""
    m = w.mosaics.pop(job_id, None)
    if m is not None:
        try:
            m.close(abort=True)
        except Exception:  # the strip writer's own failure: already reported through the mosaic's error
            log.debug("closing the mosaic of job %s", job_id, exc_info=True)


def _advance(w: Worker, m: _Mosaic) -> bool:
    """Feed what is ready of one open mosaic, finish it if it is complete; True if anything happened.
    Input errors fail the job; other errors hand the message back (then dead letters); a Redis outage
    leaves the mosaic open, to go on where it was once Redis is back. A storage outage drops the mosaic but
    leaves its message pending: once the store is back, the message is reclaimed and the mosaic made afresh
    from the stored chip results (an outage may have cut it anywhere, uploading the outputs included)."""
    try:
        with writing(w.store.out_dir(m.job.id)):
            return _advance_rows(w, m)
    except redis.ConnectionError:
        raise
    except Exception as exc:
        _drop_mosaic(w, m.job.id)
        _unless_storage_down(w, m.job.id, exc)
        if isinstance(exc, SpikescanError):
            _fail_job(w, m.job.id, exc)
            w.streams.mosaic.ack([m.delivery.id])
            return True
        log.exception("mosaic of job %s failed (attempt %d)", m.job.id, m.delivery.attempts)
        dead = w.streams.mosaic.retry(m.delivery, w.consumer, f"{type(exc).__name__}: {exc}")
        if dead is not None:
            _fail_job(w, m.job.id, RuntimeError(dead.reason))
    return True


def _advance_rows(w: Worker, m: _Mosaic) -> bool:
    m.beat()
    state, chipped_rows, counts = w.store.row_progress(m.job.id, m.next_row, _ROWS_PER_POLL)
    if state is None or state.terminal:  # deleted, cancelled or failed meanwhile (or a stale message)
        _drop_mosaic(w, m.job.id)
        if state is None or state.status == "cancelled":
            shutil.rmtree(w.store.out_dir(m.job.id), ignore_errors=True)
            w.store.objects.delete_prefix(w.store.out_key(m.job.id, ""))
        w.forget(m.job.id)
        w.streams.mosaic.ack([m.delivery.id])
        return True
    ready = 0
    for i, row in enumerate(counts):
        if m.next_row + i >= chipped_rows or not row.finished:
            break
        ready += 1
    m.backlog = ready == len(counts)
    if ready:
        _feed_ready(w, m, counts[:ready])
    if m.grid is not None and m.next_row >= m.grid.rows and w.store.move(m.job.id, "mosaicking"):
        _finish_mosaic(w, m)  # every row fed; the move succeeds once the chipper has marked the job chipped
        return True
    return bool(ready)


def _feed_ready(w: Worker, m: _Mosaic, rows: list[RowCounts]) -> None:
    if m.mosaic is None:  # the first ready row: open the outputs (not before — nothing to write yet)
        job = m.job = w.store.get(m.job.id)
        pkg = w.package(job)
        m.grid = ChipGrid.from_dict(json.loads(job.extra["grid"]))
        m.scene = input_check.open_for_job(job.scene, pkg.card, job.bands, job.extra)
        m.writers = pipeline.OutputWriters(w.store.out_dir(job.id), pkg, m.scene, m.grid, job.vector_params())
        # As in the in-process pipeline, strips are written on a thread while later rows are loaded and
        # blended (GDAL and numpy release the GIL).
        m.behind = WriteBehind(m.writers.sink)
        m.mosaic = Mosaicker(m.grid, len(pkg.card.classes), m.behind)
    failed = w.store.failed_chips(m.job.id) if any(r.failed for r in rows) else set()
    chips = w.store.chips(m.job.id)
    for counts in rows:
        row = m.next_row
        with m.watch.stage("mosaic"):
            results = chipstore.load_row(chips, row, skip=failed)
            if len(results) != counts.done:
                # Never a quietly blank patch in the map: results counted done but gone from storage fail
                # the job. (Only chips counted done are read: a row is fed once each of its chips is counted
                # done or failed, and the failed ones are skipped.)
                raise OutputError(
                    f"{counts.done - len(results)} of {counts.done} chip results of row {row} of job "
                    f"{m.job.id} are missing from {chips.objects.ref(chips.prefix)} (shared storage lost "
                    "them); resubmit the job"
                )
            m.mosaic.feed_row(row, results)
        m.spikes += sum(r.spikes for r in results)
        m.next_row += 1
        m.beat()


def _finish_mosaic(w: Worker, m: _Mosaic) -> None:
    assert m.writers is not None and m.behind is not None and m.grid is not None
    job = w.store.get(m.job.id)
    pkg = w.package(job)
    watch = m.watch
    if job.started is not None and job.last_chip is not None:
        # Chipping and inference overlap on different workers: one stage from the first to the last chip.
        watch.seconds["chip+infer"] = round(job.last_chip - job.started, 4)
    with watch.stage("mosaic"):  # the strips still being written behind
        m.behind.close()
    n_features = m.writers.finish(watch)
    m.close(abort=False)
    counters = report.Counters(
        chips_total=m.grid.n_chips,
        chips_skipped=job.chips_skipped,
        chips_processed=job.chips_done,
        spikes=m.spikes,
        detections=n_features,
    )
    info = BackendInfo(
        job.backend or "emulator",  # inference workers record the backend they actually ran
        int(job.extra.get("copies", 1)),
        float(job.extra["energy_per_chip_j"]) if job.extra.get("energy_per_chip_j") else None,
    )
    # The chipper's exact pixel counts (written once every row was read) for report.json's warnings.
    with input_check.open_for_job(job.scene, pkg.card, job.bands, job.extra, with_counts=True) as scene:
        pipeline.finish_outputs(
            w.store.out_dir(job.id),
            pkg,
            watch,
            scene=scene,
            grid=m.grid,
            engine=info,  # type: ignore[arg-type]
            counters=counters,
            scene_name=job.scene_name or None,
        )
    _publish(w, job.id)
    del w.mosaics[job.id]
    _record_done(w, job, m.delivery)


def _record_done(w: Worker, job: Job, d: Delivery) -> None:
    note = f"{job.chips_failed} chip(s) failed and are missing from the outputs" if job.chips_failed else ""
    # The outputs are stored: the per-chip results are of no further use. Deleted before "done" is recorded,
    # so a finished job never has intermediates left; a crash in between is finished by the redelivered
    # mosaic (``_outputs_complete``), which deletes again (nothing there is no error) and records "done".
    w.store.chips(job.id).delete()
    w.store.move(job.id, "done", error=note)
    w.forget(job.id)
    w.streams.mosaic.ack([d.id])


def _publish(w: Worker, job_id: str) -> None:
    """Move the outputs written in this process's data dir to the job's storage (with a bucket: upload them,
    report.json last — the completeness marker ``_outputs_complete`` trusts). Local storage in the data dir:
    they are already in place."""
    out = w.store.out_dir(job_id)
    root = w.store.objects.local_root
    if root is not None and out == root / w.store.out_key(job_id, ""):
        return
    w.store.objects.publish_dir(out, w.store.out_key(job_id, ""), last="report.json")


def _outputs_complete(store: JobStore, job: Job) -> bool:
    """A mosaicker killed (or a Redis that lost its last writes) after report.json was stored but before
    "done" was recorded: the outputs are whole — report.json is stored last, whole — so the redelivered
    mosaic only records "done". The chip results may already be gone; mosaicking again could not work."""
    raw = store.objects.get_bytes(store.out_key(job.id, "report.json"))
    try:
        rep = json.loads(raw) if raw is not None else {}
    except ValueError:
        return False
    return bool(rep.get("chips", {}).get("processed") == job.chips_done)


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
            w.alive()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _prune_every_s(w.settings)
                _prune(w)
            try:
                busy = any([STEPS[role](w, block_ms) for role in roles])
            except redis.ConnectionError as exc:
                # Redis restarting or unreachable: nothing was acked, so nothing is lost; wait and go on.
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                busy = False
                time.sleep(1.0)
            except StorageUnavailable as exc:
                # The store is down (``_unless_storage_down``): take no work until it answers, so that no
                # task spends its attempts on the outage; what this worker holds is reclaimed afterwards.
                log.warning("storage unavailable (%s); waiting for it before taking more work", exc)
                busy = False
                _wait_for_storage(w, should_stop)
            except Exception:
                # A worker must outlive any one task: what it held unacked is redelivered or reclaimed.
                log.exception("unexpected error in worker %s; carrying on", w.consumer)
                busy = False
                time.sleep(0.5)
            if not busy and len(roles) > 1:
                time.sleep(0.1)
    finally:
        w.close()


def _wait_for_storage(w: Worker, should_stop: Callable[[], bool], every_s: float = 1.0) -> None:
    """Until the store answers (or the worker is stopped); the liveness file stays fresh meanwhile: a worker
    waiting for the store is not stuck, and restarting it would not bring the store back."""
    while not should_stop():
        w.alive()
        try:
            w.store.objects.check()
        except StorageUnavailable:
            time.sleep(every_s)
            continue
        # GDAL remembers that the job scenes it tried to open while the store was down were unreadable.
        gdal_cache.clear_remote_cache()
        log.info("storage is back; taking work again")
        return


def _prune(w: Worker) -> None:
    idle_s = max(_PRUNE_EVERY_S, 10 * w.settings.chip_claim_timeout_s)
    for stream in w.streams.all():
        for name in stream.prune_consumers(idle_s):
            log.info("forgot idle consumer %s of stream %s", name, stream.name)
    if w.settings.result_ttl_s > 0:
        try:
            retention.sweep(w.store)
        except StorageUnavailable as exc:  # the next sweep tries again; nothing is forgotten before its files
            log.warning("retention sweep: %s", exc)


def _prune_every_s(settings: Settings) -> float:
    # A short retention is swept as often as it expires (tests, demos); a long one every _PRUNE_EVERY_S.
    ttl = settings.result_ttl_s
    return min(_PRUNE_EVERY_S, max(1.0, float(ttl))) if ttl > 0 else _PRUNE_EVERY_S


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
