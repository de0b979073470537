"""Job records in Redis: the state machine, chip bookkeeping that counts each chip once, progress.

One hash per job (``spikescan:job:<id>``) plus three sets of chip ids: queued, done, failed. Counting by set
membership is what makes chip results idempotent: a redelivered chip is stored again (same bytes) and its
SADD returns 0, so it never counts twice. Completion is detected in the same Lua script that counts, and
``mosaic_queued`` is set with HSETNX, so exactly one caller enqueues the mosaic, however the races fall.

States: queued → chipping → running → mosaicking → done, and failed / cancelled from any live state.
Terminal states never change again; a redelivered task may repeat its own state (chipping → chipping).

Files of a job live in the job's storage (``workers.objectstore``: the data dir, or a bucket) under
``jobs/<id>/``: ``chips/`` (per-chip results), ``out/`` (the outputs) and, for uploads, ``scene.tif``. A
worker writes the outputs in its own ``<data_dir>/jobs/<id>/out/`` first; with a bucket it uploads them.

Retention: once a job is finished its chip bookkeeping (queued set, row counts) is deleted and its record
(with its batch's job list) expires after ``result_ttl`` seconds (``SPIKESCAN_RESULT_TTL_S``);
``workers.retention`` then removes its files and index entries.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from models.tasks import VectorParams
from spikescan.config import Settings
from spikescan.errors import NotFound
from workers.chipstore import ChipSet
from workers.objectstore import LocalStore, ObjectStore, open_store
from workers.queue import PREFIX, WorkStream

STATES = ("queued", "chipping", "running", "mosaicking", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
_NEXT: dict[str, tuple[str, ...]] = {
    "queued": ("queued", "chipping"),
    "chipping": ("chipping", "running"),
    "running": ("running", "mosaicking"),
    "mosaicking": ("mosaicking", "done"),
}
OUTPUTS = (
    "classes.tif",
    "scores.tif",
    "detections.geojson",
    "detections.gpkg",
    "detections.fgb",
    "item.json",
    "report.json",
)
# Served beside the outputs, never listed as one: GDAL's sidecar for classes.tif (RGBA colours, class names).
SIDECARS = ("classes.tif.aux.xml",)

# KEYS: job hash. ARGV: new status, now, then field/value pairs. Returns 1, or 0 if the move is not allowed.
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
local allowed = cjson.decode(ARGV[3])[cur] or {}
local ok = false
for _, s in ipairs(allowed) do if s == ARGV[1] then ok = true end end
if not ok then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: job hash. ARGV: field/value pairs. Workers write through this so that a job deleted under them is not
# brought back as a stray half-record. Returns 1, or 0 if the job is gone.
_ANNOTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: job hash, queued set. ARGV: chip ids. Returns the queued count so far, or -1 if the job is gone.
_QUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SADD', KEYS[2], unpack(ARGV))
local total = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'chips_total', total)
return total
"""

# KEYS: job hash, chip set to add to, queued set, done set, failed set, per-row counts (hash: q<row> queued,
# d<row> done, x<row> failed). ARGV: counter field, now, ...,
# then the chip ids from ARGV[first] on. Returns {chips counted now, complete (0/1)}; complete is 1 for
# exactly one caller per job.
_RECORD_FN = """
local function record(first)
  if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
  local counted = 0
  local prefix = (ARGV[1] == 'chips_done') and 'd' or 'x'
  local by_row = {}
  for i = first, #ARGV do
    local chip = ARGV[i]
    if redis.call('SISMEMBER', KEYS[4], chip) == 0 and redis.call('SISMEMBER', KEYS[5], chip) == 0 then
      local added = redis.call('SADD', KEYS[2], chip)
      counted = counted + added
      local row = string.match(chip, '^r(%d+)c')
      if added == 1 and row then by_row[row] = (by_row[row] or 0) + 1 end
    end
  end
  for row, n in pairs(by_row) do redis.call('HINCRBY', KEYS[6], prefix .. row, n) end
  if counted > 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[1], counted)
    redis.call('HSETNX', KEYS[1], 'first_chip', ARGV[2])
    redis.call('HSET', KEYS[1], 'last_chip', ARGV[2])
  end
  local complete = 0
  if redis.call('HGET', KEYS[1], 'chipped') == '1' and redis.call('HGET', KEYS[1], 'status') == 'running' then
    local finished = redis.call('SCARD', KEYS[4]) + redis.call('SCARD', KEYS[5])
    if finished >= redis.call('SCARD', KEYS[3]) then
      complete = redis.call('HSETNX', KEYS[1], 'mosaic_queued', '1')
      -- A mosaic already streaming since chipping began (``stream_mosaic``) must not be queued twice.
      if redis.call('HGET', KEYS[1], 'mosaic_streaming') == '1' then complete = 0 end
    end
  end
  return {counted, complete}
end
"""
_RECORD = _RECORD_FN + "return record(3)"

