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
from contextlib import ExitStack
from pathlib import Path

import uvicorn

from service.app import create_app
from spikescan.config import Settings
from workers.redis_server import RedisServer

LOOPBACK = "127.0.0.1"


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


def start_workers(n: int, settings: Settings, role: str = "all") -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SPIKESCAN_REDIS_URL": str(settings.redis_url),
        "SPIKESCAN_DATA_DIR": str(settings.data_dir),
    }
    cmd = [sys.executable, "-m", "spikescan.cli", "worker", "--role", role]
    return [subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL) for _ in range(n)]


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
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
        procs = start_workers(n_workers or 0, settings)
        stack.callback(stop_workers, procs)
        if procs:
            print(f"spikescan: {len(procs)} worker process(es) serving chip, infer, mosaic", file=sys.stderr)
        # uvicorn re-raises the SIGTERM it caught once it has shut down; turned into SystemExit here, it
        # unwinds through this ExitStack, which stops the workers and the private Redis.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        uvicorn.run(create_app(settings), host=host, port=args.port, log_level=args.log_level)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
