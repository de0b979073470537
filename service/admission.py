"""Back-pressure: refuse new jobs and uploads *before* Redis or the object store is full or gone.

Redis runs with a memory cap and ``maxmemory-policy noeviction`` (deploy/redis.yaml): at the cap it refuses
every write, a worker's included, and evicting keys would silently lose jobs. So the API stops accepting new
work earlier, once ``used_memory`` passes ``SPIKESCAN_REDIS_MEMORY_HIGH_WATER`` of ``maxmemory`` (429
``queue_full``): the jobs already accepted keep the headroom they need to finish, and as they finish (their
running bookkeeping is deleted, their records expire) new jobs are accepted again. A store that does not
answer refuses new work too (503 ``storage_unavailable``) — before a multi-GB upload is streamed, not after.

Both looks are cached for ``SPIKESCAN_ADMISSION_CHECK_S``: one ``INFO memory`` and one ``HeadBucket`` per
interval per API process, whatever the request rate. Reads (status, results, tiles) are never refused here.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from spikescan.errors import QueueFull, StorageDown, Unavailable
from workers.objectstore import ObjectStore, StorageUnavailable

log = logging.getLogger("spikescan.service")


class Admission:
    def __init__(
        self, client: redis.Redis, objects: ObjectStore, high_water: float, check_every_s: float
    ) -> None:
        self.client = client
        self.objects = objects
        self.high_water = high_water
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._next = 0.0
        self._refusal: Unavailable | None = None

    def check(self) -> None:
        """Raise ``QueueFull`` or ``StorageDown`` if new work must wait; return if it may come in."""
        with self._lock:  # one probe per interval, even with many requests arriving at once
            now = time.monotonic()
            if now >= self._next:
                self._refusal = self._probe()
                self._next = now + self.check_every_s
            refusal = self._refusal
        if refusal is not None:
            # A fresh exception per request (the cached one would carry an earlier request's traceback).
            raise type(refusal)(refusal.raw, refusal.retry_after_s)

    def _probe(self) -> Unavailable | None:
        try:  # a Redis that is down raises ConnectionError: answered 503 queue_unavailable
            memory = self.client.info("memory")
        except redis.ResponseError as exc:  # a managed Redis that renames or forbids INFO: no memory check
            log.warning("cannot read Redis's INFO memory (%s); no back-pressure on Redis memory", exc)
            memory = {}
        used, cap = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if cap > 0 and used >= self.high_water * cap:
            log.warning(
                "refusing new jobs: Redis uses %d of %d bytes (high water %.2f)", used, cap, self.high_water
            )
            return QueueFull(
                f"the server is at capacity: its job queue (Redis) holds {used / cap:.0%} of its memory "
                "limit; new jobs are accepted again as running ones finish, retry later"
            )
        try:
            self.objects.check()
        except StorageUnavailable as exc:
            log.warning("refusing new jobs: storage unavailable: %s", exc)
            return StorageDown(
                "the result storage is not reachable right now; nothing was recorded, retry shortly"
            )
        return None
