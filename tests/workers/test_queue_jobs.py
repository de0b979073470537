"""Job records on a real Redis: the state machine, chips counted once, completion signalled exactly once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from spikescan.errors import NotFound
from workers.jobs import JobStore, batch_key


@pytest.fixture()
def store(redis_client: redis.Redis, tmp_path: Path) -> JobStore:
    return JobStore(redis_client, tmp_path)


def _job(store: JobStore, job_id: str = "j1") -> str:
    store.create(job_id, "owner", "m", "sha256:x", Path("/x.tif"), uploaded=False)
    return job_id


def test_state_machine_moves_forward_and_final_states_never_change(store: JobStore) -> None:
    j = _job(store)
    assert not store.move(j, "running")  # cannot skip chipping
    for state in ("chipping", "chipping", "running", "mosaicking", "done"):
        assert store.move(j, state), state
    assert store.get(j).finished is not None
    for state in ("running", "failed", "cancelled", "queued"):
        assert not store.move(j, state)
    assert store.get(j).status == "done"
    with pytest.raises(NotFound):
        store.move("nope", "chipping")


def test_a_redelivered_chip_counts_once_and_a_failed_one_is_not_counted_done(store: JobStore) -> None:
    j = _job(store)
    store.move(j, "chipping")
    store.add_queued(j, ["r0c0", "r0c1", "r0c2"])
    store.add_queued(j, ["r0c0"])  # a chipper redelivery queues the same chip again
    assert store.get(j).chips_total == 3
    assert store.chip_done(j, "r0c0") == (True, False)
    assert store.chip_done(j, "r0c0") == (False, False)
    assert store.chip_failed(j, "r0c1", "boom") == (True, False)
    assert store.chip_done(j, "r0c1") == (False, False)  # a late success of a dead-lettered chip
    job = store.get(j)
    assert (job.chips_done, job.chips_failed) == (1, 1)
    assert store.failures(j) == {"r0c1": "boom"}


def test_completion_is_signalled_only_after_chipping_and_only_once(store: JobStore) -> None:
    j = _job(store)
    store.move(j, "chipping")
    store.add_queued(j, ["r0c0", "r0c1"])
    assert store.chip_done(j, "r0c0") == (True, False)
    assert store.chip_done(j, "r0c1") == (True, False)  # all queued chips done, but chipping not finished
    assert store.finish_chipping(j, skipped=5) is True  # the chipper is the one to queue the mosaic
    assert store.chip_done(j, "r0c1") == (False, False)
    assert store.get(j).chips_skipped == 5 and store.get(j).status == "running"


def test_concurrent_workers_agree_on_one_completion(store: JobStore, redis_server) -> None:  # type: ignore[no-untyped-def]
    j = _job(store)
    chips = [f"r{r}c{c}" for r in range(10) for c in range(10)]
    store.move(j, "chipping")
    store.add_queued(j, chips)
    store.finish_chipping(j, 0)
    completions: list[int] = []

    def worker() -> None:
        own = JobStore(redis.Redis.from_url(redis_server.url), store.data_dir)
        # Every worker reports every chip: the worst case of redelivery.
        completions.extend(1 for c in chips if own.chip_done(j, c)[1])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(completions) == 1
    assert store.get(j).chips_done == 100


def test_progress_rate_and_eta(store: JobStore) -> None:
    j = _job(store)
    store.move(j, "chipping")
    store.add_queued(j, [f"r0c{i}" for i in range(10)])
    store.finish_chipping(j, 0)
    for i in range(4):
        store.chip_done(j, f"r0c{i}")
    job = store.get(j)
    assert job.rate() is not None and job.rate() > 0
    eta = job.eta_s()
    assert eta is not None and eta == pytest.approx(6 / job.rate(), rel=0.2)


def test_delete_removes_every_key_of_the_job(store: JobStore, redis_client: redis.Redis) -> None:
    j = _job(store)
    store.move(j, "chipping")
    store.add_queued(j, ["r0c0"])
    store.chip_failed(j, "r0c0", "x")
    store.delete(store.get(j))
    assert store.find(j) is None
    assert [k for k in redis_client.scan_iter(f"*{j}*")] == []
    assert store.ids_of("owner") == []


def test_workers_cannot_resurrect_a_deleted_job(store: JobStore, redis_client: redis.Redis) -> None:
    j = _job(store)
    store.move(j, "chipping")
    store.delete(store.get(j))
    assert store.annotate(j, grid="{}") is False
    assert store.add_queued(j, ["r0c0"]) is False
    assert store.finish_chipping(j, 0) is False
    assert store.chips_done(j, ["r0c0"]) == (0, False)
    assert list(redis_client.scan_iter(f"*{j}*")) == [] and store.find(j) is None


def test_a_batch_list_expires_with_its_last_job_to_finish(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = JobStore(redis_client, tmp_path, result_ttl_s=600)
    first, second = (
        store.create(j, "owner", "m", "sha256:x", Path("/x.tif"), uploaded=False, batch="b1").id
        for j in ("j1", "j2")
    )
    store.record_batch("b1", [first, second])
    key = batch_key("b1")
    assert store.batch_jobs("b1") == [first, second] and redis_client.ttl(key) == -1  # both running
    store.move(first, "cancelled")
    assert 0 < redis_client.ttl(key) <= 600  # from the first job to finish: at most the TTL
    redis_client.persist(key)
    store.move(second, "failed", error="x")  # the last: the list goes with its record
    assert 0 < redis_client.ttl(key) <= 600 and 0 < redis_client.ttl(store.key(second)) <= 600
    # Every job finished before its batch was listed (tiny scenes, fast workers): expires all the same.
    late = store.create("j3", "owner", "m", "sha256:x", Path("/x.tif"), uploaded=False, batch="b2").id
    store.move(late, "cancelled")
    store.record_batch("b2", [late])
    assert 0 < redis_client.ttl(batch_key("b2")) <= 600


def test_a_batch_list_is_kept_without_a_result_ttl(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = JobStore(redis_client, tmp_path)  # result_ttl_s=0: kept until DELETE
    job = store.create("j1", "owner", "m", "sha256:x", Path("/x.tif"), uploaded=False, batch="b1").id
    store.record_batch("b1", [job])
    store.move(job, "cancelled")
    assert redis_client.ttl(batch_key("b1")) == -1
