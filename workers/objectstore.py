"""Where a job's files live: one interface, a local directory (the default) or an S3 bucket.

``SPIKESCAN_STORAGE_URL`` selects it (``open_store``): unset or a path is a directory (the data dir by
default: today's layout, byte for byte), ``s3://bucket/prefix`` a bucket, reached with boto3 and the
standard ``AWS_*`` environment (``AWS_ENDPOINT_URL`` for S3-compatible stores). With a bucket, hosts share
only Redis and the bucket: nothing any role writes must be read from another role's disk.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Parts of a multipart upload: large enough that a 2 GB scene is ~128 parts, small enough that the two
# parts in flight per upload hold 32 MB at most.
PART_BYTES = 16 << 20
STREAM_CHUNK = 256 << 10


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
        directory = self.path(prefix)
        if not directory.is_dir():
            return []
        base = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        files = (p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        return sorted(base + p.name for p in files)

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
    """A bucket through boto3 (credentials, region and ``AWS_ENDPOINT_URL`` from the environment, as every
    AWS SDK reads them). One client per process: boto3 clients are thread-safe."""

    def __init__(self, bucket: str, prefix: str, part_bytes: int = PART_BYTES) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Standard retries ride out a restarting store's short hiccups before we call it unavailable.
        config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        self.client: Any = boto3.client("s3", config=config)
        # The API's admission probe asks "is it up right now?": one try, answered in seconds, not the
        # retries and timeouts that ride out a hiccup during real work.
        quick = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=5)
        self.probe: Any = boto3.client("s3", config=quick)
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes, max_concurrency=2
        )

    def key(self, key: str) -> str:
        return self.prefix + key

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def _call(self, name: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, name)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(kwargs.get("Key", "")) from None
            raise StorageUnavailable(f"{self.ref('')}: {code or exc}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{self.ref('')}: {exc}") from None

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.probe.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"{self.ref('')}: {exc}") from None

    def move_in(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # multipart above PART_BYTES, read from the file part by part
            self.client.upload_file(str(path), self.bucket, self.key(key), Config=self.transfer)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"{self.ref(key)}: upload failed ({exc})") from None
        path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self.key(key), Body=data)  # one PUT: atomic for readers

    def get_bytes(self, key: str) -> bytes | None:
        try:
            body = self._call("get_object", Key=self.key(key))["Body"]
        except FileNotFoundError:
            return None
        try:
            return bytes(body.read())
        finally:
            body.close()

    def names(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=self.key(prefix), **token)
            found += [obj["Key"][len(self.prefix):] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def size(self, key: str) -> int | None:
        try:
            return int(self._call("head_object", Key=self.key(key))["ContentLength"])
        except FileNotFoundError:
            return None

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        body = self._call("get_object", Key=self.key(key), Range=f"bytes={start}-{end}")["Body"]
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()

    def delete_prefix(self, prefix: str) -> None:
        keys = [self.key(k) for k in self.names(prefix)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys a request
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})


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
