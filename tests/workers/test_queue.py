"""Queue semantics on a real redis-server: ack after storing, reclaim from dead consumers, dead letters."""

from __future__ import annotations

import time

import pytest
import redis

from workers import queue
from workers.queue import Streams, WorkStream


def _stream(client: redis.Redis, claim_s: float = 0.3, attempts: int = 3) -> WorkStream:
    return WorkStream(client, "t", claim_timeout_s=claim_s, max_attempts=attempts)


def test_unacked_entries_stay_pending_and_are_not_given_to_another_live_consumer(
    redis_client: redis.Redis,
) -> None:
    s = _stream(redis_client, claim_s=30)
    s.add_many({"n": str(i)} for i in range(5))
    first, _ = s.take("a", 3, block_ms=10)
    second, _ = s.take("b", 10, block_ms=10)
    assert [d.fields["n"] for d in first] == ["0", "1", "2"]
    assert [d.fields["n"] for d in second] == ["3", "4"]
    assert s.lag() == {"backlog": 5, "pending": 5, "consumers": 2, "dead": 0}
    s.ack(d.id for d in first)
    assert s.lag()["backlog"] == 2 and s.lag()["pending"] == 2


def test_pending_chips_of_a_dead_consumer_are_reclaimed_after_the_timeout(redis_client: redis.Redis) -> None:
    s = _stream(redis_client, claim_s=0.3)
    s.add_many({"n": str(i)} for i in range(4))
    held, _ = s.take("dead-worker", 2, block_ms=10)
    assert len(held) == 2
    early, _ = s.take("survivor", 10, block_ms=10)
    assert {d.fields["n"] for d in early} == {"2", "3"}  # not yet: the holder may be alive
    s.ack(d.id for d in early)
    time.sleep(0.4)
    later, _ = s.take("survivor", 10, block_ms=10)
    assert {d.id for d in later} == {d.id for d in held}
    assert all(d.attempts == 2 for d in later)
    s.ack(d.id for d in later)
    assert s.lag()["backlog"] == 0


def test_a_chip_that_keeps_failing_goes_to_the_dead_letter_list(redis_client: redis.Redis) -> None:
    s = _stream(redis_client, claim_s=5, attempts=3)
    s.add({"chip": "r0c0"})
    seen = []
    for _ in range(3):
        got, dead = s.take("w", 1, block_ms=10)
        assert not dead and len(got) == 1
        seen.append(got[0].attempts)
        letter = s.retry(got[0], "w", "boom")
    assert seen == [1, 2, 3]  # retry hands it back at once, not after the 5 s claim timeout
    assert letter is not None and "failed 3 times" in letter.reason and "boom" in letter.reason
    assert s.take("w", 1, block_ms=10) == ([], [])
    [record] = s.dead_letters()
    assert record["fields"] == {"chip": "r0c0"} and record["attempts"] == 3
    assert s.lag() == {"backlog": 0, "pending": 0, "consumers": 1, "dead": 1}


def test_a_chip_whose_workers_keep_dying_is_dead_lettered_on_its_next_delivery(
    redis_client: redis.Redis,
) -> None:
    s = _stream(redis_client, claim_s=0.05, attempts=2)
    s.add({"chip": "r1c2"})
    for worker in ("w1", "w2"):  # each takes it and "dies" (never acks)
        got, dead = s.take(worker, 1, block_ms=10)
        assert len(got) == 1 and not dead
        time.sleep(0.1)
    got, dead = s.take("w3", 1, block_ms=10)
    assert got == [] and len(dead) == 1
    assert "worker died" in dead[0].reason
    assert s.lag()["backlog"] == 0 and s.lag()["dead"] == 1


def test_touch_keeps_a_long_task_from_being_reclaimed(redis_client: redis.Redis) -> None:
    s = _stream(redis_client, claim_s=0.3)
    s.add({"job": "j1"})
    [d], _ = s.take("busy", 1, block_ms=10)
    for _ in range(4):
        time.sleep(0.15)
        s.touch(d, "busy")
        assert s.take("other", 1, block_ms=0) == ([], [])
    time.sleep(0.4)
    [again], _ = s.take("other", 1, block_ms=10)
    assert again.id == d.id


def test_streams_share_one_redis_and_group_creation_is_idempotent(redis_client: redis.Redis) -> None:
    a = Streams.open(redis_client, 1.0, 3)
    b = Streams.open(redis_client, 1.0, 3)  # a second worker starting up
    a.infer.add({"x": "1"})
    got, _ = b.infer.take("w", 5, block_ms=10)
    assert [d.fields for d in got] == [{"x": "1"}]
    assert b.chip.take("w", 5, block_ms=10) == ([], [])


def test_idle_consumers_holding_nothing_are_forgotten(redis_client: redis.Redis) -> None:
    s = _stream(redis_client, claim_s=30)
    s.add_many({"n": str(i)} for i in range(3))
    s.take("holder", 1, block_ms=10)
    for name in ("finished", "also-finished"):
        [d], _ = s.take(name, 1, block_ms=10)
        s.ack([d.id])
    assert s.prune_consumers(idle_s=10) == []  # all of them were just active
    time.sleep(0.2)
    assert sorted(s.prune_consumers(idle_s=0.1)) == ["also-finished", "finished"]
    assert s.lag()["consumers"] == 1  # the one still holding an entry stays until it is reclaimed


def test_the_dead_letter_list_keeps_only_the_newest_records(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "DEAD_LETTERS_KEPT", 3)  # the bound, made small; Redis is real
    s = _stream(redis_client, claim_s=5, attempts=1)
    s.add_many({"chip": f"r0c{i}"} for i in range(5))
    for _ in range(5):
        [got], _ = s.take("w", 1, block_ms=10)
        assert s.retry(got, "w", "boom") is not None
    assert [r["fields"]["chip"] for r in s.dead_letters()] == ["r0c2", "r0c3", "r0c4"]
