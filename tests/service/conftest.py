"""Real service stacks for the HTTP tests: a private redis-server, `spikescan serve` under uvicorn in a
subprocess on a free loopback port, and `spikescan worker` processes — nothing in-process, nothing mocked."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import pytest
import rasterio
import redis

from models.package import ModelPackage
from workers import pipeline
from workers.redis_server import RedisServer

KEYS = ("key-alpha", "key-bravo")
# Private data dirs in mount namespaces of their own (``unshare --mount``) need root; elsewhere they are
# plain separate directories.
NAMESPACES = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """Redis + API + workers sharing one data dir; ``env`` is what every process gets. ``private_dirs``: each
    process gets a data dir of its own instead (``data_dir_of``), as hosts that share only Redis and the
    object store (``SPIKESCAN_STORAGE_URL``)."""

    def __init__(self, root: Path, models_dir: Path, private_dirs: bool = False, **env: str) -> None:
        self.root = root
        self.private_dirs = private_dirs
        self.data_dir = root / "data"
        self.inputs = root / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(root / "redis").start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SPIKESCAN_REDIS_URL": self.redis.url,
            "SPIKESCAN_DATA_DIR": str(self.data_dir),
            "SPIKESCAN_MODELS_DIR": str(models_dir),
            "SPIKESCAN_INPUT_ROOTS": str(self.inputs),
            "SPIKESCAN_API_KEYS": ",".join(KEYS),
            "SPIKESCAN_MAX_UPLOAD_MB": "4",
            "SPIKESCAN_CHIP_CLAIM_TIMEOUT_S": "2",
            "SPIKESCAN_MAX_CHIP_ATTEMPTS": "3",
            **env,
        }
        self.keys = KEYS
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[BinaryIO] = []
        self.api = self.spawn(
            "api", "serve", "--port", str(self.port), "--workers", "0", "--log-level", "warning"
        )
        self._wait_healthy()

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        env = {**self.env, "SPIKESCAN_DATA_DIR": str(self.data_dir_of(name))}
        command = [sys.executable, "-m", "spikescan.cli", *args]
        if self.private_dirs and NAMESPACES:
            # Its own mount namespace with a fresh tmpfs over private/: the process sees its own data dir and
            # nobody else's, as a separate host would (no shared folder to lean on by accident).
            mount = 'mount -t tmpfs -o size=512m tmpfs "$1" && mkdir -p "$2" && shift 2 && exec "$@"'
            private = self.root / "private"
            private.mkdir(exist_ok=True)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh",
                       str(private), str(self.data_dir_of(name)), *command]
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        return proc

    def data_dir_of(self, name: str) -> Path:
        return self.root / "private" / name / "data" if self.private_dirs else self.data_dir

    def seen_by(self, name: str, path: Path) -> Path:
        """``path`` as process ``name`` sees it (through /proc/<pid>/root when it has its own namespace)."""
        if self.private_dirs and NAMESPACES:
            return Path(f"/proc/{self.procs[name].pid}/root") / path.relative_to("/")
        return path

    def worker(self, name: str, role: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, "worker", "--role", role)

    def pipeline_workers(self, infer: int = 1) -> None:
        """One chipper, ``infer`` inference workers (infer-1, ...), one mosaicker."""
        self.worker("chipper", "chip")
        for i in range(1, infer + 1):
            self.worker(f"infer-{i}", "infer")
        self.worker("mosaicker", "mosaic")

    def _wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError((self.root / "api.log").read_text())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not become healthy")

    def client(self, key: str | None = KEYS[0]) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def rclient(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def wait_done(self, http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = http.get(f"/v1/jobs/{job_id}").json()
            if status["status"] in ("done", "failed", "cancelled"):
                return status  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {status}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.redis.stop()
        for log in self._logs:
            log.close()


def nothing_left(stack: Stack) -> Callable[[], None]:
    """Snapshot now; the returned check asserts no job record, staged upload or job directory was added."""
    r = stack.rclient()
    jobs_before = r.zcard("spikescan:jobs")
    dirs_before = set((stack.data_dir / "jobs").glob("*")) if (stack.data_dir / "jobs").exists() else set()

    def check() -> None:
        assert r.zcard("spikescan:jobs") == jobs_before
        uploads = stack.data_dir / "uploads"
        assert not uploads.exists() or list(uploads.iterdir()) == []
        now = set((stack.data_dir / "jobs").glob("*")) if (stack.data_dir / "jobs").exists() else set()
        assert now == dirs_before
        r.close()

    return check


def upload(
    http: httpx.Client, path: Path, model: str, filename: str | None = None, **fields: str
) -> httpx.Response:
    """POST ``path`` as the ``scene`` part (named ``filename``, default its own name) with form ``fields``."""
    with open(path, "rb") as fh:
        return http.post(
            "/v1/jobs",
            data={"model": model, **fields},
            files={"scene": (path.name if filename is None else filename, fh, "image/tiff")},
        )


@pytest.fixture()
def new_stack(tmp_path: Path, models_dir: Path) -> Iterator[Callable[..., Stack]]:
    """A private stack for one test (extra SPIKESCAN_* variables as keyword arguments), stopped afterwards."""
    made: list[Stack] = []

    def make(private_dirs: bool = False, **env: str) -> Stack:
        made.append(Stack(tmp_path / f"stack{len(made)}", models_dir, private_dirs, **env))
        return made[-1]

    yield make
    for s in made:
        s.stop()


@pytest.fixture()
def loopback_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, rgb_model: ModelPackage, landsat_model: ModelPackage
) -> Path:
    """One catalogue holding both random-weights test models, as a server's SPIKESCAN_MODELS_DIR."""
    root = tmp_path_factory.mktemp("catalogue")
    for pkg in (rgb_model, landsat_model):
        shutil.copytree(pkg.path, root / pkg.name)
    return root


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """The shared stack: API + one chipper, two inference workers, one mosaicker."""
    s = Stack(tmp_path_factory.mktemp("stack"), models_dir)
    try:
        s.pipeline_workers(infer=2)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def osbs_reference(osbs_tif: Path, rgb_model: ModelPackage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process pipeline's outputs for OSBS_029 — what the service must reproduce exactly."""
    out = tmp_path_factory.mktemp("osbs-ref")
    pipeline.run(osbs_tif, rgb_model, out)
    return out


def _read_bands(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="session")
def read_bands() -> Callable[[Path], np.ndarray]:
    """Every band of a raster as one array (for comparing outputs exactly)."""
    return _read_bands
