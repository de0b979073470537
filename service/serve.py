"""``spikescan serve``: the API, plus — on the embedded default — a private Redis and a worker process.

* No ``SPIKESCAN_REDIS_URL``: start ``workers.redis_server`` on a unix socket in the data dir and one worker
  process serving every role (``--workers N`` for more), so one command gives a working service.
* With ``SPIKESCAN_REDIS_URL``: use that Redis and run no workers unless ``--workers N`` asks for them.
* No API keys configured: open access, so listen on the loopback interface only, and say so.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import uvicorn

from service.app import create_app
from spikescan.config import Settings
from workers.redis_server import RedisServer

LOOPBACK = "127.0.0.1"
_MIN_RESTART_PAUSE_S = 1.0
_MAX_RESTART_PAUSE_S = 60.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_host(requested: str, settings: Settings) -> str:
    if settings.api_keys:
        return requested
    host = requested if _is_loopback(requested) else LOOPBACK
    ignored = f" (not {requested})" if host != requested else ""
    print(
        f"spikescan: no API keys configured (SPIKESCAN_API_KEYS): open access, so listening on {host} "
        f"only{ignored}",
        file=sys.stderr,
    )
    return host


class WorkerPool:
    """The worker processes ``spikescan serve`` runs itself, restarted when one dies (a crash, the OOM killer,
    a SIGKILL): what it held unacknowledged is reclaimed from Redis by the others or by its replacement, so a
    restart is all that is needed for the job to finish. A worker that keeps dying right after its start is
    restarted with growing pauses instead of in a tight loop."""

    def __init__(self, n: int, settings: Settings, role: str = "all") -> None:
        self.env = {
            **os.environ,
            "SPIKESCAN_REDIS_URL": str(settings.redis_url),
            "SPIKESCAN_DATA_DIR": str(settings.data_dir),
        }
        self.cmd = [sys.executable, "-m", "spikescan.cli", "worker", "--role", role]
        self.procs = [self._spawn() for _ in range(n)]
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        if n:
            self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        born = [time.monotonic()] * len(self.procs)
        pause = [_MIN_RESTART_PAUSE_S] * len(self.procs)
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc.poll() is None:
                    continue
                # Back off only for a worker that cannot stay up; one that ran a while restarts at once.
                lived = time.monotonic() - born[i]
                pause[i] = _MIN_RESTART_PAUSE_S if lived > 60 else min(pause[i] * 2, _MAX_RESTART_PAUSE_S)
                print(
                    f"spikescan: worker process {proc.pid} exited with status {proc.returncode}; "
                    f"restarting it in {pause[i]:.0f} s",
                    file=sys.stderr,
                )
                if self._stopping.wait(pause[i]):
                    return
                self.procs[i] = self._spawn()
                born[i] = time.monotonic()
                self.restarts += 1

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.model_copy(update={"data_dir": Path(settings.data_dir).resolve()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    host = choose_host(args.host, settings)
    n_workers = args.workers
    with ExitStack() as stack:
        if not settings.redis_url:
            server = stack.enter_context(RedisServer(settings.data_dir / "redis"))
            settings = settings.model_copy(update={"redis_url": server.url})
            n_workers = 1 if n_workers is None else n_workers
            print(
                f"spikescan: embedded Redis on {server.socket} (data in {settings.data_dir})", file=sys.stderr
            )
        pool = WorkerPool(n_workers or 0, settings)
        stack.callback(pool.stop)
        if pool.procs:
            print(
                f"spikescan: {len(pool.procs)} worker process(es) serving chip, infer, mosaic "
                "(restarted if they die)",
                file=sys.stderr,
            )
        # uvicorn re-raises the SIGTERM it caught once it has shut down; turned into SystemExit here, it
        # unwinds through this ExitStack, which stops the workers and the private Redis.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        uvicorn.run(create_app(settings), host=host, port=args.port, log_level=args.log_level)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
