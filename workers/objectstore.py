"""Where a job's files live: one interface, a local directory (the default) or an S3 bucket.

``SPIKESCAN_STORAGE_URL`` selects it (``open_store``): unset or a path is a directory (the data dir by
default: today's layout, byte for byte), ``s3://bucket/prefix`` a bucket, reached with obstore and the
standard ``AWS_*`` environment (``AWS_ENDPOINT_URL`` for S3-compatible stores). With a bucket, hosts share
only Redis and the bucket: nothing any role writes must be read from another role's disk.

obstore (Rust's ``object_store``) rather than boto3 or s3fs: on every operation the pipeline makes it costs
3.7-5.2x less client CPU per operation than boto3 (9x per object deleted), and s3fs costs as much as boto3
or more
(``spikescan bench objectstore``, docs/operations.md); an inference worker that PUTs a chip-row object per
batch and a mosaicker that lists and GETs them spend that CPU beside inference.

Keys are ``/``-separated paths relative to the store's root (``jobs/<id>/chips/r3/<digest>.npz``). A key
that holds a scene is handed to GDAL through ``ref``: a local path, or an ``s3://`` URL that
``workers.sources`` opens with /vsis3/.

A store that cannot be reached raises ``StorageUnavailable`` — not a ``SpikescanError``: it is nobody's
input fault, so a worker retries the task through the queue and the API answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

# Parts of a multipart upload: large enough that a 2 GB scene is ~128 parts, small enough that the two
# parts in flight per upload hold 32 MB at most.
PART_BYTES = 16 << 20
STREAM_CHUNK = 256 << 10
T = TypeVar("T")


class StorageUnavailable(OSError):
    """The object store did not answer (down, unreachable, throttling beyond retries)."""


class ObjectStore(ABC):
    """The few operations spikescan needs of a store; every key is relative to the store's root."""

    @property
    def local_root(self) -> Path | None:
        """The directory behind the store, if it is one (None for a bucket)."""
        return None

    @abstractmethod
    def ref(self, key: str) -> str:
        """What ``workers.sources`` opens for ``key``: a path or an ``s3://`` URL."""

    @abstractmethod
    def move_in(self, key: str, path: Path) -> None:
        """Store the local file ``path`` under ``key`` and remove it (a rename locally, a streamed multipart
        upload to a bucket: never the whole file in memory)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` whole: a reader sees all of it or nothing."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""

    @abstractmethod
    def names(self, prefix: str) -> list[str]:
        """Keys of the objects under ``prefix`` (a "directory": ``…/``), sorted."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Bytes of the object, None if there is none."""

    @abstractmethod
    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` .. ``end`` (inclusive) of the object, in chunks (bounded memory)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``; nothing there is no error."""

    def check(self) -> None:  # noqa: B027 - a directory needs no probe: a full one is a 507 on write
        """Raise ``StorageUnavailable`` if the store cannot be reached now (the API's admission probe)."""

    def publish_dir(self, directory: Path, prefix: str, last: str | None = None) -> None:
        """Store every file of ``directory`` under ``prefix`` (``last`` after the others: the completeness
        marker a reader trusts), then remove the directory."""
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        files.sort(key=lambda p: p.name == last)
        for path in files:
            self.move_in(prefix + path.name, path)
        shutil.rmtree(directory, ignore_errors=True)


class LocalStore(ObjectStore):
    """A directory (the data dir unless ``SPIKESCAN_STORAGE_URL`` names another): today's behaviour."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def local_root(self) -> Path:
        return self.root

    def path(self, key: str) -> Path:
        return self.root / key

    def ref(self, key: str) -> str:
        return str(self.path(key))

    def move_in(self, key: str, path: Path) -> None:
        target = self.path(key)
        if target == path:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)  # a rename on one filesystem (the usual case), a copy across two

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        try:  # a chip row's directory exists after its first batch: no mkdir syscall for every later one
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:  # written under a temporary name and renamed: a reader sees a whole file or none
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def names(self, prefix: str) -> list[str]:
        base = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        try:
            # One scandir, not is_dir() then iterdir(): the mosaicker removes a finished job's chip rows while
            # API threads may still list them for preview tiles, and a directory gone between the two calls
            # was a 500 there. Gone now is the same answer as gone before: nothing under the prefix.
            with os.scandir(self.path(prefix)) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(base + name for name in names)

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with open(self.path(key), "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(STREAM_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


class S3Store(ObjectStore):
    """A bucket through obstore. Credentials, region and endpoint as object_store reads them from the
    environment: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL``, web identity (EKS IRSA), ECS task roles and the EC2 instance metadata — not the
    profiles of ``~/.aws/config``. Stores are thread-safe: one set per process."""

    def __init__(self, bucket: str, prefix: str, part_bytes: int = PART_BYTES) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_bytes = part_bytes
        # Retries with backoff ride out a restarting store's short hiccups before we call it unavailable;
        # 30 s at most, so a worker notices an outage and waits for the store instead (workers/roles.py).
        self.store = _s3(bucket, self.prefix, retries=3, retry_s=30, timeout="60s")
        # Streams to an API client (a whole COG to a slow link): the per-request timeout covers the body.
        self.streams = _s3(bucket, self.prefix, retries=3, retry_s=30, timeout="1h")
        # The API's admission probe asks "is it up right now?": one try, answered in seconds.
        self.probe = _s3(bucket, self.prefix, retries=0, retry_s=5, timeout="5s", connect="2s")

    def key(self, key: str) -> str:
        return self.prefix + key

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)``; a missing object is ``FileNotFoundError``, anything else the store's failure."""
        from obstore.exceptions import BaseError

        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:  # obstore's NotFoundError is one
            raise FileNotFoundError(self.ref(what)) from None
        except (BaseError, OSError) as exc:
            raise StorageUnavailable(f"{self.ref(what)}: {_first_line(exc)}") from None

    def check(self) -> None:
        import obstore

        # One listing of at most one key: needs only the ListBucket right the store needs anyway.
        self._call("", lambda: next(iter(obstore.list(self.probe, chunk_size=1)), None))

    def move_in(self, key: str, path: Path) -> None:
        import obstore

        # Multipart above part_bytes, read from the file part by part, two parts in flight.
        with open(path, "rb") as fh:
            self._call(key, obstore.put, self.store, key, fh, chunk_size=self.part_bytes, max_concurrency=2,
                       use_multipart=path.stat().st_size > self.part_bytes)
        path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        self._call(key, obstore.put, self.store, key, data, use_multipart=False)  # one PUT: atomic

    def get_bytes(self, key: str) -> bytes | None:
        import obstore

        try:
            return self._call(key, lambda: obstore.get(self.store, key).bytes().to_bytes())
        except FileNotFoundError:
            return None

    def names(self, prefix: str) -> list[str]:
        import obstore

        listed = self._call(prefix, lambda: [m["path"] for b in obstore.list(self.store, prefix) for m in b])
        return sorted(listed)

    def size(self, key: str) -> int | None:
        import obstore

        try:
            return int(self._call(key, obstore.head, self.store, key)["size"])
        except FileNotFoundError:
            return None

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        import obstore

        got = self._call(key, obstore.get, self.streams, key, options={"range": (start, end + 1)})
        chunks = iter(got.stream(min_chunk_size=STREAM_CHUNK))
        while True:
            chunk = self._call(key, next, chunks, None)
            if chunk is None:
                return
            yield bytes(chunk)

    def delete_prefix(self, prefix: str) -> None:
        import obstore

        keys = self.names(prefix)
        if keys:  # DeleteObjects, 1000 keys a request
            self._call(prefix, obstore.delete, self.store, keys)


def _s3(bucket: str, prefix: str, retries: int, retry_s: float, timeout: str, connect: str = "10s") -> Any:
    from obstore.store import S3Store as ObstoreS3

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    client = {"timeout": timeout, "connect_timeout": connect,
              # object_store refuses plain http unless told; an operator who set an http:// endpoint means it.
              "allow_http": endpoint.startswith("http://")}
    retry = {"max_retries": retries, "retry_timeout": timedelta(seconds=retry_s)}
    return ObstoreS3(bucket, prefix=prefix or None, client_options=client, retry_config=retry)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(storage_url: str | None, data_dir: Path) -> ObjectStore:
    """The store ``SPIKESCAN_STORAGE_URL`` names: unset → the data dir; a path → that directory;
    ``s3://bucket[/prefix]`` → the bucket. Anything else is refused at start-up."""
    if not storage_url:
        return LocalStore(data_dir)
    if storage_url.startswith("s3://"):
        bucket, _, prefix = storage_url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"SPIKESCAN_STORAGE_URL={storage_url!r}: expected s3://bucket[/prefix]")
        return S3Store(bucket, prefix)
    if "://" in storage_url:
        raise ValueError(f"SPIKESCAN_STORAGE_URL={storage_url!r}: expected a directory or s3://bucket/prefix")
    if not os.path.isabs(storage_url):
        raise ValueError(f"SPIKESCAN_STORAGE_URL={storage_url!r}: a directory must be an absolute path")
    return LocalStore(Path(storage_url))