# The inference worker's last step for a batch, in one round trip and atomically: count the chips done (as
# _RECORD), ack and delete their work-stream entries, and queue the job's mosaic if this completed it.
# KEYS: as _RECORD, then the work stream, the mosaic stream. ARGV: counter field, now, group, job id, n, the n
# entry ids, then the chip ids. Returns what _RECORD returns, or {-1, 0} (nothing counted, the entries acked)
# if the job is gone or finished (deleted or cancelled while the batch was computed).
_RECORD_ACK = _RECORD_FN + """
local n = tonumber(ARGV[5])
local status = redis.call('HGET', KEYS[1], 'status')
local result = {-1, 0}
if status and status ~= 'done' and status ~= 'failed' and status ~= 'cancelled' then
  result = record(6 + n)
end
if n > 0 then
  redis.call('XACK', KEYS[7], ARGV[3], unpack(ARGV, 6, 5 + n))
  redis.call('XDEL', KEYS[7], unpack(ARGV, 6, 5 + n))
end
if result[2] == 1 then redis.call('XADD', KEYS[8], '*', 'job', ARGV[4]) end
return result
"""

# The chipper's step, in one round trip: count chips as queued and queue them for inference, one stream entry
# per batch of chips (a chip queued before, by a chipper that died, is not queued again), and record how many
# chip rows are wholly queued. KEYS: job hash, queued set, work stream, per-row counts. ARGV: job id, field
# name, chipped rows, then one entry's field value each: "row,col,x,y,size;row,col,x,y,size;...". Returns the
# queued count so far, or -1 (nothing queued) if the job is gone or finished.
_QUEUE_CHIPS = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' or status == 'cancelled' then return -1 end
local by_row = {}
for i = 4, #ARGV do
  local fresh = 0
  for row, col in string.gmatch(ARGV[i], '(%d+),(%d+),%d+,%d+,%d+') do
    if redis.call('SADD', KEYS[2], 'r' .. row .. 'c' .. col) == 1 then
      fresh = fresh + 1
      by_row[row] = (by_row[row] or 0) + 1
    end
  end
  if fresh > 0 then redis.call('XADD', KEYS[3], '*', 'job', ARGV[1], ARGV[2], ARGV[i]) end
end
for row, n in pairs(by_row) do redis.call('HINCRBY', KEYS[4], 'q' .. row, n) end
if tonumber(redis.call('HGET', KEYS[1], 'chipped_rows') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'chipped_rows', ARGV[3])
end
local total = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'chips_total', total)
return total
"""

# Queue a job's mosaic when its chipping begins, exactly once: the mosaicker then follows the job row by row
# while its chips are inferred. KEYS: job hash, mosaic stream. ARGV: job id. Returns 1 if queued now.
_STREAM_MOSAIC = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'mosaic_streaming', '1') == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
return 1
"""


