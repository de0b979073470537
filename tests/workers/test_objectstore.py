"""The storage seam against a real directory and a real S3-compatible server (moto's, its own process, over
HTTP): the same operations behave the same; a large file goes up in parts from disk; chip results round-trip
through a bucket; ``spikescan predict --out s3://…`` writes the layers of the local run there."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from models.package import ModelPackage
from tests.remote import S3Server
from tests.workers.test_roles_chipstore import _result
from workers import chipstore, pipeline
from workers.chipstore import ChipSet
from workers.objectstore import LocalStore, ObjectStore, S3Store, StorageUnavailable

BUCKET = "objectstore-tests"


@pytest.fixture()
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    client = s3.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        request.getfixturevalue("aws_env")
        yield S3Store(BUCKET, f"t-{os.getpid()}-{tmp_path.name}")


def test_both_stores_put_read_list_range_and_delete_alike(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("jobs/a/chips/r0/x.npz", b"0123456789")
    store.put_bytes("jobs/a/chips/r0/y.npz", b"abc")
    store.put_bytes("jobs/a/chips/r1/z.npz", b"def")
    assert store.names("jobs/a/chips/r0/") == ["jobs/a/chips/r0/x.npz", "jobs/a/chips/r0/y.npz"]
    assert store.get_bytes("jobs/a/chips/r0/x.npz") == b"0123456789"
    assert store.get_bytes("jobs/a/nothing") is None and store.size("jobs/a/nothing") is None
    assert store.size("jobs/a/chips/r0/x.npz") == 10
    assert b"".join(store.read_range("jobs/a/chips/r0/x.npz", 2, 5)) == b"2345"
    staged = tmp_path / "staged.part"
    staged.write_bytes(b"scene")
    store.move_in("jobs/a/scene.tif", staged)
    assert not staged.exists() and store.get_bytes("jobs/a/scene.tif") == b"scene"
    store.delete_prefix("jobs/a/chips/")
    assert store.names("jobs/a/chips/r0/") == [] and store.get_bytes("jobs/a/scene.tif") == b"scene"
    store.delete_prefix("jobs/a/")
    assert store.get_bytes("jobs/a/scene.tif") is None
    store.delete_prefix("jobs/never/")  # nothing there: no error


def test_chip_results_round_trip_through_the_store(store: ObjectStore) -> None:
    chips = ChipSet(store, "jobs/b/chips/")
    batch = [_result(0, 1, 1), _result(0, 3, 2), _result(1, 0, 3)]
    chipstore.store(chips, batch)
    chipstore.store(chips, batch)  # redelivered: same object, read once
    row0 = chipstore.load_row(chips, 0, {"r0c1", "r0c3"})
    assert [r.chip.id for r in row0] == ["r0c1", "r0c3"]
    assert np.array_equal(row0[1].scores, batch[1].scores)
    assert [r.chip.id for r in chipstore.load_row(chips, 1, None)] == ["r1c0"]
    chips.delete()
    assert chipstore.load_row(chips, 0, {"r0c1"}) == []


def test_a_large_upload_goes_to_the_bucket_in_parts_from_disk(aws_env: S3Server, tmp_path: Path) -> None:
    big = tmp_path / "big.part"
    data = np.random.default_rng(0).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes()
    big.write_bytes(data)
    store = S3Store(BUCKET, "parts", part_bytes=5 << 20)  # S3's smallest part
    store.move_in("big.tif", big)
    head = aws_env.client().head_object(Bucket=BUCKET, Key="parts/big.tif")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert not big.exists() and store.size("big.tif") == len(data)
    seam = 5 << 20  # a range across the first part boundary
    assert b"".join(store.read_range("big.tif", seam - 3, seam + 2)) == data[seam - 3 : seam + 3]


def test_a_store_that_is_down_is_storage_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.remote import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = S3Store(BUCKET, "down")
    with pytest.raises(StorageUnavailable, match=f"s3://{BUCKET}/down/"):
        store.get_bytes("x")


def test_predict_writes_its_outputs_to_a_bucket(
    aws_env: S3Server, landsat_tif: Path, landsat_model: ModelPackage, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    pipeline.run(landsat_tif, landsat_model, local)
    done = subprocess.run(
        [sys.executable, "-m", "spikescan.cli", "predict", str(landsat_tif),
         "--model", str(landsat_model.path), "--out", f"s3://{BUCKET}/predict/run1", "--quiet"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **aws_env.env},
    )
    assert done.returncode == 0, done.stderr
    assert f"s3://{BUCKET}/predict/run1" in done.stdout
    got = tmp_path / "got"
    got.mkdir()
    client = aws_env.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="predict/run1/")["Contents"]}
    assert {f"predict/run1/{n}" for n in ("classes.tif", "scores.tif", "report.json", "item.json")} <= keys
    for name in ("classes.tif", "scores.tif"):
        client.download_file(BUCKET, f"predict/run1/{name}", str(got / name))
        with rasterio.open(got / name) as a, rasterio.open(local / name) as b:
            assert a.transform == b.transform and np.array_equal(a.read(), b.read()), name
