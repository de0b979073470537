"""Back-pressure, on real servers: a private redis-server given a small ``maxmemory`` (noeviction, as
deploy/redis.yaml runs it) and moto's S3 server behind a relay that the test switches off and on. New work is
refused with 429/503, a ``Retry-After`` and our JSON error body — before Redis is full, before an upload is
read, and never as a 500 — while reads go on; once the pressure is gone, new work is accepted again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from service.client import Client
from spikescan.errors import QueueFull
from tests.remote import Outage, S3Server
from tests.service.conftest import Stack, nothing_left, upload
from tests.service.test_object_storage import (
    _bucket_stack,
    local_run,  # noqa: F401 - fixture: the in-process layers
)


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def _cap_redis(stack: Stack, maxmemory: int) -> None:
    r = stack.rclient()
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", maxmemory)
    r.close()


def _full_queue(new_stack: Callable[..., Stack]) -> Stack:
    """A stack whose Redis is 90 % of its cap (past the default high water of 80 %): new work gets 429.
    No caching of the admission look: each request looks afresh."""
    stack = new_stack(SPIKESCAN_ADMISSION_CHECK_S="0")
    r = stack.rclient()
    used = int(r.info("memory")["used_memory"])
    r.close()
    _cap_redis(stack, int(used / 0.9))
    return stack


def test_new_jobs_are_refused_with_429_before_redis_reaches_its_cap_and_before_the_upload_is_read(
    new_stack: Callable[..., Stack], osbs_tif: Path, rgb_model: ModelPackage, tmp_path: Path
) -> None:
    stack = _full_queue(new_stack)
    left = nothing_left(stack)
    big = tmp_path / "big.tif"
    big.write_bytes(b"\0" * (5 << 20))  # over the stack's 4 MB cap: a 413 if the body were read first
    uri = {"uri": str(stack.inputs / "scene.tif"), "model": rgb_model.name}
    with stack.client() as http:
        _refused(upload(http, big, rgb_model.name), 429, "queue_full")
        _refused(upload(http, osbs_tif, rgb_model.name), 429, "queue_full")
        _refused(http.post("/v1/jobs", json=uri), 429, "queue_full")
        _refused(http.post("/v1/batches", json={"model": rgb_model.name, "uris": [uri["uri"]]}),
                 429, "queue_full")
        # The key is checked first (a stranger learns nothing of the load); reads are never refused.
        with stack.client(key="wrong") as stranger:
            assert stranger.post("/v1/jobs", json=uri).status_code == 401
        client = Client(stack.url, stack.keys[0])  # `spikescan submit`: one line naming the refusal, exit 2
        with pytest.raises(QueueFull, match=r"at capacity.*\(HTTP 429 queue_full\)"):
            client.upload(osbs_tif, rgb_model.name)
        client.close()
        assert http.get("/v1/jobs").status_code == 200 and http.get("/healthz").status_code == 200
        left()
        _cap_redis(stack, 0)  # the pressure is gone (jobs finished, records expired): accepted again
        accepted = upload(http, osbs_tif, rgb_model.name)
        assert accepted.status_code == 202, accepted.text


def test_a_write_redis_refuses_at_its_cap_is_a_429_and_records_nothing(
    new_stack: Callable[..., Stack], osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    # The admission look is cached (an hour here): a request can slip past it while Redis fills, and Redis at
    # maxmemory with noeviction refuses its write (OOM). That is the same 429, not a 500, and the upload's
    # file and any half-made record are gone.
    stack = new_stack(SPIKESCAN_ADMISSION_CHECK_S="3600", SPIKESCAN_REDIS_MEMORY_HIGH_WATER="1")
    (stack.inputs / "scene.tif").write_bytes(osbs_tif.read_bytes())
    uri = {"uri": str(stack.inputs / "scene.tif"), "model": rgb_model.name}
    with stack.client() as http:
        assert http.post("/v1/jobs", json=uri).status_code == 202  # the look: no cap, cached as fine
        left = nothing_left(stack)
        _cap_redis(stack, 1)  # every write is now refused by Redis itself
        _refused(upload(http, osbs_tif, rgb_model.name), 429, "queue_full")
        _refused(http.post("/v1/jobs", json=uri), 429, "queue_full")
        _refused(http.post("/v1/batches", json={"model": rgb_model.name, "uris": [uri["uri"]] * 2}),
                 429, "queue_full")
        left()
        _cap_redis(stack, 0)
        assert http.post("/v1/jobs", json=uri).status_code == 202


def _submit(stack: Stack, *args: str) -> subprocess.Popen[str]:
    """`spikescan submit` as a user runs it, against the stack's API."""
    cmd = [sys.executable, "-m", "spikescan.cli", "submit", *args, "--server", stack.url]
    env = stack.env | {"SPIKESCAN_API_KEY": stack.keys[0]}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_submit_waits_out_a_full_queue_and_is_accepted_once_it_drains(
    new_stack: Callable[..., Stack], osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    stack = _full_queue(new_stack)
    # Retry-After says 30 s; a 4 s budget makes the one wait 4 s (a wait never outlasts the budget).
    proc = _submit(stack, str(osbs_tif), "--model", rgb_model.name, "--max-wait", "4")
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "server busy (queue_full): retrying in 4 s" in first, first
    _cap_redis(stack, 0)  # the queue drains while the client waits
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, first + err
    assert err == ""  # one line per wait, and there was one wait
    job_id = out.split()[0]
    with stack.client() as http:
        assert http.get(f"/v1/jobs/{job_id}").json()["scene_name"] == osbs_tif.name


def test_submit_gives_up_after_max_wait_with_exit_status_75(
    new_stack: Callable[..., Stack], osbs_tif: Path, rgb_model: ModelPackage
) -> None:
    stack = _full_queue(new_stack)
    (stack.inputs / "scene.tif").write_bytes(osbs_tif.read_bytes())
    left = nothing_left(stack)
    t0 = time.monotonic()
    scene = str(stack.inputs / "scene.tif")
    proc = _submit(stack, "--uri", scene, "--model", rgb_model.name, "--max-wait", "2")
    out, err = proc.communicate(timeout=60)
    assert 2 <= time.monotonic() - t0 < 20
    lines = err.strip().splitlines()
    assert proc.returncode == 75 and out == "", err
    assert len(lines) == 2 and "server busy (queue_full): retrying in 2 s" in lines[0], err
    assert lines[1].startswith("spikescan: error: the server is at capacity"), err
    assert lines[1].endswith("(HTTP 429 queue_full); gave up after waiting 2 s (--max-wait)"), err
    # No patience at all: the refusal at once, the same status.
    proc = _submit(stack, str(osbs_tif), "--model", rgb_model.name, "--max-wait", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75 and "server busy" not in err and "HTTP 429 queue_full" in err, err
    left()


@pytest.fixture()
def outage(s3: S3Server) -> Iterator[Outage]:
    relay = Outage(s3.port)
    yield relay
    relay.down()


def test_a_bucket_that_is_down_is_a_503_with_retry_after_never_a_500(
    new_stack: Callable[..., Stack],
    s3: S3Server,
    outage: Outage,
    landsat_tif: Path,
    landsat_model: ModelPackage,
) -> None:
    # Every process reaches the bucket through the relay; the test's own client goes to moto directly.
    stack = _bucket_stack(new_stack, s3, AWS_ENDPOINT_URL=outage.endpoint, SPIKESCAN_ADMISSION_CHECK_S="0")
    with stack.client() as http:
        done = upload(http, landsat_tif, landsat_model.name).json()["id"]
        assert stack.wait_done(http, done)["status"] == "done"
        outage.down()
        left = nothing_left(stack)
        _refused(upload(http, landsat_tif, landsat_model.name), 503, "storage_unavailable")
        with landsat_tif.open("rb") as fh:
            batch = http.post("/v1/batches", files={"scene": fh}, data={"model": landsat_model.name})
        _refused(batch, 503, "storage_unavailable")
        for path in ("results/classes.tif", "results/item.json", "tiles/12/1000/1000.png?layer=scores"):
            _refused(http.get(f"/v1/jobs/{done}/{path}"), 503, "storage_unavailable")
        _refused(http.delete(f"/v1/jobs/{done}"), 503, "storage_unavailable")
        assert http.get(f"/v1/jobs/{done}").json()["status"] == "done"  # the record (Redis) still answers
        left()
        outage.up()
        assert http.get(f"/v1/jobs/{done}/results/classes.tif").status_code == 200
        again = upload(http, landsat_tif, landsat_model.name)
        assert again.status_code == 202, again.text
        assert stack.wait_done(http, again.json()["id"])["status"] == "done"


def test_a_job_whose_bucket_goes_down_mid_job_finishes_when_it_is_back(
    new_stack: Callable[..., Stack],
    s3: S3Server,
    outage: Outage,
    landsat_tif: Path,
    landsat_model: ModelPackage,
    local_run: Path,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    stack = _bucket_stack(new_stack, s3, AWS_ENDPOINT_URL=outage.endpoint, SPIKESCAN_BATCH_SIZE="16")
    with stack.client() as http:
        job_id = upload(http, landsat_tif, landsat_model.name).json()["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job_id}").json()["progress"]["chips_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        outage.down()  # chips are being stored, the mosaic is being followed
        # Long enough to spend every attempt of a chip many times over (a failed chip is handed back at once,
        # and reclaimed after the stack's 2 s claim timeout): the job must neither fail nor lose a chip.
        time.sleep(6)
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] in ("chipping", "running", "mosaicking")
        outage.up()
        logs = "".join(p.read_text() for p in stack.root.glob("*.log"))
        assert "waiting for it before taking more work" in logs  # the outage was felt, and waited out
        status = stack.wait_done(http, job_id, timeout_s=180)
        assert status["status"] == "done" and status["progress"]["chips_failed"] == 0, json.dumps(status)
        for name in ("classes.tif", "scores.tif"):
            (tmp_path / name).write_bytes(http.get(f"/v1/jobs/{job_id}/results/{name}").content)
    for name in ("classes.tif", "scores.tif"):
        with rasterio.open(tmp_path / name) as have, rasterio.open(local_run / name) as want:
            assert np.array_equal(have.read(), want.read()), name