@dataclass
class Job:
    id: str
    owner: str
    status: str
    model: str
    scene: str
    created: float
    updated: float
    model_id: str = ""
    scene_name: str = ""  # what the user called the scene: the upload's file name, the URI's basename
    uploaded: bool = False
    bands: str = ""
    stride: int | None = None
    backend: str = ""
    batch: str = ""
    chipped: bool = False
    chips_total: int = 0
    chips_done: int = 0
    chips_failed: int = 0
    chips_skipped: int = 0
    started: float | None = None  # chipping began
    first_chip: float | None = None
    last_chip: float | None = None
    finished: float | None = None
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def vector_params(self) -> VectorParams:
        """The submission's overrides of the card's detection settings (kept as extra fields)."""
        def number(key: str) -> float | None:
            value = self.extra.get(key)
            return float(value) if value else None

        return VectorParams(min_score=number("min_score"), nms_iou=number("nms_iou"))

    def warnings(self) -> list[dict[str, object]]:
        """Warnings about the input (``workers.input_check``): from a sample at submission, from every pixel
        once chipped."""
        raw = self.extra.get("warnings")
        return list(json.loads(raw)) if raw else []

    def rate(self, now: float | None = None) -> float | None:
        """Chips per second from the start of chipping to the last chip (to now while chips are running);
        None before the first chip is done."""
        if self.started is None or self.last_chip is None or not self.chips_done:
            return None
        end = (now or time.time()) if self.status in ("chipping", "running") else self.last_chip
        span = end - self.started
        return self.chips_done / span if span > 0 else None

    def eta_s(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        if self.terminal:
            return 0.0
        if not self.chipped or rate is None:
            return None
        return max(0, self.chips_total - self.chips_done - self.chips_failed) / rate


@dataclass(frozen=True)
class JobState:
    """What ``JobStore.peek`` reads: the status, and the backend the inference workers recorded."""

    status: str
    backend: str
    copies: str

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class RowCounts:
    """Chips of one chip row: queued by the chipper, counted done, counted failed."""

    queued: int
    done: int
    failed: int

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.queued


_INT = ("chips_total", "chips_done", "chips_failed", "chips_skipped")
_FLOAT = ("created", "updated", "started", "first_chip", "last_chip", "finished")


def _decode(raw: dict[bytes, bytes]) -> Job:
    h = {k.decode(): v.decode() for k, v in raw.items()}
    known = {f for f in Job.__dataclass_fields__ if f != "extra"}
    kwargs: dict[str, object] = {k: v for k, v in h.items() if k in known}
    for k in _INT:
        kwargs[k] = int(h.get(k, 0))
    for k in _FLOAT:
        kwargs[k] = float(h[k]) if h.get(k) else None
    kwargs["uploaded"] = h.get("uploaded") == "1"
    kwargs["chipped"] = h.get("chipped") == "1"
    kwargs["stride"] = int(h["stride"]) if h.get("stride") else None
    kwargs["extra"] = {k: v for k, v in h.items() if k not in known}
    return Job(**kwargs)  # type: ignore[arg-type]


def batch_key(batch_id: str) -> str:
    """The list of a batch's job ids (``POST /v1/batches``)."""
    return f"{PREFIX}:batch:{batch_id}"


def new_id(prefix: str = "j") -> str:
    return prefix + secrets.token_hex(10)


# A finished job's keys: the record and what the API still shows of it (failures, counted sets) expire with
# the result TTL; the bookkeeping only running jobs need is deleted at once.
_KEPT_PARTS = ("", "done", "failed", "failures")
_RUNNING_PARTS = ("queued", "rows")


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        data_dir: Path,
        objects: ObjectStore | None = None,
        result_ttl_s: int = 0,
    ) -> None:
        self.client = client
        self.data_dir = data_dir
        self.objects = objects or LocalStore(data_dir)
        self.result_ttl_s = result_ttl_s
        self._transition = client.register_script(_TRANSITION)
        self._record = client.register_script(_RECORD)
        self._annotate = client.register_script(_ANNOTATE)
        self._queue = client.register_script(_QUEUE)
        self._queue_chips = client.register_script(_QUEUE_CHIPS)
        self._record_ack = client.register_script(_RECORD_ACK)
        self._stream_mosaic = client.register_script(_STREAM_MOSAIC)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> JobStore:
        """The job store of a process: its Redis, the configured storage, the configured retention."""
        objects = open_store(settings.storage_url, settings.data_dir)
        return cls(client, settings.data_dir, objects, settings.result_ttl_s)

    # --- keys and files -----------------------------------------------------------------------------------
    @staticmethod
    def key(job_id: str, part: str = "") -> str:
        return f"{PREFIX}:job:{job_id}" + (f":{part}" if part else "")

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def chip_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "chips"

    def out_dir(self, job_id: str) -> Path:
        """Where this process writes a job's outputs (with a bucket, before they are uploaded)."""
        return self.job_dir(job_id) / "out"

    @staticmethod
    def prefix(job_id: str) -> str:
        """The job's key prefix in the object store."""
        return f"jobs/{job_id}/"

    def chips(self, job_id: str) -> ChipSet:
        return ChipSet(self.objects, self.prefix(job_id) + "chips/")

    def out_key(self, job_id: str, name: str) -> str:
        return f"{self.prefix(job_id)}out/{name}"

    def remove_files(self, job_id: str) -> None:
        """Every file of the job, in the store and in this process's data dir."""
        self.objects.delete_prefix(self.prefix(job_id))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # --- records ------------------------------------------------------------------------------------------
    def create(
        self,
        job_id: str,
        owner: str,
        model: str,
        model_id: str,
        scene: str | Path,
        *,
        uploaded: bool,
        scene_name: str = "",
        bands: str = "",
        stride: int | None = None,
        backend: str = "",
        batch: str = "",
        extra: dict[str, str] | None = None,
    ) -> Job:
        """Record a queued job; ``extra`` fields (e.g. ``workers.input_check.job_fields``) are kept as they
        are, in ``Job.extra``."""
        now = time.time()
        record = {
            "id": job_id,
            "owner": owner,
            "status": "queued",
            "model": model,
            "model_id": model_id,
            "scene": str(scene),
            "scene_name": scene_name or scene.name,
            "created": now,
            "updated": now,
            "uploaded": int(uploaded),
            "bands": bands,
            "stride": stride or "",
            "backend": backend,
            "batch": batch,
            **(extra or {}),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(job_id), mapping=record)
        pipe.zadd(f"{PREFIX}:jobs", {job_id: now})
        pipe.sadd(f"{PREFIX}:owner:{owner}", job_id)
        pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def find(self, job_id: str) -> Job | None:
        raw = self.client.hgetall(self.key(job_id))
        return _decode(raw) if b"id" in raw else None

    def peek(self, job_id: str) -> JobState | None:
        """The few fields an inference worker checks on every batch (one HMGET, not the whole record)."""
        status, backend, copies = self.client.hmget(self.key(job_id), "status", "backend", "copies")
        if status is None:
            return None
        return JobState(status.decode(), (backend or b"").decode(), (copies or b"").decode())

    def ids_of(self, owner: str) -> list[str]:
        return sorted(x.decode() for x in self.client.smembers(f"{PREFIX}:owner:{owner}"))

    def jobs_of(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first (ids are random: the order is the records' creation time)."""
        jobs = [j for j in (self.find(i) for i in self.ids_of(owner)) if j is not None]
        return sorted(jobs, key=lambda j: (j.created, j.id), reverse=True)

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        ids = [x.decode() for x in self.client.zrange(f"{PREFIX}:jobs", 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.key(job_id), "status")
        for status in pipe.execute():
            if status is not None:
                counts[status.decode()] = counts.get(status.decode(), 0) + 1
        return counts

    # --- state machine ------------------------------------------------------------------------------------
    def move(self, job_id: str, status: str, **fields: object) -> bool:
        """Move to ``status`` if the state machine allows it from where the job is; False if not."""
        allowed = {k: list(v) for k, v in _NEXT.items()}
        for live in _NEXT:
            allowed[live] = allowed[live] + ["failed", "cancelled"]
        if status in TERMINAL:
            fields.setdefault("finished", time.time())
        if status == "chipping":
            fields.setdefault("started", time.time())
        args: list[object] = [status, time.time(), json.dumps(allowed)]
        for k, v in fields.items():
            args += [k, "" if v is None else v]
        result = int(self._transition(keys=[self.key(job_id)], args=args))
        if result < 0:
            raise NotFound(f"no job {job_id!r}")
        if result == 1 and status in TERMINAL:
            self._retire(job_id)
        return result == 1

    def _retire(self, job_id: str) -> None:
        """A job just finished: drop its running bookkeeping, and start its record's retention clock — and
        its batch list's: every job of a batch that finishes sets the list's TTL afresh, so the list expires
        with the record of the batch's last job to finish, never while one of its jobs can still be shown."""
        batch = self.client.hget(self.key(job_id), "batch") if self.result_ttl_s > 0 else None
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*(self.key(job_id, p) for p in _RUNNING_PARTS))
        if self.result_ttl_s > 0:
            for part in _KEPT_PARTS:
                pipe.expire(self.key(job_id, part), self.result_ttl_s)
            if batch:
                pipe.expire(batch_key(batch.decode()), self.result_ttl_s)
        pipe.execute()

    def record_batch(self, batch_id: str, job_ids: list[str]) -> None:
        """List a batch's jobs. Its TTL is set as its jobs finish (``_retire``); should every one of them
        have finished before this list existed (tiny scenes, fast workers), it is set here instead."""
        self.client.rpush(batch_key(batch_id), *job_ids)
        if self.result_ttl_s > 0:
            jobs = [self.find(j) for j in job_ids]
            if all(job is None or job.terminal for job in jobs):
                self.client.expire(batch_key(batch_id), self.result_ttl_s)

    def batch_jobs(self, batch_id: str) -> list[str]:
        return [x.decode() for x in self.client.lrange(batch_key(batch_id), 0, -1)]

    def fail(self, job_id: str, message: str) -> bool:
        return self.move(job_id, "failed", error=message)

    # --- chips --------------------------------------------------------------------------------------------
    def annotate(self, job_id: str, **fields: object) -> bool:
        """Set fields of a job that still exists; False (and nothing written) if it was deleted."""
        args = [x for kv in fields.items() for x in (kv[0], "" if kv[1] is None else kv[1])]
        return bool(self._annotate(keys=[self.key(job_id)], args=args))

    def add_queued(self, job_id: str, chip_ids: list[str]) -> bool:
        """Count chips as queued (idempotent: a set); False if the job was deleted meanwhile."""
        if not chip_ids:
            return self.client.exists(self.key(job_id)) == 1
        return int(self._queue(keys=[self.key(job_id), self.key(job_id, "queued")], args=chip_ids)) >= 0

    def queue_chips(
        self, job_id: str, entries: list[str], chipped_rows: int, stream_key: str, field: str
    ) -> bool:
        """Count the chips of ``entries`` (stream field values, ``row,col,x,y,size`` joined by ``;``) as
        queued and add one stream entry each, atomically — counted as queued before inference can see them,
        so totals never run behind "done" — and record that the first ``chipped_rows`` chip rows are wholly
        queued (what a streaming mosaicker waits for). False (nothing queued) if the job was deleted or has
        finished (cancelled) meanwhile."""
        keys = [self.key(job_id), self.key(job_id, "queued"), stream_key, self.key(job_id, "rows")]
        return int(self._queue_chips(keys=keys, args=[job_id, field, chipped_rows, *entries])) >= 0

    def stream_mosaic(self, job_id: str, mosaic_key: str) -> bool:
        """Queue the job's mosaic now, while it is chipped, exactly once (True if this call queued it)."""
        return bool(self._stream_mosaic(keys=[self.key(job_id), mosaic_key], args=[job_id]))

    def row_progress(self, job_id: str, first: int, n: int) -> tuple[JobState | None, int, list[RowCounts]]:
        """For a streaming mosaicker: the job's state, how many chip rows are chipped, and (queued, done,
        failed) chip counts of rows ``first .. first + n - 1`` — one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key(job_id), "status", "backend", "copies", "chipped_rows")
        names = [f"{p}{row}" for row in range(first, first + n) for p in "qdx"]
        pipe.hmget(self.key(job_id, "rows"), names)
        (status, backend, copies, chipped), counts = pipe.execute()
        if status is None:
            return None, 0, []
        state = JobState(status.decode(), (backend or b"").decode(), (copies or b"").decode())
        values = [int(v or 0) for v in counts]
        rows = [RowCounts(*values[i : i + 3]) for i in range(0, len(values), 3)]
        return state, int(chipped or 0), rows

    def failed_chips(self, job_id: str) -> set[str]:
        return {x.decode() for x in self.client.smembers(self.key(job_id, "failed"))}

    def finish_chipping(self, job_id: str, skipped: int) -> bool:
        """Mark chipping complete; True if every chip was already finished (the caller queues the mosaic)."""
        if not self.annotate(job_id, chipped=1, chips_skipped=skipped) or not self.move(job_id, "running"):
            return False
        return self._count(job_id, [], "done")[1]

    def chips_done(self, job_id: str, chip_ids: list[str]) -> tuple[int, bool]:
        """(chips counted now, job complete now). Idempotent: a chip already done or failed is not counted
        again, so a redelivered chip never counts twice."""
        return self._count(job_id, chip_ids, "done")

    def chips_done_and_ack(
        self, job_id: str, chip_ids: list[str], entries: list[str], stream: WorkStream, mosaic: WorkStream
    ) -> tuple[int, bool]:
        """``chips_done``, then ack ``entries`` of ``stream`` and, if this completed the job, queue its mosaic
        on ``mosaic`` — one atomic script, one round trip. A crash before it loses nothing (the entries are
        redelivered and count nothing twice); after it, nothing is left to do. Counted is -1 (nothing counted,
        the entries acked all the same) if the job was deleted or finished meanwhile."""
        keys = [self.key(job_id, p) for p in ("", "done", "queued", "done", "failed", "rows")]
        keys += [stream.key, mosaic.key]
        args = ["chips_done", time.time(), stream.group, job_id, len(entries), *entries, *chip_ids]
        counted, complete = self._record_ack(keys=keys, args=args)
        return int(counted), bool(complete)

    def chip_done(self, job_id: str, chip_id: str) -> tuple[bool, bool]:
        counted, complete = self._count(job_id, [chip_id], "done")
        return bool(counted), complete

    def chip_failed(self, job_id: str, chip_id: str, reason: str) -> tuple[bool, bool]:
        counted, complete = self._count(job_id, [chip_id], "failed")
        if counted:
            self.client.hset(self.key(job_id, "failures"), chip_id, reason)
        return bool(counted), complete

    def _count(self, job_id: str, chip_ids: list[str], which: str) -> tuple[int, bool]:
        keys = [self.key(job_id, p) for p in ("", which, "queued", "done", "failed", "rows")]
        counted, complete = self._record(keys=keys, args=[f"chips_{which}", time.time(), *chip_ids])
        return int(counted), bool(complete)

    def done_chips(self, job_id: str) -> set[str]:
        return {x.decode() for x in self.client.smembers(self.key(job_id, "done"))}

    def failures(self, job_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.key(job_id, "failures")).items()}

    def delete(self, job: Job) -> None:
        parts = ("", "queued", "done", "failed", "failures", "rows")
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*(self.key(job.id, p) for p in parts))
        pipe.zrem(f"{PREFIX}:jobs", job.id)
        pipe.srem(f"{PREFIX}:owner:{job.owner}", job.id)
        pipe.execute()
