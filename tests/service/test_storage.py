"""Streaming multipart reception: chunked to disk, capped while streaming, nothing left behind on failure."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from service.storage import Upload, receive_multipart, sweep_stale_uploads
from spikescan.errors import InvalidInput, PayloadTooLarge


def _multipart(scene: Path, **fields: str) -> tuple[str, bytes]:
    with open(scene, "rb") as fh:
        request = httpx.Request(
            "POST", "http://x/", data=fields, files={"scene": (scene.name, fh, "image/tiff")}
        )
        body = request.read()
    return request.headers["content-type"], body


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _receive(ctype: str, body: bytes, staging: Path, cap: int, chunk: int = 997) -> Upload:
    return anyio.run(receive_multipart, ctype, _chunks(body, chunk), staging, cap)


def test_a_scene_arrives_byte_for_byte_in_small_chunks(tmp_path: Path, osbs_tif: Path) -> None:
    ctype, body = _multipart(osbs_tif, model="rand-rgb", stride="24")
    upload = _receive(ctype, body, tmp_path / "staging", cap=10 << 20)
    assert upload.fields == {"model": "rand-rgb", "stride": "24"}
    [f] = upload.files
    assert (f.field, f.filename, f.size) == ("scene", "OSBS_029.tif", osbs_tif.stat().st_size)
    assert f.path.read_bytes() == osbs_tif.read_bytes()
    upload.discard()
    assert list((tmp_path / "staging").iterdir()) == []


def test_the_cap_is_enforced_while_streaming_and_leaves_nothing(tmp_path: Path, osbs_tif: Path) -> None:
    ctype, body = _multipart(osbs_tif, model="m")
    with pytest.raises(PayloadTooLarge, match="OSBS_029.tif: larger than"):
        _receive(ctype, body, tmp_path / "staging", cap=100_000)
    assert list((tmp_path / "staging").iterdir()) == []


def test_malformed_bodies_are_refused_and_leave_nothing(tmp_path: Path, osbs_tif: Path) -> None:
    ctype, body = _multipart(osbs_tif, model="m")
    with pytest.raises(InvalidInput, match="multipart/form-data"):
        _receive("application/octet-stream", body, tmp_path / "staging", cap=10 << 20)
    with pytest.raises(InvalidInput, match="malformed multipart"):
        _receive(ctype, body[:2000] + b"\r\n--wrong-boundary\r\nbroken", tmp_path / "staging", cap=10 << 20)
    assert not (tmp_path / "staging").exists() or list((tmp_path / "staging").iterdir()) == []


def test_sweep_removes_only_old_staged_files(tmp_path: Path) -> None:
    old, fresh, other = tmp_path / "a.part", tmp_path / "b.part", tmp_path / "keep.txt"
    for p in (old, fresh, other):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    os.utime(other, (time.time() - 2 * 86400,) * 2)
    assert sweep_stale_uploads(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.part", "keep.txt"]
