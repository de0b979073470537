"""Work queues on Redis Streams with consumer groups: at-least-once delivery, reclaim, dead letters.

The guarantees the roles build on:

* An entry stays *pending* (owned by the consumer that read it) until ``ack``; a worker acks only after it
  has stored the entry's results, so a crash never loses work.
* A pending entry idle for longer than ``claim_timeout_s`` (its consumer died or hung) is taken over by a
  ``take`` of any consumer, via XAUTOCLAIM, within ``claim_timeout_s / 4`` (at most 1 s) of becoming idle
  that long: a consumer looks for such entries at most that often, not on every take, which saves a round
  trip per batch. Reclaim bumps the entry's delivery count.
* ``retry`` hands a failed entry back at once (XCLAIM ... IDLE marks it as long idle, JUSTID keeps the count).
* An entry delivered more than ``max_attempts`` times, or failing on its last attempt, is moved to the
  dead-letter list ``<stream>:dead`` (JSON records) and acked; the caller is told so it can report it.
* Acked entries are deleted (XDEL), so ``XLEN`` is the backlog: pending plus not yet delivered. That number is
  what ``lag`` reports and what an autoscaler should watch.

Processing is at-least-once, so whatever a handler writes must be idempotent (see ``workers.jobs``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

PREFIX = "spikescan"
# Dead-letter records kept per stream (the newest): enough to diagnose a bad day, bounded in Redis memory.
DEAD_LETTERS_KEPT = 10_000


@dataclass(frozen=True)
class Delivery:
    id: str
    fields: dict[str, str]
    attempts: int  # deliveries so far, this one included


@dataclass(frozen=True)
class DeadLetter:
    delivery: Delivery
    reason: str


def stream_key(name: str) -> str:
    return f"{PREFIX}:stream:{name}"


class WorkStream:
    """One stream and its single consumer group; every worker of a role is a consumer in that group."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        claim_timeout_s: float,
        max_attempts: int,
        split: Callable[[dict[str, str]], list[dict[str, str]]] | None = None,
    ) -> None:
        self.client = client
        # An entry that stands for several items (the infer stream's batches of chips) is dead-lettered as one
        # record per item: ``split`` says how to divide its fields.
        self.split = split
        self.name = name
        self.key = stream_key(name)
        self.group = name
        self.dead_key = f"{self.key}:dead"
        self.claim_timeout_ms = max(1, int(claim_timeout_s * 1000))
        self.max_attempts = max_attempts
        self._reclaim_every_s = min(1.0, claim_timeout_s / 4)
        self._next_reclaim = 0.0  # time.monotonic() of the next XAUTOCLAIM
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def add(self, fields: dict[str, str]) -> str:
        return _text(self.client.xadd(self.key, fields))

    def add_many(self, items: Iterable[dict[str, str]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for fields in items:
            pipe.xadd(self.key, fields)
            n += 1
        pipe.execute()
        return n

    def take(
        self, consumer: str, count: int, block_ms: int = 1000
    ) -> tuple[list[Delivery], list[DeadLetter]]:
        """Up to ``count`` entries: reclaimed stale ones first, then new ones (waiting up to ``block_ms``).

        Entries that have now been delivered more than ``max_attempts`` times are dead-lettered instead of
        returned: a chip that keeps killing its worker must not kill every worker in turn.
        """
        try:
            reclaimed = self._reclaim(consumer, count) if time.monotonic() >= self._next_reclaim else []
            new = []
            if len(reclaimed) < count:
                new = self._read_new(consumer, count - len(reclaimed), block_ms if not reclaimed else 0)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream is gone: a Redis without persistence restarted, or was flushed. Its jobs are lost
            # with it (docs/operations.md); recreate the group so that new jobs are served.
            self._ensure_group()
            return [], []
        # A new entry is on its first delivery by definition; only reclaimed ones need their count looked up.
        attempts = self._attempts([entry_id for entry_id, _ in reclaimed])
        live: list[Delivery] = []
        dead: list[DeadLetter] = []
        for entry_id, fields in reclaimed + new:
            d = Delivery(entry_id, fields, attempts.get(entry_id, 1))
            if d.attempts > self.max_attempts:
                reason = f"delivered {d.attempts - 1} times without being finished (worker died or timed out)"
                dead.append(self._bury(d, reason))
            else:
                live.append(d)
        return live, dead

    def _reclaim(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xautoclaim(
            self.key, self.group, consumer, self.claim_timeout_ms, "0-0", count=count
        )
        messages = reply[1] if len(reply) > 1 else []
        # A full answer may have left more behind: look again on the next take; otherwise not for a while.
        self._next_reclaim = 0.0 if len(messages) >= count else time.monotonic() + self._reclaim_every_s
        # Redis 6.2 returns nil entries for pending ids whose entry was deleted; nothing to do for those.
        return [(_text(i), _fields(f)) for i, f in messages if i is not None and f]

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xreadgroup(
            self.group, consumer, {self.key: ">"}, count=count, block=block_ms or None
        )
        if not reply:
            return []
        return [(_text(i), _fields(f)) for i, f in reply[0][1]]

    def _attempts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.key, self.group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for entry_id, rows in zip(ids, pipe.execute(), strict=True):
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    def ack(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.key, self.group, *ids)
            pipe.xdel(self.key, *ids)
            pipe.execute()

    def retry(
        self, delivery: Delivery, consumer: str, reason: str, parts: list[dict[str, str]] | None = None
    ) -> DeadLetter | None:
        """A failed attempt: dead-letter it if that was the last allowed one, else hand it back at once.
        ``parts``: the dead-letter records to write instead of ``split``'s (e.g. only the failed items)."""
        if delivery.attempts >= self.max_attempts:
            return self._bury(delivery, f"failed {delivery.attempts} times; last error: {reason}", parts)
        self.client.xclaim(
            self.key, self.group, consumer, 0, [delivery.id], idle=self.claim_timeout_ms, justid=True
        )
        self._next_reclaim = 0.0  # handed back to be taken again at once
        return None

    def touch(self, delivery: Delivery, consumer: str) -> None:
        """Heartbeat for a long task (chipping or mosaicking a big scene): reset its idle time, so it is not
        reclaimed from a worker that is alive and still busy with it."""
        self.client.xclaim(self.key, self.group, consumer, 0, [delivery.id], justid=True)

    def heartbeat(self, delivery: Delivery, consumer: str) -> Callable[[], None]:
        """A ``touch`` to call as often as convenient (e.g. once per chip row): it reaches Redis at most every
        ``claim_timeout_s / 4``, which keeps the task well inside its claim timeout without a round trip per
        call."""
        every_s = self.claim_timeout_ms / 4000
        due = time.monotonic() + every_s

        def beat() -> None:
            nonlocal due
            if time.monotonic() >= due:
                self.touch(delivery, consumer)
                due = time.monotonic() + every_s

        return beat

    def _bury(
        self, delivery: Delivery, reason: str, parts: list[dict[str, str]] | None = None
    ) -> DeadLetter:
        if parts is None:
            parts = self.split(delivery.fields) if self.split else [delivery.fields]
        now = time.time()
        records = [
            {"stream": self.name, "id": delivery.id, "fields": fields, "attempts": delivery.attempts,
             "reason": reason, "time": now}
            for fields in parts
        ]
        pipe = self.client.pipeline(transaction=True)
        if records:
            pipe.rpush(self.dead_key, *(json.dumps(r) for r in records))
            # An operator's log, not the record of truth (each failed chip is also in its job's ``failed``
            # set and ``failures``, which expire with the job): the newest are kept, so that a flood of
            # failures cannot fill Redis.
            pipe.ltrim(self.dead_key, -DEAD_LETTERS_KEPT, -1)
        pipe.xack(self.key, self.group, delivery.id)
        pipe.xdel(self.key, delivery.id)
        pipe.execute()
        return DeadLetter(delivery, reason)

    def prune_consumers(self, idle_s: float) -> list[str]:
        """Forget consumers idle for ``idle_s`` that hold nothing (workers that died and were reclaimed
        from), so the consumer count reflects the live workers."""
        gone = []
        for c in self.client.xinfo_consumers(self.key, self.group):
            if int(c["pending"]) == 0 and int(c["idle"]) > idle_s * 1000:
                self.client.xgroup_delconsumer(self.key, self.group, c["name"])
                gone.append(_text(c["name"]))
        return gone

    def dead_letters(self, limit: int = 100) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.client.lrange(self.dead_key, -limit, -1)]

    def lag(self) -> dict[str, int]:
        """Backlog for autoscaling: entries not yet acked, those being worked on, and the consumers."""
        backlog = int(self.client.xlen(self.key))
        info = {_text(g["name"]): g for g in self.client.xinfo_groups(self.key)}
        group = info.get(self.group, {})
        return {
            "backlog": backlog,
            "pending": int(group.get("pending", 0)),
            "consumers": int(group.get("consumers", 0)),
            "dead": int(self.client.llen(self.dead_key)),
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(raw: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Streams:
    """The three queues of the pipeline: scenes to chip, chips to infer, jobs to mosaic."""

    chip: WorkStream
    infer: WorkStream
    mosaic: WorkStream

    @classmethod
    def open(cls, client: redis.Redis, claim_timeout_s: float, max_attempts: int) -> Streams:
        return cls(
            WorkStream(client, "chip", claim_timeout_s, max_attempts),
            WorkStream(client, "infer", claim_timeout_s, max_attempts, split=split_chips),
            WorkStream(client, "mosaic", claim_timeout_s, max_attempts),
        )

    def all(self) -> list[WorkStream]:
        return [self.chip, self.infer, self.mosaic]


def split_chips(fields: dict[str, str]) -> list[dict[str, str]]:
    """An ``infer`` entry (a batch of chips, ``chips`` = ``row,col,x,y,size`` joined by ``;``) as one
    record per chip, each with the fields of a one-chip entry."""
    if "chips" not in fields:
        return [fields]
    return [{**fields, "chips": chip} for chip in fields["chips"].split(";")]
